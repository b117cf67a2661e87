// Package logs keeps execution environments' logs in NATS JetStream and
// serves them through the CloudWatch Logs API (JSON 1.1), so that
// `aws logs tail`, `aws logs filter-log-events` and the SDKs read them.
//
// Storage: one stream (KILN_LOGS) with subjects
// logs.<account>.<group>.<stream> (tokens escaped, see escape), each message a
// batch of one log stream's events in order; and a KV bucket indexing groups
// and streams (creation time, first and last event timestamps, last
// ingestion time, stored bytes). Every process keeps the index in memory,
// loaded at Open and kept current by watching the bucket.
//
// Writes: Append (the worker's logline.Sink), called on the invoke path, only queues. One
// goroutine takes what is queued, publishes one message per log stream per
// round (asynchronously, then waits for the acks), so a stream's events keep
// their order. The queue is bounded (Config.QueueBytes); when it is full,
// Append drops the lines, counts them (Dropped) and logs a warning at most
// every 10 s: a function that floods its log never slows invokes.
package logs

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/logline"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a Store. The zero value works.
type Config struct {
	Stream   string // JetStream stream; default KILN_LOGS
	Bucket   string // KV bucket of the index; default kiln-logs-index
	Replicas int    // default 1
	// MaxBytes bounds the stream, the total of every function's log; the
	// oldest events go first. 0: no bound.
	MaxBytes int64
	// RetentionDays is how long the events of a log group without a
	// retention policy (PutRetentionPolicy) are kept; 0: never expire
	// (CloudWatch Logs' default).
	RetentionDays int
	// ExpireInterval is how often expired events are removed; default 1 h.
	ExpireInterval time.Duration
	// QueueBytes bounds what Append queues before it drops; default 64 MiB.
	QueueBytes int64
	// IndexInterval is how often the index of appended streams is written
	// to the bucket (DescribeLogStreams in this process sees changes at
	// once); default 1 s.
	IndexInterval time.Duration
	// Linger is how long a publishing round waits for more lines after the
	// first, so that invokes in quick succession share one message and one
	// ack; default 10 ms, negative means none. A Flush (every read of the
	// API does one) ends the wait.
	Linger time.Duration
	Logger *slog.Logger
}

const (
	defaultStream = "KILN_LOGS"
	defaultBucket = "kiln-logs-index"
	// maxMessage bounds one stored message (NATS' default max payload is 1 MB).
	maxMessage = 900 << 10
	// maxRound bounds what one publishing round takes from the queue.
	maxRound = 8 << 20
)

// Store is the log store.
type Store struct {
	cfg    Config
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	log    *slog.Logger

	queue    chan item
	queued   atomic.Int64 // bytes waiting in queue
	dropped  atomic.Uint64
	lastWarn atomic.Int64 // unix nanos of the last drop warning
	closed   atomic.Bool
	stop     chan struct{}
	done     chan struct{}
	flushNow chan struct{} // ends a round's linger; capacity 1

	indexMu  sync.Mutex // held while writing the index
	mu       sync.Mutex
	accounts map[string]map[string]*group // account → group name → group
	dirty    map[dirtyKey]struct{}

	watcher jetstream.KeyWatcher
}

// item is one Append, or a flush marker when mark is set.
type item struct {
	account, group, stream string
	lines                  []logline.Line
	size                   int64
	mark                   chan error // capacity 1
}

// group is one log group in the index.
type group struct {
	Name    string `json:"name"`
	Created int64  `json:"creationTime"`
	// Skew is the most that an event's timestamp has been ahead of its
	// ingestion (ms); readers start time-bounded scans that much earlier.
	Skew int64 `json:"skew,omitempty"`
	// Retention is the group's retention policy in days; 0: none.
	Retention int `json:"retentionInDays,omitempty"`
	streams   map[string]*stream
	rev       uint64
	dirty     bool
}

// stream is one log stream in the index.
type stream struct {
	Name          string `json:"name"`
	Created       int64  `json:"creationTime"`
	First         int64  `json:"firstEventTimestamp,omitempty"`
	Last          int64  `json:"lastEventTimestamp,omitempty"`
	LastIngestion int64  `json:"lastIngestionTime,omitempty"`
	Bytes         int64  `json:"storedBytes,omitempty"`
	rev           uint64
	dirty         bool
}

