package streams

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Kinesis's limits.
const (
	// MaxRecordSize is the most data a record holds.
	MaxRecordSize = 1 << 20
	// MaxPutRecordsSize is the most data and partition keys a PutRecords
	// request holds.
	MaxPutRecordsSize = 5 << 20
	// MaxPutRecords is the most records a PutRecords request holds.
	MaxPutRecords = 500
	// MaxGetRecords is the most records a read returns.
	MaxGetRecords = 10000
	// maxReadBytes bounds a read's data: JetStream stops after the record
	// that passes it, so a read stays within Kinesis's 10 MiB.
	maxReadBytes = 9 << 20
	// maxPartitionKey is the longest partition key, in characters.
	maxPartitionKey = 256
)

// PutEntry is a record to put.
type PutEntry struct {
	PartitionKey string
	// ExplicitHashKey, a decimal below 2^128, chooses the shard instead of
	// the partition key's hash.
	ExplicitHashKey string
	Data            []byte
}

// PutResult is what became of a PutEntry: its shard and sequence number,
// or an ErrorCode (InternalFailure or
// ProvisionedThroughputExceededException, both worth retrying).
type PutResult struct {
	ShardID, SequenceNumber string
	ErrorCode, ErrorMessage string
}

// checkEntries validates a put of entries as Kinesis does, all before any
// is written.
func checkEntries(entries []PutEntry) error {
	if len(entries) == 0 || len(entries) > MaxPutRecords {
		return invalidValue(len(entries), "records", fmt.Sprintf("have length less than or equal to %d and greater than or equal to 1", MaxPutRecords))
	}
	total := 0
	for i, e := range entries {
		member := func(m string) string {
			if len(entries) == 1 {
				return m
			}
			return "records." + strconv.Itoa(i+1) + ".member." + m
		}
		if e.Data == nil {
			return errorf(ErrValidation, "1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", member("data"))
		}
		if len(e.Data) > MaxRecordSize {
			return invalidValue("java.nio.HeapByteBuffer[pos=0 lim="+strconv.Itoa(len(e.Data))+"]", member("data"),
				"have length less than or equal to "+strconv.Itoa(MaxRecordSize))
		}
		if n := utf8.RuneCountInString(e.PartitionKey); n < 1 || n > maxPartitionKey {
			return invalidValue(e.PartitionKey, member("partitionKey"), "have length less than or equal to 256 and greater than or equal to 1")
		}
		if e.ExplicitHashKey != "" {
			if _, ok := parseHashKey(e.ExplicitHashKey); !ok {
				return errorf(ErrInvalidArgument, "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was %s", e.ExplicitHashKey)
			}
		}
		total += len(e.Data) + len(e.PartitionKey)
	}
	if total > MaxPutRecordsSize {
		return errorf(ErrInvalidArgument, "Records size exceeds 5 MB limit")
	}
	return nil
}

// shardFor is the shard of n an entry goes to.
func (e PutEntry) shardFor(n int) int {
	if h, ok := parseHashKey(e.ExplicitHashKey); ok {
		return shardOf(h, n)
	}
	return shardOf(HashKey(e.PartitionKey), n)
}

// A record is stored as its partition key (length first) and its data.
func encodeRecord(e PutEntry) []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(e.PartitionKey)+len(e.Data))
	b = binary.AppendUvarint(b, uint64(len(e.PartitionKey)))
	b = append(b, e.PartitionKey...)
	return append(b, e.Data...)
}

func decodeRecord(b []byte) (key string, data []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, false
	}
	return string(b[w : w+int(n)]), b[w+int(n):], true
}

// Put writes entries to account's stream name, as PutRecords: every entry
// gets a result, in order; the error is for the request as a whole.
func (s *Service) Put(ctx context.Context, account, name string, entries []PutEntry) ([]PutResult, error) {
	if err := checkEntries(entries); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		m, err := s.active(ctx, account, name)
		if err != nil {
			return nil, err
		}
		out, gone := s.put(ctx, m, entries)
		if !gone {
			return out, nil
		}
		// The stream was deleted through another process a moment ago
		// (the watch has not told this one yet), and maybe created again.
		s.open.Forget(key(account, name), m.rev+1)
		if attempt > 0 {
			return nil, notFound(account, name)
		}
	}
}

