package streams

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
)

// TargetPrefix starts the X-Amz-Target of Kinesis's requests.
const TargetPrefix = "Kinesis_20131202."

// SigningService is the SigV4 service name Kinesis clients sign with.
const SigningService = "kinesis"

// Handler serves Kinesis's API: AWS JSON 1.1, the protocol of the CLI,
// boto3 and aws-sdk-go-v2. (The Java SDK's CBOR is refused with a
// message saying how to turn it off.) It must sit behind auth.Middleware.
func (s *Service) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// call is one API request.
type call struct {
	ctx     context.Context
	account string
	input   []byte
}

func (s *Service) serve(w http.ResponseWriter, r *http.Request) {
	caller, _ := auth.FromContext(r.Context())
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), TargetPrefix)
	if ct := r.Header.Get("Content-Type"); strings.Contains(ct, "cbor") {
		writeError(w, errorf(errSerialization, "Content-Type %s: Kiln speaks Kinesis's AWS JSON 1.1 only; turn CBOR off in the client (the Java SDK: AWS_CBOR_DISABLE=true or -Dcom.amazonaws.sdk.disableCbor)", ct))
		return
	}
	h, ok := operations[op]
	if !ok {
		writeError(w, errorf(errUnknownOperation, "An unknown operation %s was requested.", op))
		return
	}
	if caller.Service != SigningService {
		writeError(w, errorf(errAccessDenied, "Credential should be scoped to correct service: '%s'.", SigningService))
		return
	}
	c := &call{ctx: r.Context(), account: caller.Account, input: auth.Body(r)}
	if len(c.input) == 0 {
		c.input = []byte("{}")
	}
	out, err := h(s, c)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			s.log.Warn("streams: "+op, "err", err)
			e = errorf(errInternal, "Internal service failure.")
		}
		writeError(w, e)
		return
	}
	if out == nil {
		out = struct{}{}
	}
	b, err := json.Marshal(out)
	if err != nil {
		writeError(w, errorf(errInternal, "encoding the response"))
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-RequestId", api.NewUUID())
	w.Write(b)
}

func writeError(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("x-amzn-RequestId", api.NewUUID())
	w.Header().Set("x-amzn-ErrorType", e.Code)
	b, _ := json.Marshal(map[string]string{"__type": e.Code, "message": e.Message})
	w.WriteHeader(e.Status)
	w.Write(b)
}

// operations are Kinesis's operations, by name.
var operations = map[string]func(*Service, *call) (any, error){
	"CreateStream":                  (*Service).createStream,
	"DeleteStream":                  (*Service).deleteStream,
	"DescribeStream":                (*Service).describeStream,
	"DescribeStreamSummary":         (*Service).describeStreamSummary,
	"ListStreams":                   (*Service).listStreams,
	"ListShards":                    (*Service).listShards,
	"PutRecord":                     (*Service).putRecord,
	"PutRecords":                    (*Service).putRecords,
	"GetShardIterator":              (*Service).getShardIterator,
	"GetRecords":                    (*Service).getRecords,
	"IncreaseStreamRetentionPeriod": func(s *Service, c *call) (any, error) { return s.setRetention(c, true) },
	"DecreaseStreamRetentionPeriod": func(s *Service, c *call) (any, error) { return s.setRetention(c, false) },
}

// decode reads the call's input into v.
func (c *call) decode(v any) error {
	if err := json.Unmarshal(c.input, v); err != nil {
		return errorf(errSerialization, "The request could not be read: %v", err)
	}
	return nil
}

// epoch is a timestamp as AWS JSON carries it: seconds since the epoch.
type epoch struct{ time.Time }

func (t epoch) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(t.UnixMilli())/1000, 'f', -1, 64), nil
}

// UnmarshalJSON takes seconds (a number, or a string of one) or RFC 3339.
func (t *epoch) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) && math.Abs(f) < 1e11 {
		sec, frac := math.Modf(f)
		t.Time = time.Unix(int64(sec), int64(frac*1e9)).UTC()
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	t.Time = v
	return err
}

// streamRef names the stream of an operation: by name, ARN or both.
type streamRef struct {
	StreamName, StreamARN, StreamId string
	DryRun                          bool
}

func (r *streamRef) ref() *streamRef { return r }