type dirtyKey struct{ account, group, stream string } // stream "" is the group

// Open creates the stream and the bucket if needed and loads the index.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Stream == "" {
		cfg.Stream = defaultStream
	}
	if cfg.Bucket == "" {
		cfg.Bucket = defaultBucket
	}
	cfg.Replicas = max(cfg.Replicas, 1)
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 64 << 20
	}
	if cfg.IndexInterval <= 0 {
		cfg.IndexInterval = time.Second
	}
	if cfg.Linger == 0 {
		cfg.Linger = 10 * time.Millisecond
	}
	if cfg.ExpireInterval <= 0 {
		cfg.ExpireInterval = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	maxBytes := cfg.MaxBytes
	if maxBytes <= 0 {
		maxBytes = -1
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Kiln: log events (CloudWatch Logs)",
		Subjects:    []string{subjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxBytes:    maxBytes,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("logs stream: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "Kiln: log groups and log streams",
		History:     1,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("logs index bucket: %w", err)
	}
	s := &Store{cfg: cfg, js: js, stream: st, kv: kv, log: cfg.Logger,
		queue: make(chan item, 1<<14), stop: make(chan struct{}), done: make(chan struct{}), flushNow: make(chan struct{}, 1),
		accounts: map[string]map[string]*group{}, dirty: map[dirtyKey]struct{}{}}
	if err := s.loadIndex(ctx); err != nil {
		return nil, err
	}
	go s.run()
	return s, nil
}

// loadIndex reads the bucket and keeps watching it for other processes'
// changes.
func (s *Store) loadIndex(ctx context.Context) error {
	w, err := s.kv.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("logs index: %w", err)
	}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				s.watcher = w
				go s.watch(w)
				return nil
			}
			s.applyIndex(e)
		case <-ctx.Done():
			w.Stop()
			return ctx.Err()
		}
	}
}

func (s *Store) watch(w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e != nil {
			s.applyIndex(e)
		}
	}
}

// Index keys: <account>.g.<group> and <account>.s.<group>.<stream>.
func groupKey(account, g string) string { return escape(account) + ".g." + escape(g) }
func streamKey(account, g, st string) string {
	return escape(account) + ".s." + escape(g) + "." + escape(st)
}

// applyIndex merges one bucket entry into the in-memory index.
func (s *Store) applyIndex(e jetstream.KeyValueEntry) {
	parts := strings.Split(e.Key(), ".")
	if len(parts) < 3 {
		return
	}
	account, err := unescape(parts[0])
	if err != nil {
		return
	}
	gname, err := unescape(parts[2])
	if err != nil {
		return
	}
	del := e.Operation() != jetstream.KeyValuePut
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case parts[1] == "g" && len(parts) == 3:
		g := s.accounts[account][gname]
		if del {
			if g != nil && !g.dirty && g.rev <= e.Revision() {
				delete(s.accounts[account], gname)
			}
			return
		}
		var v group
		if json.Unmarshal(e.Value(), &v) != nil {
			return
		}
		if g == nil {
			g = s.ensureGroup(account, gname, v.Created)
		}
		g.Created = minNonZero(g.Created, v.Created)
		g.Skew = max(g.Skew, v.Skew)
		if e.Revision() >= g.rev {
			g.Retention = v.Retention // a policy is set, or removed, by the latest record
		}
		g.rev = max(g.rev, e.Revision())
	case parts[1] == "s" && len(parts) == 4:
		sname, err := unescape(parts[3])
		if err != nil {
			return
		}
		g := s.accounts[account][gname]
		if del {
			if g != nil {
				if st := g.streams[sname]; st != nil && !st.dirty && st.rev <= e.Revision() {
					delete(g.streams, sname)
				}
			}
			return
		}
		var v stream
		if json.Unmarshal(e.Value(), &v) != nil {
			return
		}
		if g == nil {
			g = s.ensureGroup(account, gname, v.Created)
		}
		st := g.streams[sname]
		if st == nil {
			st = &stream{Name: sname, Created: v.Created}
			g.streams[sname] = st
		}
		st.Created = minNonZero(st.Created, v.Created)
		st.First = minNonZero(st.First, v.First)
		st.Last = max(st.Last, v.Last)
		st.LastIngestion = max(st.LastIngestion, v.LastIngestion)
		st.Bytes = max(st.Bytes, v.Bytes)
		st.rev = max(st.rev, e.Revision())
	}
}