// put publishes entries to m's shards; gone reports that no entry found
// m's JetStream stream.
func (s *Service) put(ctx context.Context, m *meta, entries []PutEntry) (out []PutResult, gone bool) {
	shards := make([]int, len(entries))
	futures := make([]jetstream.PubAckFuture, len(entries))
	errs := make([]error, len(entries))
	for i, e := range entries {
		shards[i] = e.shardFor(m.Shards)
		msg := &nats.Msg{Subject: m.subject(shards[i]), Data: encodeRecord(e)}
		// In order on one connection, so records of one shard keep the
		// request's order.
		futures[i], errs[i] = s.js.PublishMsgAsync(msg, jetstream.WithExpectStream(m.jsName()))
	}
	out = make([]PutResult, len(entries))
	missing, failures := 0, 0
	var first error
	for i, f := range futures {
		if errs[i] == nil {
			select {
			case ack := <-f.Ok():
				out[i] = PutResult{ShardID: ShardID(shards[i]), SequenceNumber: seqNumber(shards[i], ack.Sequence)}
				s.records.WithLabelValues("put").Inc()
				s.bytes.WithLabelValues("put").Add(float64(len(entries[i].Data)))
				continue
			case errs[i] = <-f.Err():
			case <-ctx.Done():
				errs[i] = ctx.Err()
			}
		}
		if errors.Is(errs[i], jetstream.ErrNoStreamResponse) || errors.Is(errs[i], nats.ErrNoResponders) {
			missing++
		}
		out[i] = failed(errs[i])
		s.failures.WithLabelValues(out[i].ErrorCode).Inc()
		if failures++; first == nil {
			first = errs[i]
		}
	}
	if failures > 0 {
		s.log.Warn("streams: put", "stream", m.Name, "failed", failures, "of", len(entries), "err", first)
	}
	return out, missing == len(entries)
}

// failed is a put's result for a record JetStream did not take: a
// throttle when it was too busy to (full, or too many writes pending),
// else an internal failure. Both are worth retrying.
func failed(err error) PutResult {
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrTooManyStalledMsgs) || errors.As(err, &apiErr) && apiErr.Code == 503 {
		return PutResult{ErrorCode: ErrThroughput.Code, ErrorMessage: "Rate exceeded for the shard: Kiln's store is too busy; retry."}
	}
	return PutResult{ErrorCode: errInternal.Code, ErrorMessage: "Internal service failure."}
}

// Position is where a read starts in a shard, as GetShardIterator's
// ShardIteratorType and its arguments name it.
type Position struct {
	Type           string // one of the iterator types below
	SequenceNumber string // AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER
	Timestamp      time.Time
}

// Iterator types.
const (
	TrimHorizon         = "TRIM_HORIZON"
	Latest              = "LATEST"
	AtSequenceNumber    = "AT_SEQUENCE_NUMBER"
	AfterSequenceNumber = "AFTER_SEQUENCE_NUMBER"
	AtTimestamp         = "AT_TIMESTAMP"
)

// Record is a record read.
type Record struct {
	SequenceNumber              string
	PartitionKey                string
	Data                        []byte
	ApproximateArrivalTimestamp time.Time
}

// Batch is what a read returns.
type Batch struct {
	Records []Record
	// Next is where the next read starts: after the last record returned,
	// else where this one started (LATEST resolved to a sequence number).
	Next Position
	// MillisBehindLatest is how far the last record returned is behind
	// the shard's newest (0: none newer).
	MillisBehindLatest int64
}

// Read reads up to limit records (0: MaxGetRecords) of account's stream
// name's shard shardID from position from on. It returns at once, with no
// records when there are none.
func (s *Service) Read(ctx context.Context, account, name, shardID string, from Position, limit int) (*Batch, error) {
	m, err := s.active(ctx, account, name)
	if err != nil {
		return nil, err
	}
	shard, err := m.shard(shardID)
	if err != nil {
		return nil, err
	}
	c, err := s.resolve(ctx, m, shard, from)
	if err != nil {
		return nil, err
	}
	recs, next, behind, err := s.read(ctx, m, shard, c, limit)
	if err != nil {
		return nil, err
	}
	return &Batch{Records: recs, Next: next.position(shard), MillisBehindLatest: behind}, nil
}

func (m *meta) shard(id string) (int, error) {
	i, ok := parseShardID(id, m.Shards)
	if !ok {
		return 0, errorf(ErrNotFound, "Shard %s in stream %s under account %s does not exist", id, m.Name, m.Account)
	}
	return i, nil
}

// position is the Position c is.
func (c cursor) position(shard int) Position {
	if !c.At.IsZero() {
		return Position{Type: AtTimestamp, Timestamp: c.At}
	}
	return Position{Type: AtSequenceNumber, SequenceNumber: seqNumber(shard, c.Seq)}
}

// lastSeq is the stream's newest JetStream sequence, from its leader.
func (s *Service) lastSeq(ctx context.Context, m *meta) (uint64, error) {
	st, err := s.js.Stream(ctx, m.jsName())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, notFound(m.Account, m.Name)
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", m.Name, err)
	}
	return st.CachedInfo().State.LastSeq, nil
}

// leaderBehind is MillisBehindLatest for a read that its replica said was
// caught up at next: the age of the shard's last record when the stream's
// leader holds it and next is not past it (at least 1), else 0. Any replica
// answers a read, and one a moment behind would have a reader stop short
// of records acknowledged already (a put then a read through another
// frontend).
func (s *Service) leaderBehind(ctx context.Context, m *meta, shard int, next cursor) (int64, error) {
	seq, at, err := natsd.LeaderLast(ctx, s.nc, m.jsName(), m.subject(shard))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("stream %s: last record: %w", m.Name, err)
	case next.At.IsZero() && seq < next.Seq, !next.At.IsZero() && at.Before(next.At):
		return 0, nil
	}
	return max(time.Since(at).Milliseconds(), 1), nil
}