// name returns the name of the caller's stream r names.
func (c *call) name(s *Service, r *streamRef) (string, error) {
	if r.DryRun {
		return "", errorf(ErrInvalidArgument, "DryRun is not supported.")
	}
	name := r.StreamName
	if r.StreamARN != "" {
		region, account, arnName, err := ParseARN(r.StreamARN)
		if err != nil {
			return "", errorf(ErrInvalidArgument, "%v", err)
		}
		if name != "" && name != arnName {
			return "", errorf(ErrInvalidArgument, "StreamName %s and StreamARN %s name different streams.", name, r.StreamARN)
		}
		if region != s.cfg.Region || account != c.account {
			return "", errorf(ErrNotFound, "Stream %s not found.", r.StreamARN)
		}
		name = arnName
	}
	if name == "" {
		return "", errorf(ErrInvalidArgument, "Either StreamName or StreamARN should be provided.")
	}
	if err := checkName(name); err != nil {
		return "", err
	}
	return name, nil
}

// checkID refuses a StreamId that is not the stream's.
func checkID(r *streamRef, m *meta) error {
	if r.StreamId != "" && r.StreamId != m.ID {
		return errorf(ErrNotFound, "Stream %s with id %s under account %s not found.", m.Name, r.StreamId, m.Account)
	}
	return nil
}

// streamOf decodes the call's input into in and opens the stream it
// names, whatever its status.
func (s *Service) streamOf(c *call, in interface{ ref() *streamRef }) (*meta, error) {
	if err := c.decode(in); err != nil {
		return nil, err
	}
	return s.named(c, in.ref())
}

// named opens the stream r names.
func (s *Service) named(c *call, r *streamRef) (*meta, error) {
	name, err := c.name(s, r)
	if err != nil {
		return nil, err
	}
	m, err := s.stream(c.ctx, c.account, name)
	if err != nil {
		return nil, err
	}
	return m, checkID(r, m)
}

