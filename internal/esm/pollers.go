package esm

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/eventfilter"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/lease"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Invoker runs synchronous invokes (the frontend's in-process path, or a
// cluster role's client of it).
type Invoker interface {
	Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error)
}

// Config configures the pollers. NATS, Invoker and Queues are required.
type Config struct {
	NATS    *nats.Conn
	Invoker Invoker
	Queues  Queues
	// Streams is Kiln's stream service, for Kinesis mappings.
	Streams Streams
	// Replicas of the mapping and lease buckets (cluster mode); 0 means 1.
	Replicas int
	// LeaseTTL is how long a mapping's lease lasts unrenewed: how soon
	// another process takes over a dead poller's mappings. 0 means 10 s.
	LeaseTTL time.Duration
	// MaxBatches bounds the concurrent batches of one mapping in this
	// process, below its MaximumConcurrency; 0 means no bound of its own.
	MaxBatches int
	// ReceiveWait is a batch loop's long poll on an empty source; 0 means
	// 20 s (SQS's most). A loop beyond the first ends after one empty poll.
	ReceiveWait time.Duration
	// Name names this process in the leases it holds (their values are
	// NAME/random), so an operator or a fault test sees who runs a mapping;
	// empty means "esm".
	Name   string
	Logger *slog.Logger
}

// Pollers runs the event source mappings whose leases it holds.
type Pollers struct {
	cfg    Config
	store  *Store
	leases *lease.Holder
	log    *slog.Logger
	// streams runs the stream mappings (streampollers.go).
	streams *streamPollers
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}

	runs runSet[*runner]
}