// resolve turns a Position into a cursor in shard of m.
func (s *Service) resolve(ctx context.Context, m *meta, shard int, p Position) (cursor, error) {
	switch p.Type {
	case TrimHorizon:
		return cursor{}, nil
	case Latest:
		last, err := s.lastSeq(ctx, m)
		return cursor{Seq: last + 1}, err
	case AtTimestamp:
		if p.Timestamp.IsZero() {
			return cursor{}, errorf(ErrInvalidArgument, "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. Current request has no timestamp parameter.")
		}
		return cursor{At: p.Timestamp}, nil
	case AtSequenceNumber, AfterSequenceNumber:
		if p.SequenceNumber == "" {
			return cursor{}, errorf(ErrInvalidArgument, "Must specify StartingSequenceNumber for iterator of type %s.", p.Type)
		}
		bad := errorf(ErrInvalidArgument, "StartingSequenceNumber %s used in GetShardIterator on shard %s in stream %s under account %s is invalid because it did not come from this stream.",
			p.SequenceNumber, ShardID(shard), m.Name, m.Account)
		i, seq, ok := parseSeqNumber(p.SequenceNumber)
		if !ok || i != shard {
			return cursor{}, bad
		}
		last, err := s.lastSeq(ctx, m)
		if err != nil {
			return cursor{}, err
		}
		if seq > last+1 { // a number not issued yet
			return cursor{}, bad
		}
		if p.Type == AfterSequenceNumber {
			seq++
		}
		return cursor{Seq: seq}, nil
	}
	return cursor{}, invalidValue(p.Type, "shardIteratorType", "satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]")
}

// directGet is a batched direct get of JetStream's API.
type directGet struct {
	Seq       uint64     `json:"seq,omitempty"`
	NextFor   string     `json:"next_by_subj"`
	Batch     int        `json:"batch"`
	MaxBytes  int        `json:"max_bytes"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

// read reads up to limit records of shard from c on: the records, the
// cursor after them and how far behind the shard's newest they are.
func (s *Service) read(ctx context.Context, m *meta, shard int, c cursor, limit int) ([]Record, cursor, int64, error) {
	if limit == 0 {
		limit = MaxGetRecords
	}
	if limit < 1 || limit > MaxGetRecords {
		return nil, c, 0, invalidValue(limit, "limit", "have value less than or equal to 10000 and greater than or equal to 1")
	}
	req := directGet{Seq: c.Seq, NextFor: m.subject(shard), Batch: limit, MaxBytes: maxReadBytes}
	if !c.At.IsZero() {
		at := c.At.UTC()
		req.StartTime, req.Seq = &at, 0
	}
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sub, err := s.nc.SubscribeSync(s.nc.NewInbox())
	if err != nil {
		return nil, c, 0, err
	}
	defer sub.Unsubscribe()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+m.jsName(), sub.Subject, body); err != nil {
		return nil, c, 0, err
	}
	var recs []Record
	var pending uint64
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, c, 0, fmt.Errorf("stream %s: read: %w", m.Name, err)
		}
		status := msg.Header.Get("Status")
		if status == "" {
			seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
			ts, terr := time.Parse(time.RFC3339Nano, msg.Header.Get(jetstream.TimeStampHeaer))
			k, data, ok := decodeRecord(msg.Data)
			if err != nil || terr != nil || !ok || msg.Header.Get(jetstream.SubjectHeader) != m.subject(shard) {
				return nil, c, 0, fmt.Errorf("stream %s: read: malformed record %q", m.Name, msg.Header)
			}
			recs = append(recs, Record{SequenceNumber: seqNumber(shard, seq), PartitionKey: k, Data: data, ApproximateArrivalTimestamp: ts})
			s.records.WithLabelValues("read").Inc()
			s.bytes.WithLabelValues("read").Add(float64(len(data)))
			c = cursor{Seq: seq + 1}
			continue
		}
		switch status {
		case "204": // end of the batch: how many records of the shard follow
			pending, _ = strconv.ParseUint(msg.Header.Get("Nats-Num-Pending"), 10, 64)
		case "404": // none (more)
		case "503": // no responders: the stream is gone
			if _, err := s.lastSeq(ctx, m); err != nil {
				return nil, c, 0, err
			}
			return nil, c, 0, fmt.Errorf("stream %s: read: no replica answered", m.Name)
		default:
			return nil, c, 0, fmt.Errorf("stream %s: read: status %s %s", m.Name, status, msg.Header.Get("Description"))
		}
		break
	}
	var behind int64
	if pending > 0 && len(recs) > 0 {
		behind = max(time.Since(recs[len(recs)-1].ApproximateArrivalTimestamp).Milliseconds(), 0)
	}
	return recs, c, behind, nil
}
