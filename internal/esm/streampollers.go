package esm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/lease"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream mappings are run shard by shard. Every poller process announces
// itself in KV kiln-esm-pollers (TTL: the lease TTL) and takes, of each
// enabled stream mapping, a fair share of the shards: ceil(shards /
// pollers), each by a lease (KV kiln-esm-leases, key UUID.SHARD). One
// above its share gives the extra shards up, so shards spread again when
// pollers come: it reads no more of such a shard but lets the read in
// flight finish and checkpoint (renewing the lease meanwhile, for at most
// yieldFor) before it releases it, so that its successor repeats nothing
// (cancelling it would repeat every record of a lane ahead of the
// checkpoint, which only passes a record when all before it are done).
// When one goes, its leases expire and the others take its
// shards. A shard is read from its checkpoint (KV kiln-esm-checkpoints, key
// UUID.SHARD: the last record processed), written by compare-and-set on
// the revision its reader started from, so a poller that lost a shard
// cannot move its checkpoint. A poller that dies leaves the checkpoint of
// its last finished records: its successor repeats at most the records
// in flight.

const (
	checkpointBucket = "kiln-esm-checkpoints"
	memberBucket     = "kiln-esm-pollers"
)

// streamPollers runs this process's share of the stream mappings.
type streamPollers struct {
	p           *Pollers
	checkpoints jetstream.KeyValue
	nc          *nats.Conn // reads checkpoints from their stream leader
	members     jetstream.KeyValue
	leases      *lease.Holder
	runs        runSet[*streamRun]
}

func newStreams(ctx context.Context, p *Pollers, js jetstream.JetStream, leases jetstream.KeyValue) (*streamPollers, error) {
	cps, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: checkpointBucket, History: 1,
		Storage: jetstream.FileStorage, Replicas: max(p.cfg.Replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("esm checkpoints: %w", err)
	}
	members, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: memberBucket, TTL: p.cfg.LeaseTTL,
		Storage: jetstream.MemoryStorage, Replicas: max(p.cfg.Replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("esm pollers: %w", err)
	}
	return &streamPollers{p: p, checkpoints: cps, nc: js.Conn(), members: members,
		leases: &lease.Holder{KV: leases, ID: p.leases.ID, TTL: p.cfg.LeaseTTL}}, nil
}

// reconcile runs this process's share of the enabled stream mappings and
// forgets the checkpoints of deleted ones.
func (s *streamPollers) reconcile(ctx context.Context, ms []*Mapping) {
	live := 1
	if _, err := s.members.Put(ctx, s.leases.ID, nil); err == nil {
		if kl, err := s.members.ListKeys(ctx); err == nil {
			n := 0
			for range kl.Keys() {
				n++
			}
			live = max(n, 1)
		}
	}
	want := map[string]*Mapping{}
	for _, m := range ms {
		switch {
		case !m.Stream():
		case m.State == StateEnabled:
			want[m.UUID] = m
		case m.State == StateDeleting:
			s.runs.stop(m.UUID)
			s.forget(ctx, m.UUID)
		}
	}
	for _, id := range s.runs.stale(want) {
		s.runs.stop(id)
	}
	for id, m := range want {
		r, ok := s.runs.get(id)
		if !ok {
			src, err := s.p.openStream(ctx, m)
			if err != nil {
				s.p.setResult(id, "PROBLEM: "+err.Error())
				continue
			}
			rctx, cancel := context.WithCancel(s.p.ctx)
			r = &streamRun{s: s, m: m, src: src, ctx: rctx, cancel: cancel, shards: map[string]*shardRun{}}
			r.result.Store(&m.LastProcessingResult)
			s.runs.add(id, r)
		}
		r.balance(ctx, live)
	}
}

// stopAll ends every stream mapping (Pollers.Close).
func (s *streamPollers) stopAll() {
	s.runs.stopAll()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.members.Delete(ctx, s.leases.ID)
}

// forget removes a deleted mapping's checkpoints.
func (s *streamPollers) forget(ctx context.Context, id string) {
	keys, err := natsd.LeaderKeys(ctx, s.nc, checkpointBucket, id+".>")
	if err != nil {
		return
	}
	for _, k := range keys {
		s.checkpoints.Purge(ctx, k)
	}
}

// openStream opens a stream mapping's source.
func (p *Pollers) openStream(ctx context.Context, m *Mapping) (StreamSource, error) {
	if m.Kafka() {
		group := m.UUID
		if c := m.SelfManagedKafkaEventSourceConfig; c != nil && c.ConsumerGroupId != "" {
			group = c.ConsumerGroupId
		}
		return OpenKafka(m.SelfManagedEventSource.Endpoints[KafkaServersKey], m.Topics[0], group)
	}
	if p.cfg.Streams == nil {
		return nil, fmt.Errorf("event source %s: no Kiln stream service", m.EventSourceArn)
	}
	return OpenKinesis(p.cfg.Streams, m.EventSourceArn, m.EventSourceMappingArn)
}