func (s *Service) createStream(c *call) (any, error) {
	var in struct {
		StreamName        string
		ShardCount        *int
		StreamModeDetails *struct{ StreamMode string }
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	mode := ModeProvisioned
	if in.StreamModeDetails != nil {
		mode = in.StreamModeDetails.StreamMode
	} else if in.ShardCount == nil {
		mode = ModeOnDemand
	}
	shards := onDemandShards
	switch {
	case mode != ModeProvisioned && mode != ModeOnDemand:
		return nil, invalidValue(mode, "streamModeDetails.streamMode", "satisfy enum value set: [PROVISIONED, ON_DEMAND]")
	case mode == ModeOnDemand && in.ShardCount != nil:
		return nil, errorf(ErrInvalidArgument, "ShardCount is not allowed for streams in ON_DEMAND mode.")
	case mode == ModeProvisioned && in.ShardCount == nil:
		return nil, errorf(ErrInvalidArgument, "ShardCount is required for streams in PROVISIONED mode.")
	case mode == ModeProvisioned:
		shards = *in.ShardCount
	}
	return nil, s.create(c.ctx, c.account, in.StreamName, shards, mode)
}

func (s *Service) setRetention(c *call, increase bool) (any, error) {
	var in struct {
		streamRef
		RetentionPeriodHours *int
	}
	m, err := s.streamOf(c, &in)
	if err != nil {
		return nil, err
	}
	if in.RetentionPeriodHours == nil {
		return nil, errorf(ErrValidation, "1 validation error detected: Value null at 'retentionPeriodHours' failed to satisfy constraint: Member must not be null")
	}
	hours := min(max(*in.RetentionPeriodHours, 0), 1<<20) // out of range either way, without overflowing
	return nil, s.SetRetention(c.ctx, c.account, m.Name, time.Duration(hours)*time.Hour, increase)
}

func (s *Service) deleteStream(c *call) (any, error) {
	var in streamRef // EnforceConsumerDeletion: there are no consumers to enforce it on
	m, err := s.streamOf(c, &in)
	if err != nil {
		return nil, err
	}
	return nil, s.Delete(c.ctx, c.account, m.Name)
}

// summary is a stream's description as the API shows it.
type summary struct {
	StreamName, StreamARN, StreamId, StreamStatus string
	StreamModeDetails                             struct{ StreamMode string }
	RetentionPeriodHours                          int
	StreamCreationTimestamp                       epoch
	EnhancedMonitoring                            []struct{ ShardLevelMetrics []string }
	EncryptionType                                string
	OpenShardCount                                *int `json:",omitempty"`
	ConsumerCount                                 *int `json:",omitempty"`
}

func (s *Service) summary(m *meta) summary {
	out := summary{StreamName: m.Name, StreamARN: ARN(s.cfg.Region, m.Account, m.Name), StreamId: m.ID,
		StreamStatus: m.Status, RetentionPeriodHours: int(m.Retention / time.Hour),
		StreamCreationTimestamp: epoch{m.Created}, EncryptionType: "NONE",
		EnhancedMonitoring: []struct{ ShardLevelMetrics []string }{{ShardLevelMetrics: []string{}}}}
	out.StreamModeDetails.StreamMode = m.Mode
	return out
}

func (s *Service) describeStreamSummary(c *call) (any, error) {
	var in streamRef
	m, err := s.streamOf(c, &in)
	if err != nil {
		return nil, err
	}
	sum := s.summary(m)
	open, consumers := m.Shards, 0
	sum.OpenShardCount, sum.ConsumerCount = &open, &consumers
	return map[string]any{"StreamDescriptionSummary": sum}, nil
}

// apiShard is a shard as the API shows it.
type apiShard struct {
	ShardId      string
	HashKeyRange struct {
		StartingHashKey, EndingHashKey string
	}
	SequenceNumberRange struct {
		StartingSequenceNumber string
	}
}

func apiShards(shards []Shard) []apiShard {
	out := make([]apiShard, len(shards))
	for i, sh := range shards {
		out[i].ShardId = sh.ID
		out[i].HashKeyRange.StartingHashKey, out[i].HashKeyRange.EndingHashKey = sh.StartingHashKey, sh.EndingHashKey
		out[i].SequenceNumberRange.StartingSequenceNumber = sh.StartingSequenceNumber
	}
	return out
}

// shardPage returns up to limit shards from the one after the shard
// named after (from the first when after is empty), and whether more
// follow.
func shardPage(shards []Shard, after string, limit int) ([]Shard, bool) {
	i := 0
	if after != "" {
		i = sort.Search(len(shards), func(i int) bool { return shards[i].ID > after })
	}
	rest := shards[i:]
	if len(rest) > limit {
		return rest[:limit], true
	}
	return rest, false
}

func checkLimit(v *int, member string, def int) (int, error) {
	if v == nil {
		return def, nil
	}
	if *v < 1 || *v > 10000 {
		return 0, invalidValue(*v, member, "have value less than or equal to 10000 and greater than or equal to 1")
	}
	return *v, nil
}

func (s *Service) describeStream(c *call) (any, error) {
	var in struct {
		streamRef
		Limit                 *int
		ExclusiveStartShardId string
	}
	m, err := s.streamOf(c, &in)
	if err != nil {
		return nil, err
	}
	limit, err := checkLimit(in.Limit, "limit", 100)
	if err != nil {
		return nil, err
	}
	page, more := shardPage(m.shards(), in.ExclusiveStartShardId, limit)
	return map[string]any{"StreamDescription": struct {
		summary
		Shards        []apiShard
		HasMoreShards bool
	}{s.summary(m), apiShards(page), more}}, nil
}

func (s *Service) listStreams(c *call) (any, error) {
	var in struct {
		Limit                    *int
		ExclusiveStartStreamName string
		NextToken                string
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	limit, err := checkLimit(in.Limit, "limit", 100)
	if err != nil {
		return nil, err
	}
	after := in.ExclusiveStartStreamName
	if in.NextToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(in.NextToken)
		if err != nil || !nameRe.Match(b) {
			return nil, errorf(ErrInvalidArgument, "Invalid NextToken.")
		}
		after = string(b)
	}
	all, err := s.List(c.ctx, c.account)
	if err != nil {
		return nil, err
	}
	i := sort.Search(len(all), func(i int) bool { return all[i].Name > after })
	page := all[i:]
	more := len(page) > limit
	if more {
		page = page[:limit]
	}
	names, sums := []string{}, []any{}
	for _, d := range page {
		names = append(names, d.Name)
		sums = append(sums, map[string]any{"StreamName": d.Name, "StreamARN": d.ARN, "StreamStatus": d.Status,
			"StreamModeDetails": map[string]string{"StreamMode": d.Mode}, "StreamCreationTimestamp": epoch{d.Created}})
	}
	out := map[string]any{"StreamNames": names, "HasMoreStreams": more, "StreamSummaries": sums}
	if more {
		out["NextToken"] = base64.RawURLEncoding.EncodeToString([]byte(names[len(names)-1]))
	}
	return out, nil
}

func (s *Service) listShards(c *call) (any, error) {
	var in struct {
		streamRef
		NextToken               string
		ExclusiveStartShardId   string
		MaxResults              *int
		StreamCreationTimestamp *epoch
		ShardFilter             *struct {
			Type, ShardId string
			Timestamp     *epoch
		}
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	after := in.ExclusiveStartShardId
	if in.NextToken != "" {
		// The token names the stream and the last shard listed. Kinesis
		// refuses a StreamName beside it; botocore's paginator sends both,
		// so the same name is taken.
		b, err := base64.RawURLEncoding.DecodeString(in.NextToken)
		name, last, ok := strings.Cut(string(b), "/")
		if err != nil || !ok {
			return nil, errorf(ErrInvalidArgument, "Invalid NextToken.")
		}
		if in.StreamName != "" && in.StreamName != name {
			return nil, errorf(ErrInvalidArgument, "NextToken is of stream %s, not %s.", name, in.StreamName)
		}
		in.StreamName, after = name, last
	}
	m, err := s.named(c, &in.streamRef)
	if err != nil {
		return nil, err
	}
	if err := m.isActive(); err != nil {
		return nil, err
	}
	limit, err := checkLimit(in.MaxResults, "maxResults", 1000)
	if err != nil {
		return nil, err
	}
	if f := in.ShardFilter; f != nil {
		switch f.Type {
		case "AFTER_SHARD_ID":
			if f.ShardId == "" {
				return nil, errorf(ErrInvalidArgument, "ShardId is required for a ShardFilter of type AFTER_SHARD_ID.")
			}
			after = max(after, f.ShardId)
		case "AT_TRIM_HORIZON", "FROM_TRIM_HORIZON", "AT_LATEST", "AT_TIMESTAMP", "FROM_TIMESTAMP":
			// Every shard is open since the stream was created.
		default:
			return nil, invalidValue(f.Type, "shardFilter.type", "satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]")
		}
	}
	page, more := shardPage(m.shards(), after, limit)
	out := map[string]any{"Shards": apiShards(page)}
	if more {
		out["NextToken"] = base64.RawURLEncoding.EncodeToString([]byte(m.Name + "/" + page[len(page)-1].ID))
	}
	return out, nil
}

// apiEntry is a record to put as the API carries it.
type apiEntry struct {
	Data                          []byte
	PartitionKey, ExplicitHashKey string
}

func (e apiEntry) entry() PutEntry {
	return PutEntry{PartitionKey: e.PartitionKey, ExplicitHashKey: e.ExplicitHashKey, Data: e.Data}
}

func (s *Service) putRecord(c *call) (any, error) {
	var in struct {
		streamRef
		apiEntry
		SequenceNumberForOrdering string
	}
	m, err := s.streamOf(c, &in)
	if err != nil {
		return nil, err
	}
	if in.SequenceNumberForOrdering != "" && !seqNumberRe.MatchString(in.SequenceNumberForOrdering) {
		// Sequence numbers increase in a shard anyway; only checked.
		return nil, invalidValue(in.SequenceNumberForOrdering, "sequenceNumberForOrdering", "satisfy regular expression pattern: 0|([1-9]\\d{0,128})")
	}
	res, err := s.Put(c.ctx, c.account, m.Name, []PutEntry{in.entry()})
	if err != nil {
		return nil, err
	}
	if r := res[0]; r.ErrorCode != "" {
		kind := errInternal
		if r.ErrorCode == ErrThroughput.Code {
			kind = ErrThroughput
		}
		return nil, errorf(kind, "%s", r.ErrorMessage)
	}
	return map[string]string{"ShardId": res[0].ShardID, "SequenceNumber": res[0].SequenceNumber, "EncryptionType": "NONE"}, nil
}

func (s *Service) putRecords(c *call) (any, error) {
	var in struct {
		streamRef
		Records []apiEntry
	}
	m, err := s.streamOf(c, &in)
	if err != nil {
		return nil, err
	}
	entries := make([]PutEntry, len(in.Records))
	for i, r := range in.Records {
		entries[i] = r.entry()
	}
	res, err := s.Put(c.ctx, c.account, m.Name, entries)
	if err != nil {
		return nil, err
	}
	type result struct {
		SequenceNumber, ShardId, ErrorCode, ErrorMessage string `json:",omitempty"`
	}
	out := make([]result, len(res))
	failed := 0
	for i, r := range res {
		out[i] = result{r.SequenceNumber, r.ShardID, r.ErrorCode, r.ErrorMessage}
		if r.ErrorCode != "" {
			failed++
		}
	}
	return map[string]any{"FailedRecordCount": failed, "Records": out, "EncryptionType": "NONE"}, nil
}

func (s *Service) getShardIterator(c *call) (any, error) {
	var in struct {
		streamRef
		ShardId, ShardIteratorType, StartingSequenceNumber string
		Timestamp                                          *epoch
	}
	m, err := s.streamOf(c, &in)
	if err != nil {
		return nil, err
	}
	if err := m.isActive(); err != nil {
		return nil, err
	}
	shard, err := m.shard(in.ShardId)
	if err != nil {
		return nil, err
	}
	p := Position{Type: in.ShardIteratorType, SequenceNumber: in.StartingSequenceNumber}
	if in.Timestamp != nil {
		p.Timestamp = in.Timestamp.Time
	}
	cur, err := s.resolve(c.ctx, m, shard, p)
	if err != nil {
		return nil, err
	}
	it := iterator{Account: c.account, Name: m.Name, StreamID: m.ID, Shard: shard, cursor: cur, Issued: time.Now()}
	return map[string]string{"ShardIterator": it.encode(s.secret)}, nil
}

// checkAge refuses an iterator older than IteratorTTL at now.
func checkAge(it iterator, now time.Time) error {
	if now.Sub(it.Issued) > IteratorTTL {
		return errorf(ErrExpiredIterator, "Iterator expired. The iterator was created at time %s while right now it is %s which is further in the future than the tolerated delay of %d milliseconds.",
			it.Issued.UTC().Format(time.RFC1123), now.UTC().Format(time.RFC1123), IteratorTTL.Milliseconds())
	}
	return nil
}

func (s *Service) getRecords(c *call) (any, error) {
	var in struct {
		ShardIterator, StreamARN string
		Limit                    *int
	}
	if err := c.decode(&in); err != nil {
		return nil, err
	}
	if in.ShardIterator == "" {
		return nil, errorf(ErrValidation, "1 validation error detected: Value null at 'shardIterator' failed to satisfy constraint: Member must not be null")
	}
	if len(in.ShardIterator) > maxIterator {
		return nil, invalidValue("…", "shardIterator", "have length less than or equal to 512")
	}
	limit, err := checkLimit(in.Limit, "limit", MaxGetRecords)
	if err != nil {
		return nil, err
	}
	it, err := decodeIterator(s.secret, in.ShardIterator)
	if err != nil || it.Account != c.account {
		return nil, errorf(ErrInvalidArgument, "Invalid ShardIterator.")
	}
	if in.StreamARN != "" && in.StreamARN != ARN(s.cfg.Region, it.Account, it.Name) {
		return nil, errorf(ErrInvalidArgument, "The ShardIterator is not of stream %s.", in.StreamARN)
	}
	if err := checkAge(it, time.Now()); err != nil {
		return nil, err
	}
	m, err := s.active(c.ctx, it.Account, it.Name)
	if err != nil {
		return nil, err
	}
	if m.ID != it.StreamID || it.Shard >= m.Shards { // deleted and created again
		return nil, notFound(it.Account, it.Name)
	}
	recs, next, behind, err := s.read(c.ctx, m, it.Shard, it.cursor, limit)
	if err == nil && behind == 0 && s.cfg.Replicas > 1 {
		behind, err = s.leaderBehind(c.ctx, m, it.Shard, next)
	}
	if err != nil {
		return nil, err
	}
	type record struct {
		SequenceNumber              string
		ApproximateArrivalTimestamp epoch
		Data                        []byte
		PartitionKey                string
	}
	out := make([]record, len(recs))
	for i, r := range recs {
		out[i] = record{r.SequenceNumber, epoch{r.ApproximateArrivalTimestamp}, r.Data, r.PartitionKey}
	}
	it.cursor, it.Issued = next, time.Now()
	return map[string]any{"Records": out, "NextShardIterator": it.encode(s.secret), "MillisBehindLatest": behind}, nil
}