func minNonZero(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// ensureGroup returns the group, creating it in memory; s.mu is held.
func (s *Store) ensureGroup(account, name string, created int64) *group {
	g, _ := s.ensureGroupNew(account, name, created)
	return g
}

func (s *Store) ensureGroupNew(account, name string, created int64) (*group, bool) {
	gs := s.accounts[account]
	if gs == nil {
		gs = map[string]*group{}
		s.accounts[account] = gs
	}
	g := gs[name]
	if g != nil {
		return g, false
	}
	g = &group{Name: name, Created: created, streams: map[string]*stream{}}
	gs[name] = g
	return g, true
}

var _ logline.Sink = (*Store)(nil)

// Append queues lines for account's log group and stream, creating both
// on first use. It never blocks: when the queue is full the lines are
// dropped and counted. The store keeps lines; the caller must not change it.
func (s *Store) Append(account, group, stream string, lines []logline.Line) {
	if len(lines) == 0 || s.closed.Load() {
		return
	}
	var size int64
	for i := range lines {
		size += eventSize(lines[i].Message)
	}
	if s.queued.Add(size) > s.cfg.QueueBytes {
		s.queued.Add(-size)
		s.drop(len(lines))
		return
	}
	select {
	case s.queue <- item{account: account, group: group, stream: stream, lines: lines, size: size}:
	default:
		s.queued.Add(-size)
		s.drop(len(lines))
	}
}

func (s *Store) drop(n int) {
	total := s.dropped.Add(uint64(n))
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last >= int64(10*time.Second) && s.lastWarn.CompareAndSwap(last, now) {
		s.log.Warn("logs: queue full, dropping log lines", "dropped_total", total)
	}
}

// Dropped is how many lines Append has dropped because the queue was full.
func (s *Store) Dropped() uint64 { return s.dropped.Load() }

// put queues lines for the API (PutLogEvents): it waits for room instead of
// dropping, then until the lines are stored.
func (s *Store) put(ctx context.Context, account, group, stream string, lines []logline.Line) error {
	var size int64
	for i := range lines {
		size += eventSize(lines[i].Message)
	}
	s.queued.Add(size)
	select {
	case s.queue <- item{account: account, group: group, stream: stream, lines: lines, size: size}:
	case <-ctx.Done():
		s.queued.Add(-size)
		return ctx.Err()
	}
	return s.Flush(ctx)
}

// Flush waits until everything queued before it is stored; it returns an
// error when some of what was stored with it failed.
func (s *Store) Flush(ctx context.Context) error {
	if s.closed.Load() {
		return errors.New("logs: store closed")
	}
	mark := make(chan error, 1)
	select {
	case s.queue <- item{mark: mark}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case s.flushNow <- struct{}{}:
	default: // a flush is already pending
	}
	select {
	case err := <-mark:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errors.New("logs: store closed")
	}
}

// Close stores what is queued, writes the index and stops. Lines appended
// after Close are dropped.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		<-s.done
		return nil
	}
	close(s.stop)
	<-s.done
	if s.watcher != nil {
		s.watcher.Stop()
	}
	return nil
}