// streamRun is one stream mapping in this process: the shards it reads.
type streamRun struct {
	s      *streamPollers
	m      *Mapping
	src    StreamSource
	ctx    context.Context
	cancel context.CancelFunc
	result atomic.Pointer[string]

	mu     sync.Mutex
	shards map[string]*shardRun
}

// balance renews the leases of the shards this run reads, gives up what
// is beyond its share and takes free shards up to it.
func (r *streamRun) balance(ctx context.Context, live int) {
	shards, err := r.src.Shards(ctx)
	if err != nil {
		r.report("PROBLEM: " + err.Error())
		shards = nil
	}
	share := (len(shards) + live - 1) / live
	r.mu.Lock()
	defer r.mu.Unlock()
	held := 0
	for shard, sr := range r.shards {
		if sr.ended() {
			delete(r.shards, shard)
			continue
		}
		if !r.s.leases.Hold(ctx, sr.leaseKey()) {
			sr.stop()
			delete(r.shards, shard)
			continue
		}
		if sr.yielding.Load() {
			continue // held until its read in flight is done
		}
		// Shards unknown (the source is unreachable): keep what is held.
		if err == nil && held >= share {
			sr.yield(r.s.p.cfg.LeaseTTL * yieldTTLs)
			continue
		}
		held++
	}
	for _, shard := range shards {
		if held >= share {
			break
		}
		if _, ok := r.shards[shard]; ok {
			continue
		}
		sr := &shardRun{r: r, shard: shard, done: make(chan struct{})}
		if !r.s.leases.Hold(ctx, sr.leaseKey()) {
			continue
		}
		sr.ctx, sr.cancel = context.WithCancel(r.ctx)
		r.shards[shard] = sr
		held++
		go sr.run()
	}
}

func (r *streamRun) mapping() *Mapping { return r.m }

// stop ends the mapping's shard readers (giving their leases up).
func (r *streamRun) stop() {
	r.cancel()
	r.mu.Lock()
	shards := r.shards
	r.shards = map[string]*shardRun{}
	r.mu.Unlock()
	for _, sr := range shards {
		sr.stop()
	}
	r.src.Close()
}

// report records the mapping's LastProcessingResult when it changed.
func (r *streamRun) report(result string) {
	if cur := r.result.Load(); cur != nil && *cur == result {
		return
	}
	r.result.Store(&result)
	r.s.p.setResult(r.m.UUID, result)
}

// checkpoint is a shard's stored progress.
type checkpoint struct {
	Position string  `json:"position"` // the last record processed; "" none
	Window   *window `json:"window,omitempty"`
}

// window is a tumbling window's progress: its start and the state the
// function returned.
type window struct {
	Start time.Time       `json:"start"`
	State json.RawMessage `json:"state,omitempty"`
}

// shardRun reads one shard.
type shardRun struct {
	r      *streamRun
	shard  string
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	yielding atomic.Bool // given up: it reads no more

	mu  sync.Mutex // serializes checkpoint writes
	cp  checkpoint
	rev uint64
}

// yieldTTLs bounds, in lease TTLs, how long a shard given up may take to
// finish its read in flight (a failing batch may block it for long): then
// it is cancelled, and its successor repeats what was not checkpointed.
const yieldTTLs = 3

// yield gives the shard up once its read in flight is processed, or after
// at most d.
func (sr *shardRun) yield(d time.Duration) {
	sr.yielding.Store(true)
	time.AfterFunc(d, sr.cancel)
}

func (sr *shardRun) leaseKey() string { return sr.r.m.UUID + "." + shardKey(sr.shard) }

func (sr *shardRun) stop() {
	sr.cancel()
	<-sr.done
}

func (sr *shardRun) ended() bool {
	select {
	case <-sr.done:
		return true
	default:
		return false
	}
}