// New opens the mapping store and the lease bucket. Start runs the pollers.
func New(ctx context.Context, cfg Config) (*Pollers, error) {
	if cfg.NATS == nil || cfg.Invoker == nil || cfg.Queues == nil {
		return nil, errors.New("esm: NATS, Invoker and Queues are required")
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.ReceiveWait <= 0 {
		cfg.ReceiveWait = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, err
	}
	store, err := OpenStore(ctx, js, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: leaseBucket, TTL: cfg.LeaseTTL,
		Storage: jetstream.MemoryStorage, Replicas: max(cfg.Replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("esm leases: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &Pollers{cfg: cfg, store: store, log: cfg.Logger, ctx: runCtx, cancel: cancel, done: make(chan struct{}),
		leases: &lease.Holder{KV: kv, ID: cmp.Or(cfg.Name, "esm") + "/" + api.NewUUID(), TTL: cfg.LeaseTTL}}
	if p.streams, err = newStreams(ctx, p, js, kv); err != nil {
		cancel()
		return nil, err
	}
	return p, nil
}

// Store is the mappings' store (the control plane's API writes it).
func (p *Pollers) Store() *Store { return p.store }

// Start runs the pollers until Close.
func (p *Pollers) Start() { go p.loop() }

// Close stops every batch loop (a batch being invoked finishes) and gives
// the leases up.
func (p *Pollers) Close() {
	p.cancel()
	<-p.done
}

func (p *Pollers) loop() {
	defer close(p.done)
	changes := make(chan struct{}, 1)
	if w, err := p.store.kv.WatchAll(p.ctx, jetstream.UpdatesOnly(), jetstream.MetaOnly()); err == nil {
		go func() {
			for range w.Updates() {
				select {
				case changes <- struct{}{}:
				default:
				}
			}
		}()
	}
	t := time.NewTicker(p.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		p.reconcile(p.ctx)
		select {
		case <-p.ctx.Done():
			p.runs.stopAll()
			p.streams.stopAll()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			p.leases.ReleaseAll(ctx)
			cancel()
			return
		case <-t.C:
		case <-changes:
		}
	}
}

// reconcile moves mappings on from their transitional states, renews the
// leases of the mappings this process runs, takes free ones, and stops
// what it no longer holds.
func (p *Pollers) reconcile(ctx context.Context) {
	ms, err := p.store.List(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("esm: list mappings", "err", err)
		}
		// Cut off from the mappings: keep running only what is still
		// surely leased (a lease counts until its TTL after the last
		// renewal), so that nobody else runs it meanwhile.
		for _, id := range p.runs.ids() {
			if !p.leases.Hold(ctx, id) {
				p.log.Warn("esm: lost the lease of a mapping", "uuid", id)
				p.stop(id)
			}
		}
		return
	}
	p.streams.reconcile(ctx, ms)
	want := map[string]*Mapping{}
	for _, m := range ms {
		switch m.State {
		case StateCreating, StateUpdating:
			_, err := p.store.Modify(ctx, m.UUID, func(cur *Mapping) error {
				if cur.State != m.State {
					return errStale
				}
				cur.State, cur.StateTransitionReason = StateDisabled, "USER_INITIATED"
				if cur.Enabled {
					cur.State = StateEnabled
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStale) && !errors.Is(err, ErrNotFound) {
				p.log.Warn("esm: mapping state", "uuid", m.UUID, "err", err)
			}
		case StateDeleting:
			p.stop(m.UUID)
			if m.NATS() {
				if err := removeNATSConsumer(ctx, m.NATSServers(), m.Queues[0], "kiln-esm-"+m.UUID); err != nil {
					p.log.Warn("esm: remove the NATS consumer of a deleted mapping", "uuid", m.UUID, "err", err)
				}
			}
			if err := p.store.Remove(ctx, m.UUID); err != nil {
				p.log.Warn("esm: delete mapping", "uuid", m.UUID, "err", err)
			}
		case StateEnabled:
			if !m.Stream() && p.leases.Hold(ctx, m.UUID) {
				want[m.UUID] = m
			}
		}
	}
	for _, id := range p.runs.stale(want) {
		p.stop(id)
	}
	for id, m := range want {
		if _, running := p.runs.get(id); running {
			continue
		}
		r, err := p.newRunner(ctx, m)
		if err != nil {
			p.setResult(m.UUID, "PROBLEM: "+err.Error())
			p.leases.Release(ctx, id)
			continue
		}
		p.runs.add(id, r)
		r.spawn()
	}
}

var errStale = errors.New("stale")

// stop ends a mapping's batch loops and gives its lease up.
func (p *Pollers) stop(id string) {
	p.runs.stop(id)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.leases.Release(ctx, id)
}

// setResult records a mapping's LastProcessingResult.
func (p *Pollers) setResult(id, result string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := p.store.Modify(ctx, id, func(m *Mapping) error {
		if m.LastProcessingResult == result {
			return errStale
		}
		m.LastProcessingResult = result
		return nil
	})
	if err != nil && !errors.Is(err, errStale) && !errors.Is(err, ErrNotFound) {
		p.log.Warn("esm: processing result", "uuid", id, "err", err)
	}
}

// runner runs one mapping's batch loops.
type runner struct {
	p       *Pollers
	m       *Mapping
	src     Source
	filters eventfilter.Filters
	max     int
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	active  atomic.Int32
	result  atomic.Pointer[string]
}

func (p *Pollers) newRunner(ctx context.Context, m *Mapping) (*runner, error) {
	filters, err := m.Filters()
	if err != nil {
		return nil, err
	}
	src, err := p.open(ctx, m)
	if err != nil {
		return nil, err
	}
	limit := m.MaxConcurrency()
	if p.cfg.MaxBatches > 0 {
		limit = min(limit, p.cfg.MaxBatches)
	}
	rctx, cancel := context.WithCancel(p.ctx)
	r := &runner{p: p, m: m, src: src, filters: filters, max: limit, ctx: rctx, cancel: cancel}
	r.result.Store(&m.LastProcessingResult)
	return r, nil
}

// open opens a mapping's source.
func (p *Pollers) open(ctx context.Context, m *Mapping) (Source, error) {
	if m.RabbitMQ() {
		src, err := OpenRabbitMQ(m.RabbitMQSource(), time.Duration(m.HoldSeconds)*time.Second)
		if err != nil {
			return nil, fmt.Errorf("event source: %w", err)
		}
		return src, nil
	}
	if m.NATS() {
		var subject string
		if len(m.Topics) > 0 {
			subject = m.Topics[0]
		}
		src, err := OpenNATS(ctx, m.NATSServers(), m.Queues[0], subject, "kiln-esm-"+m.UUID, time.Duration(m.HoldSeconds)*time.Second)
		if err != nil {
			return nil, fmt.Errorf("event source: %w", err)
		}
		return src, nil
	}
	src, err := OpenQueue(ctx, p.cfg.Queues, m.EventSourceArn)
	if err != nil {
		return nil, fmt.Errorf("event source %s: %w", m.EventSourceArn, err)
	}
	return src, nil
}

func (r *runner) mapping() *Mapping { return r.m }

func (r *runner) stop() {
	r.cancel()
	r.wg.Wait()
	if c, ok := r.src.(interface{ Close() }); ok {
		c.Close()
	}
}

// spawn starts one more batch loop, unless the mapping runs its most.
func (r *runner) spawn() {
	if int(r.active.Add(1)) > r.max {
		r.active.Add(-1)
		return
	}
	r.wg.Add(1)
	go r.loop()
}

// retire ends the calling loop unless it is the last one.
func (r *runner) retire() bool {
	for {
		n := r.active.Load()
		if n <= 1 {
			return false
		}
		if r.active.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (r *runner) loop() {
	defer r.wg.Done()
	var carry []Record
	for r.ctx.Err() == nil {
		batch, full, err := r.collect(&carry)
		if err != nil && r.ctx.Err() == nil {
			r.report("PROBLEM: " + err.Error())
			r.p.log.Warn("esm: receive", "uuid", r.m.UUID, "source", r.m.EventSourceArn, "err", err)
			pause(r.ctx, time.Second)
		}
		if len(batch) == 0 {
			if err == nil && r.retire() {
				return
			}
			continue
		}
		if full {
			r.spawn()
		}
		r.process(batch)
	}
	r.active.Add(-1)
}

// recordOverhead is what a record adds to the payload beyond its own bytes
// (the comma).
const recordOverhead = 1

// envelope is the event around a batch's records: SQS's and NATS's
// {"Records":[…]}, or what the source makes (RabbitMQ's).
func envelope(src Source, recs []Record) []byte {
	if e, ok := src.(interface{ Envelope([]Record) []byte }); ok {
		return e.Envelope(recs)
	}
	return append(joinRecords([]byte(`{"Records":[`), recs), "]}"...)
}

// joinRecords appends the records to b, comma-separated.
func joinRecords(b []byte, recs []Record) []byte {
	for i, rec := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, rec.Data...)
	}
	return b
}

// collect gathers a batch: up to BatchSize records and MaxPayload bytes,
// for up to the batching window after the first. A record that would
// overflow the payload is carried into the next batch. full means the
// source had more than fit.
func (r *runner) collect(carry *[]Record) (batch []Record, full bool, err error) {
	size := max(r.m.BatchSize, 1)
	window := time.Duration(r.m.MaximumBatchingWindowInSeconds) * time.Second
	batch, *carry = *carry, nil
	bytes := len(envelope(r.src, nil))
	for _, rec := range batch {
		bytes += len(rec.Data) + recordOverhead
	}
	var deadline time.Time
	if len(batch) > 0 {
		deadline = time.Now().Add(window)
	}
	for len(batch) < size && len(*carry) == 0 {
		wait := r.p.cfg.ReceiveWait
		if len(batch) > 0 {
			if window == 0 || !time.Now().Before(deadline) {
				break
			}
			wait = time.Until(deadline)
		}
		got, err := r.src.Receive(r.ctx, size-len(batch), wait)
		if err != nil {
			return batch, false, err
		}
		if len(got) == 0 {
			if len(batch) == 0 {
				return nil, false, nil
			}
			continue
		}
		if len(batch) == 0 {
			deadline = time.Now().Add(window)
		}
		for _, rec := range got {
			if bytes+len(rec.Data)+recordOverhead > MaxPayload && len(batch) > 0 {
				*carry = append(*carry, rec)
				continue
			}
			batch = append(batch, rec)
			bytes += len(rec.Data) + recordOverhead
		}
	}
	return batch, len(batch) >= size || len(*carry) > 0, nil
}

// process filters a batch, invokes the function with what passes and
// deletes what succeeded (and what no filter matched).
func (r *runner) process(batch []Record) {
	ctx := r.ctx
	received := time.Now()
	var pass, drop []Record
	for _, rec := range batch {
		if len(r.filters) == 0 {
			pass = append(pass, rec)
			continue
		}
		view := rec.Data
		if v, ok := r.src.(interface{ FilterView(Record) []byte }); ok {
			view = v.FilterView(rec)
		}
		ev, err := eventfilter.Decode(view, r.src.FilterFields()...)
		if err == nil && r.filters.Match(ev) {
			pass = append(pass, rec)
		} else {
			drop = append(drop, rec)
		}
	}
	if len(drop) > 0 {
		if err := r.src.Delete(context.WithoutCancel(ctx), drop); err != nil {
			r.p.log.Warn("esm: delete filtered records", "uuid", r.m.UUID, "err", err)
		}
	}
	if len(pass) == 0 {
		return
	}
	resp, ok := r.invoke(pass, envelope(r.src, pass), received)
	if !ok {
		return
	}
	if resp.FunctionError != "" {
		// The whole batch comes back after the visibility timeout.
		r.report("PROBLEM: Function call failed")
		return
	}
	done := pass
	if r.m.Reports() {
		failed, valid := batchItemFailures(resp.Payload, pass)
		if !valid {
			r.report("PROBLEM: Function returned an invalid batchItemFailures response")
			return
		}
		done = done[:0:0]
		for _, rec := range pass {
			if !failed[rec.ID] {
				done = append(done, rec)
			}
		}
	}
	if err := r.src.Delete(context.WithoutCancel(ctx), done); err != nil {
		r.p.log.Warn("esm: delete records", "uuid", r.m.UUID, "err", err)
	}
	r.report("OK")
}

// invoke runs the function on a batch, retrying throttles and Kiln's own
// errors with backoff (extending the records' hold meanwhile) until the
// mapping stops. false: no invoke happened (the records come back).
func (r *runner) invoke(recs []Record, payload []byte, received time.Time) (*invoke.Response, bool) {
	backoff := 100 * time.Millisecond
	// Sleep no longer than a third of the hold, so that the records' hold
	// is extended before it ends.
	maxBackoff := 10 * time.Second
	if hold := r.src.Hold(); hold > 0 {
		maxBackoff = max(min(maxBackoff, hold/3), 10*time.Millisecond)
	}
	held := received
	for {
		resp, err := r.p.cfg.Invoker.Invoke(r.ctx, invoke.Request{Account: r.m.Account, Function: r.m.FunctionArn, Payload: payload})
		if err == nil {
			return resp, true
		}
		var e *api.Error
		retry := !errors.As(err, &e) || e.Status == 429 || e.Status >= 500
		if !retry || r.ctx.Err() != nil {
			if e != nil {
				r.report("PROBLEM: " + e.Message)
			}
			return nil, false
		}
		if e != nil && e.Status == 429 {
			r.report("PROBLEM: Function call throttled")
		} else {
			r.report("PROBLEM: Function call failed")
			r.p.log.Warn("esm: invoke", "uuid", r.m.UUID, "err", err)
		}
		pause(r.ctx, backoff)
		backoff = min(2*backoff, maxBackoff)
		// Extended when the next pause would end past half the hold, so
		// that the extension comes with half the hold to spare (a stall of
		// a loaded host would otherwise let the records come back).
		if hold := r.src.Hold(); hold > 0 && time.Since(held)+backoff > hold/2 {
			if err := r.src.Extend(r.ctx, recs, hold); err == nil {
				held = time.Now()
			}
		}
	}
}

// batchItemFailures reads a ReportBatchItemFailures response. Like
// Lambda: an empty or null response, or one without batchItemFailures,
// fails nothing; a response that is not such a document, or names an item
// not in the batch (or none), fails the whole batch (valid false).
func batchItemFailures(payload []byte, batch []Record) (failed map[string]bool, valid bool) {
	if t := strings.TrimSpace(string(payload)); t == "" || t == "null" {
		return nil, true
	}
	var doc struct {
		BatchItemFailures []struct {
			ItemIdentifier *string `json:"itemIdentifier"`
		} `json:"batchItemFailures"`
	}
	if err := json.Unmarshal(payload, &doc); err != nil {
		// Invalid JSON fails the batch; other JSON (a string, a number)
		// reports no failure.
		var v any
		return nil, json.Unmarshal(payload, &v) == nil
	}
	ids := map[string]bool{}
	for _, rec := range batch {
		ids[rec.ID] = true
	}
	failed = map[string]bool{}
	for _, f := range doc.BatchItemFailures {
		if f.ItemIdentifier == nil || !ids[*f.ItemIdentifier] {
			return nil, false
		}
		failed[*f.ItemIdentifier] = true
	}
	return failed, true
}

// report records the mapping's LastProcessingResult when it changed.
func (r *runner) report(result string) {
	if cur := r.result.Load(); cur != nil && *cur == result {
		return
	}
	r.result.Store(&result)
	r.p.setResult(r.m.UUID, result)
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Holder tells which process runs a mapping: the Name its pollers were
// given, or "" while nobody holds the mapping's lease.
func Holder(ctx context.Context, js jetstream.JetStream, uuid string) (string, error) {
	// From the bucket's stream leader: a lagging replica names a holder
	// that has given the lease up, or none.
	v, _, err := natsd.LeaderGet(ctx, js.Conn(), leaseBucket, uuid)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	name, _, _ := strings.Cut(string(v), "/")
	return name, nil
}