// run is the publishing goroutine; index writes have their own, so that
// the bucket's latency never holds back storing events.
func (s *Store) run() {
	indexDone := make(chan struct{})
	go func() {
		defer close(indexDone)
		ticker := time.NewTicker(s.cfg.IndexInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ticker.C:
				s.writeIndex()
			case <-s.stop:
				return
			}
		}
	}()
	expireDone := make(chan struct{})
	go func() {
		defer close(expireDone)
		s.expireLoop()
	}()
	defer close(s.done)
	defer func() { <-indexDone; <-expireDone }()
	var round []item
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case it := <-s.queue:
			round = append(round[:0], it)
			if it.mark == nil && s.cfg.Linger > 0 {
				// Appends meanwhile only fill the queue's buffer: nobody
				// is woken per invoke.
				linger.Reset(s.cfg.Linger)
				select {
				case <-linger.C:
				case <-s.flushNow:
				case <-s.stop:
				}
				linger.Stop()
			}
		case <-s.stop:
			for {
				round = s.take(round[:0])
				if len(round) == 0 {
					break
				}
				s.publish(round)
			}
			s.writeIndex()
			return
		}
		round = s.take(round)
		s.publish(round)
		clear(round) // let the lines go
	}
}

// take adds what is queued (without waiting) to round, up to maxRound bytes.
func (s *Store) take(round []item) []item {
	var size int64
	for _, it := range round {
		size += it.size
	}
	for size < maxRound {
		select {
		case it := <-s.queue:
			round = append(round, it)
			size += it.size
		default:
			return round
		}
	}
	return round
}

type streamID struct{ account, group, stream string }

// pending is one message being stored.
type pending struct {
	id          streamID
	subj        string
	data        []byte
	n           int // events; 0 once storing failed
	first, last int64
	skew        int64
	bytes       int64
	fut         jetstream.PubAckFuture
	err         error
}

// publishWindow bounds the messages in flight (nats.go's async publisher
// stalls past 4,000).
const publishWindow = 1024

// send publishes msgs asynchronously, in order, and waits for their acks.
// A message whose publish failed is retried (synchronously, in order) a few
// times: across a JetStream leader change a retried message may be stored
// twice or after the next one. It returns how many events were lost.
func (s *Store) send(msgs []pending) (lost int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range msgs {
		p := &msgs[i]
		if p.fut, p.err = s.js.PublishAsync(p.subj, p.data); p.err != nil {
			_, p.err = s.js.Publish(ctx, p.subj, p.data) // in order: later ones are not sent yet
		}
	}
	for i := range msgs {
		p := &msgs[i]
		if p.err == nil && p.fut != nil {
			select {
			case <-p.fut.Ok():
			case p.err = <-p.fut.Err():
			case <-ctx.Done():
				p.err = ctx.Err()
			}
		}
	}
	for i := range msgs {
		p := &msgs[i]
		for try := 0; p.err != nil && try < 3 && ctx.Err() == nil; try++ {
			time.Sleep(time.Duration(100<<try) * time.Millisecond)
			_, p.err = s.js.Publish(ctx, p.subj, p.data)
		}
		if p.err != nil {
			lost += p.n
			s.log.Error("logs: storing log events failed", "group", p.id.group, "stream", p.id.stream, "events", p.n, "err", p.err)
			p.n = 0
		}
		p.data = nil
	}
	return lost
}