func (sr *shardRun) run() {
	defer close(sr.done)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		sr.r.s.leases.Release(ctx, sr.leaseKey())
	}()
	log := sr.r.s.p.log.With("uuid", sr.r.m.UUID, "shard", sr.shard)
	var reader ShardReader
	for reader == nil {
		if sr.yielding.Load() {
			return
		}
		var err error
		if err = sr.load(); err == nil {
			reader, err = sr.r.src.Open(sr.ctx, sr.shard, sr.cp.Position)
		}
		if sr.ctx.Err() != nil {
			return
		}
		if err != nil {
			sr.r.report("PROBLEM: " + err.Error())
			log.Warn("esm: open shard", "err", err)
			pause(sr.ctx, time.Second)
		}
	}
	defer reader.Close()
	m := sr.r.m
	size := max(m.BatchSize, 1)
	batchWindow := time.Duration(m.MaximumBatchingWindowInSeconds) * time.Second
	var ahead []StreamRecord
	for sr.ctx.Err() == nil && !sr.yielding.Load() {
		recs, err := collectStream(sr.ctx, reader, &ahead, size*m.parallelization(), batchWindow, min(sr.r.s.p.cfg.ReceiveWait, time.Second))
		if err != nil {
			if sr.ctx.Err() == nil {
				sr.r.report("PROBLEM: " + err.Error())
				log.Warn("esm: read shard", "err", err)
				pause(sr.ctx, time.Second)
			}
			continue
		}
		if sr.yielding.Load() {
			return // the successor reads recs, none is checkpointed
		}
		if len(recs) == 0 {
			if !sr.closeWindow(time.Now()) {
				return
			}
			continue
		}
		if !sr.process(recs) {
			return
		}
	}
}

// collectStream gathers up to n records of a shard (those read ahead
// first), for up to the batching window after the first.
func collectStream(ctx context.Context, reader ShardReader, ahead *[]StreamRecord, n int, window, wait time.Duration) ([]StreamRecord, error) {
	recs := *ahead
	if len(recs) > n {
		recs, *ahead = recs[:n], recs[n:]
		return recs, nil
	}
	*ahead = nil
	deadline := time.Now().Add(window)
	for len(recs) < n {
		w := wait
		if len(recs) > 0 {
			if w = time.Until(deadline); w <= 0 {
				break
			}
		}
		got, err := reader.Read(ctx, n-len(recs), w)
		if err != nil {
			*ahead = recs
			return nil, err
		}
		if len(got) == 0 && len(recs) == 0 {
			return nil, nil
		}
		if len(recs) == 0 {
			deadline = time.Now().Add(window)
		}
		recs = append(recs, got...)
		if window == 0 {
			break
		}
	}
	return recs, nil
}

// load reads the shard's checkpoint, storing the starting position's when
// there is none yet (so that LATEST means the same to a successor).
func (sr *shardRun) load() error {
	ctx, key := sr.ctx, sr.leaseKey()
	// From the bucket's stream leader: a lagging replica would answer with
	// an older checkpoint than the previous holder's last (its records run
	// again, and the first save is refused as a takeover), or none.
	v, rev, err := natsd.LeaderGet(ctx, sr.r.s.nc, checkpointBucket, key)
	if err == nil {
		sr.rev = rev
		return json.Unmarshal(v, &sr.cp)
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	s := sr.r.m.StreamSettings
	var at time.Time
	if s.StartingPositionTimestamp != nil {
		at = time.UnixMilli(int64(*s.StartingPositionTimestamp * 1000))
	}
	pos, err := sr.r.src.Start(ctx, sr.shard, s.StartingPosition, at)
	if err != nil {
		return err
	}
	sr.cp = checkpoint{Position: pos}
	b, _ := json.Marshal(&sr.cp)
	sr.rev, err = sr.r.s.checkpoints.Create(ctx, key, b)
	return err
}

// errLost means another poller wrote the shard's checkpoint: it took the
// shard over.
var errLost = errors.New("esm: shard taken over")

// save stores the checkpoint, by compare-and-set.
func (sr *shardRun) save(cp checkpoint) error {
	b, _ := json.Marshal(&cp)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(sr.ctx), 10*time.Second)
	defer cancel()
	for {
		rev, err := sr.r.s.checkpoints.Update(ctx, sr.leaseKey(), b, sr.rev)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return errLost
		}
		if err == nil {
			sr.rev, sr.cp = rev, cp
			if c, ok := sr.r.src.(interface {
				Commit(ctx context.Context, shard, checkpoint string) error
			}); ok {
				c.Commit(ctx, sr.shard, cp.Position)
			}
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		pause(ctx, 200*time.Millisecond)
	}
}

// advance marks records done and stores the checkpoint when it moved.
func (sr *shardRun) advance(rd *round, recs []StreamRecord) error {
	if len(recs) == 0 {
		return nil
	}
	sr.mu.Lock()
	defer sr.mu.Unlock()
	pos, ok := rd.mark(recs)
	if !ok {
		return nil
	}
	cp := sr.cp
	cp.Position = pos
	return sr.save(cp)
}

// process runs one read of the shard through its lanes; false when the
// shard was taken over or the run stops.
func (sr *shardRun) process(recs []StreamRecord) bool {
	m := sr.r.m
	filters, _ := m.Filters()
	rd := newRound(recs)
	var pass, drop []StreamRecord
	for _, rec := range recs {
		if len(filters) == 0 || rec.Filter != nil && filters.Match(rec.Filter) {
			pass = append(pass, rec)
		} else {
			drop = append(drop, rec)
		}
	}
	if err := sr.advance(rd, drop); err != nil {
		return false
	}
	var wg sync.WaitGroup
	var lost atomic.Bool
	for _, lane := range lanes(pass, m.parallelization()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sr.lane(rd, lane); err != nil {
				lost.Store(true)
			}
		}()
	}
	wg.Wait()
	return !lost.Load() && sr.ctx.Err() == nil
}