// publish stores one round: one message (or more, when large) per log
// stream, published asynchronously; then it waits for every ack.
func (s *Store) publish(round []item) {
	var order []streamID
	byStream := map[streamID][]*item{}
	var marks []chan error
	var size int64
	for i := range round {
		it := &round[i]
		if it.mark != nil {
			marks = append(marks, it.mark)
			continue
		}
		size += it.size
		id := streamID{it.account, it.group, it.stream}
		if _, ok := byStream[id]; !ok {
			order = append(order, id)
		}
		byStream[id] = append(byStream[id], it)
	}
	now := time.Now().UnixMilli()
	// A new group or stream goes into the index before its first events, so
	// that a crash never leaves events that no index record leads to.
	s.mu.Lock()
	fresh := false
	for _, id := range order {
		g, isNew := s.ensureGroupNew(id.account, id.group, now)
		if isNew {
			s.markGroup(id.account, g)
		}
		if g.streams[id.stream] == nil {
			st := &stream{Name: id.stream, Created: now, dirty: true}
			g.streams[id.stream] = st
			s.dirty[dirtyKey{id.account, id.group, id.stream}] = struct{}{}
			fresh = true
		}
	}
	s.mu.Unlock()
	if fresh {
		s.writeIndex()
	}
	var pubs []pending
	for _, id := range order {
		subj := streamSubject(id.account, id.group, id.stream)
		var evs []logline.Line
		for _, it := range byStream[id] {
			evs = append(evs, it.lines...)
		}
		for len(evs) > 0 {
			p := pending{id: id, subj: subj}
			n, size := 0, 0
			for n < len(evs) {
				l := len(evs[n].Message) + 2*binary.MaxVarintLen64
				if n > 0 && size+l > maxMessage {
					break
				}
				ts := evs[n].Time.UnixMilli()
				if n == 0 {
					p.first, p.last = ts, ts
				}
				p.first, p.last = min(p.first, ts), max(p.last, ts)
				p.skew = max(p.skew, ts-now)
				p.bytes += eventSize(evs[n].Message)
				size += l
				n++
			}
			p.n = n
			p.data = appendBatchHeader(make([]byte, 0, size+4*binary.MaxVarintLen64), now, p.first, p.last, n)
			for _, e := range evs[:n] {
				p.data = appendEvent(p.data, e.Time.UnixMilli(), e.Message)
			}
			evs = evs[n:]
			pubs = append(pubs, p)
		}
	}
	var failed int
	for w := 0; w < len(pubs); w += publishWindow {
		failed += s.send(pubs[w:min(w+publishWindow, len(pubs))])
	}
	if failed > 0 {
		s.dropped.Add(uint64(failed))
	}
	s.queued.Add(-size)

	s.mu.Lock()
	for _, p := range pubs {
		if p.n == 0 {
			continue
		}
		g, isNew := s.ensureGroupNew(p.id.account, p.id.group, now)
		if isNew {
			s.markGroup(p.id.account, g)
		}
		if p.skew > g.Skew {
			g.Skew = p.skew
			s.markGroup(p.id.account, g)
		}
		st := g.streams[p.id.stream]
		if st == nil {
			st = &stream{Name: p.id.stream, Created: now}
			g.streams[p.id.stream] = st
		}
		st.First = minNonZero(st.First, p.first)
		st.Last = max(st.Last, p.last)
		st.LastIngestion = max(st.LastIngestion, now)
		st.Bytes += p.bytes
		if !st.dirty {
			st.dirty = true
			s.dirty[dirtyKey{p.id.account, p.id.group, p.id.stream}] = struct{}{}
		}
	}
	s.mu.Unlock()
	var err error
	if failed > 0 {
		err = fmt.Errorf("logs: %d events could not be stored", failed)
	}
	for _, m := range marks {
		m <- err
	}
}

// markGroup queues g's record for writing; s.mu is held.
func (s *Store) markGroup(account string, g *group) {
	if !g.dirty {
		g.dirty = true
		s.dirty[dirtyKey{account, g.Name, ""}] = struct{}{}
	}
}

// writeIndex writes the records changed since the last call.
func (s *Store) writeIndex() {
	s.indexMu.Lock() // one writer at a time, so that puts land in order
	defer s.indexMu.Unlock()
	type rec struct {
		key string
		val []byte
		set func(rev uint64)
	}
	s.mu.Lock()
	recs := make([]rec, 0, len(s.dirty))
	for k := range s.dirty {
		g := s.accounts[k.account][k.group]
		if g == nil {
			continue
		}
		if k.stream == "" {
			g.dirty = false
			b, _ := json.Marshal(g)
			recs = append(recs, rec{groupKey(k.account, k.group), b, func(r uint64) { g.rev = max(g.rev, r) }})
			continue
		}
		st := g.streams[k.stream]
		if st == nil {
			continue
		}
		st.dirty = false
		b, _ := json.Marshal(st)
		recs = append(recs, rec{streamKey(k.account, k.group, k.stream), b, func(r uint64) { st.rev = max(st.rev, r) }})
	}
	clear(s.dirty)
	s.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, r := range recs {
		rev, err := s.kv.Put(ctx, r.key, r.val)
		if err != nil {
			s.log.Error("logs: writing index failed", "key", r.key, "err", err)
			continue
		}
		s.mu.Lock()
		r.set(rev)
		s.mu.Unlock()
	}
}