// lane processes a lane's records in order: batch by batch, each until it
// is done or failed.
func (sr *shardRun) lane(rd *round, recs []StreamRecord) error {
	m := sr.r.m
	pol := m.policy()
	for _, b := range batches(recs, max(m.BatchSize, 1), MaxPayload-streamEnvelope, m.window()) {
		if m.window() > 0 && !sr.closeWindow(b[0].Arrival) {
			return errLost
		}
		queue := []piece{{recs: b}}
		for len(queue) > 0 {
			if sr.ctx.Err() != nil {
				return sr.ctx.Err()
			}
			p := queue[0]
			old, rest := expired(pol, p.recs, time.Now())
			if len(old) > 0 {
				if err := sr.fail(old, conditionAge, p.retries, nil); err != nil {
					return err
				}
				if err := sr.advance(rd, old); err != nil {
					return err
				}
			}
			if p.recs = rest; len(rest) == 0 {
				queue = queue[1:]
				continue
			}
			resp, out, err := sr.invoke(p.recs)
			if err != nil {
				return err
			}
			done, failed, next := afterInvoke(pol, p, out)
			if err := sr.advance(rd, done); err != nil {
				return err
			}
			if len(failed) > 0 {
				if err := sr.fail(failed, conditionRetries, p.retries+1, resp); err != nil {
					return err
				}
				if err := sr.advance(rd, failed); err != nil {
					return err
				}
			}
			if len(next) > 0 && len(next[0].recs) == len(p.recs) {
				pause(sr.ctx, retryPause) // a retry of the same records
			}
			queue = append(next, queue[1:]...)
			if out.functionError || len(out.failed) > 0 {
				sr.r.report("PROBLEM: Function call failed")
			} else {
				sr.r.report("OK")
			}
		}
	}
	return nil
}

// streamEnvelope bounds what an event adds around its records (Kafka's
// bootstrap servers and records' key, a window's state), so that a batch
// stays inside Lambda's 6 MB payload.
const streamEnvelope = 1 << 16

// retryPause spaces the retries of a failing batch.
const retryPause = 500 * time.Millisecond

// invoke runs the function on records until it ran (throttles and Kiln's
// own errors are retried with backoff: the shard waits), and reads its
// result.
func (sr *shardRun) invoke(recs []StreamRecord) (*invoke.Response, outcome, error) {
	m := sr.r.m
	ev := sr.r.src.Event(sr.shard, recs)
	win := sr.windowOf(recs)
	if win != nil {
		win.fields(ev, sr.shard, m.EventSourceArn, false, false)
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return nil, outcome{}, err
	}
	resp, err := sr.call(payload)
	if err != nil {
		return nil, outcome{}, err
	}
	var out outcome
	switch {
	case resp.FunctionError != "":
		out.functionError = true
	case m.Reports() || win != nil:
		ids := make([]Record, len(recs))
		for i, r := range recs {
			ids[i] = Record{ID: r.ID}
		}
		failed, valid := batchItemFailures(resp.Payload, ids)
		out = outcome{functionError: !valid, failed: failed}
		if !m.Reports() {
			out.failed = nil
		}
	}
	if win != nil && !out.functionError {
		if err := sr.keepState(resp.Payload, recs); err != nil {
			return nil, outcome{}, err
		}
	}
	return resp, out, nil
}

// call invokes the function, retrying what did not reach it.
func (sr *shardRun) call(payload []byte) (*invoke.Response, error) {
	m := sr.r.m
	backoff := 100 * time.Millisecond
	for {
		resp, err := sr.r.s.p.cfg.Invoker.Invoke(sr.ctx, invoke.Request{Account: m.Account, Function: m.FunctionArn, Payload: payload})
		if err == nil {
			return resp, nil
		}
		if sr.ctx.Err() != nil {
			return nil, sr.ctx.Err()
		}
		var e *api.Error
		switch {
		case errors.As(err, &e) && e.Status == 429:
			sr.r.report("PROBLEM: Function call throttled")
		case e != nil && e.Status < 500:
			sr.r.report("PROBLEM: " + e.Message)
		default:
			sr.r.report("PROBLEM: Function call failed")
			sr.r.s.p.log.Warn("esm: invoke", "uuid", m.UUID, "shard", sr.shard, "err", err)
		}
		pause(sr.ctx, backoff)
		backoff = min(2*backoff, 10*time.Second)
	}
}
