package eventinvoke

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/lease"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxBatch bounds one fetch of a poller.
const maxBatch = 64

// poller serves the queues it holds leases on: it fetches events only
// when this process has room to run them, and hands each to Service.handle.
type poller struct {
	s *Service
	l *lease.Holder

	mu   sync.Mutex
	runs map[string]*consumeLoop // by queue name

	// stalled simulates a stuck poller (tests): no renewals, no fetches.
	stalled atomic.Bool
}

type consumeLoop struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newPoller(s *Service) *poller {
	return &poller{s: s, l: &lease.Holder{KV: s.leases, ID: "poller-" + api.NewUUID(), TTL: s.tune.LeaseTTL}, runs: map[string]*consumeLoop{}}
}

func (p *poller) run() {
	defer p.s.wg.Done()
	t := time.NewTicker(p.s.tune.LeaseTTL / 3)
	defer t.Stop()
	for {
		changed := p.s.changedCh()
		if !p.stalled.Load() {
			p.tick()
		}
		select {
		case <-p.s.ctx.Done():
			p.stopAll()
			return
		case <-t.C:
		case <-changed:
		}
	}
}

// tick renews this poller's leases, drops queues that are gone, and takes
// (or gives up) queues towards an even share among live pollers.
func (p *poller) tick() {
	ctx := p.s.ctx
	queues := p.s.queueList()
	byName := make(map[string]queue, len(queues))
	for _, q := range queues {
		byName[q.name] = q
	}
	p.mu.Lock()
	held := make([]string, 0, len(p.runs))
	for name := range p.runs {
		held = append(held, name)
	}
	p.mu.Unlock()
	for _, name := range held {
		if _, ok := byName[name]; !ok {
			p.stop(name)
			p.l.Release(ctx, name)
			continue
		}
		if !p.l.Hold(ctx, name) {
			p.s.log.Info("async: poller lost its lease", "queue", name, "poller", p.l.ID)
			p.stop(name)
		}
	}

	if len(queues) == 0 {
		return
	}
	live := p.s.livePollers(ctx)
	share := (len(queues) + live - 1) / live
	p.mu.Lock()
	n := len(p.runs)
	p.mu.Unlock()
	if n > share {
		// Give one queue back per round; a poller with less takes it.
		p.mu.Lock()
		var name string
		for name = range p.runs {
			break
		}
		p.mu.Unlock()
		p.stop(name)
		p.l.Release(ctx, name)
		return
	}
	start := rand.IntN(len(queues))
	for i := range queues {
		if n >= share {
			break
		}
		q := queues[(start+i)%len(queues)]
		p.mu.Lock()
		_, running := p.runs[q.name]
		p.mu.Unlock()
		if running || !p.l.Hold(ctx, q.name) {
			continue
		}
		p.start(q)
		n++
	}
}

func (p *poller) start(q queue) {
	ctx, cancel := context.WithCancel(p.s.ctx)
	cl := &consumeLoop{cancel: cancel, done: make(chan struct{})}
	p.mu.Lock()
	p.runs[q.name] = cl
	p.mu.Unlock()
	go func() {
		defer close(cl.done)
		p.consume(ctx, q)
	}()
}

func (p *poller) stop(name string) {
	p.mu.Lock()
	cl := p.runs[name]
	delete(p.runs, name)
	p.mu.Unlock()
	if cl != nil {
		cl.cancel()
		<-cl.done
	}
}

func (p *poller) stopAll() {
	p.mu.Lock()
	names := make([]string, 0, len(p.runs))
	for n := range p.runs {
		names = append(names, n)
	}
	p.mu.Unlock()
	for _, n := range names {
		p.stop(n)
	}
}

// releaseAll gives up every lease (after the consume loops stopped).
func (p *poller) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.l.ReleaseAll(ctx)
}

// livePollers counts the pollers holding leases (in every process), and at
// least this process's own.
func (s *Service) livePollers(ctx context.Context) int {
	holders := map[string]bool{}
	if keys, err := s.leases.ListKeys(ctx); err == nil {
		for k := range keys.Keys() {
			if e, err := s.leases.Get(ctx, k); err == nil && strings.HasPrefix(string(e.Value()), "poller-") {
				holders[string(e.Value())] = true
			}
		}
	}
	return max(len(holders), len(s.pollers))
}

// consume fetches a queue's events while this poller holds its lease.
func (p *poller) consume(ctx context.Context, q queue) {
	s := p.s
	var cons jetstream.Consumer
	for cons == nil {
		c, err := s.stream.Consumer(ctx, q.name)
		if err == nil {
			cons = c
			break
		}
		if ctx.Err() != nil {
			return
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.log.Warn("async: queue", "queue", q.name, "err", err)
		}
		sleep(ctx, time.Second)
	}
	want := 1
	for ctx.Err() == nil {
		if p.stalled.Load() {
			sleep(ctx, 50*time.Millisecond)
			continue
		}
		// Fetch no more events than this process has room to run now. Slots
		// are taken per event as it arrives: none is held while a fetch
		// waits for events, which would keep other queues' events waiting.
		// Fetching is not held back for sync invokes: each event is, by its age.
		free := s.waitFree(ctx, time.Time{})
		if free == 0 {
			return
		}
		n := min(want, free, maxBatch)
		if !q.shared {
			// A dedicated queue runs its function only as fast as the
			// function's concurrency allows: no fetch without room.
			room, wait := s.capacity(ctx, q.account, q.function)
			if room <= 0 {
				sleep(ctx, wait)
				continue
			}
			n = min(n, room)
		}
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				return
			}
			if ctx.Err() == nil {
				s.log.Warn("async: fetch", "queue", q.name, "err", err)
				sleep(ctx, 200*time.Millisecond)
			}
			continue
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if !s.acquireSlot(ctx, m) {
				m.Nak() // the poller stops: let another have it now
				continue
			}
			s.work.Add(1)
			go func() {
				defer s.work.Done()
				defer s.releaseSlot()
				s.handle(q, m)
			}()
		}
		cancel()
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) &&
			!errors.Is(err, nats.ErrTimeout) {
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				return
			}
			s.log.Warn("async: fetch", "queue", q.name, "err", err)
			sleep(ctx, 200*time.Millisecond)
		}
		// Ask for more while events keep coming, for one when they stop.
		switch {
		case got == n:
			want = min(2*n, maxBatch)
		case got == 0:
			want = 1
		default:
			want = got + 1
		}
	}
}

// syncQuiet is how long after the last request seen async invokes stay
// held back.
const syncQuiet = 50 * time.Millisecond

// limit is how many async invokes this process may run now, for an event
// queued age ago. While the machine's CPUs are busy: none for an event
// younger than MaxDeferral while sync invokes are served (they come
// first; the event waits in its queue), and ConcurrencyUnderSync while
// only enqueues are, so that running queued events does not slow down
// answering requests.
func (s *Service) limit(age time.Duration) int {
	now := time.Now().UnixNano()
	switch {
	case s.cfg.InvokesInFlight != nil && s.cfg.InvokesInFlight() > int(s.invoking.Load()):
		s.lastSync.Store(now)
		s.lastRequest.Store(now)
	case s.enqueuing.Load() > 0:
		s.lastRequest.Store(now)
	}
	switch {
	case !s.cpu.contended():
		return s.tune.Concurrency
	case now-s.lastSync.Load() < int64(syncQuiet) && age < s.tune.MaxDeferral:
		return 0
	case now-s.lastRequest.Load() < int64(syncQuiet):
		return s.tune.ConcurrencyUnderSync
	}
	return s.tune.Concurrency
}

// waitFree waits until this process may start an async invoke of an
// event queued at the given time (zero: long ago) and says how many it may
// start now (taking none); 0 when ctx ended.
func (s *Service) waitFree(ctx context.Context, queued time.Time) int {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		limit := s.limit(time.Since(queued))
		s.slotMu.Lock()
		free, wake := limit-s.slotUsed, s.slotWake
		s.slotMu.Unlock()
		if free > 0 {
			return free
		}
		// The limit changes with the load of requests: look again soon.
		if t == nil {
			t = time.NewTimer(5 * time.Millisecond)
		} else {
			t.Reset(5 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return 0
		case <-wake:
		case <-t.C:
		}
	}
}

// acquireSlot takes a slot for event m, waiting for one (and telling
// JetStream that m is being worked on meanwhile); false when ctx ended.
func (s *Service) acquireSlot(ctx context.Context, m jetstream.Msg) bool {
	var stop func()
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	var queued time.Time
	if md, err := m.Metadata(); err == nil {
		queued = md.Timestamp
	}
	for {
		limit := s.limit(time.Since(queued))
		s.slotMu.Lock()
		if s.slotUsed < limit {
			s.slotUsed++
			s.slotMu.Unlock()
			return true
		}
		s.slotMu.Unlock()
		if stop == nil {
			stop = s.keepAlive(m)
		}
		if s.waitFree(ctx, queued) == 0 {
			return false
		}
	}
}

func (s *Service) releaseSlot() {
	s.slotMu.Lock()
	s.slotUsed--
	close(s.slotWake)
	s.slotWake = make(chan struct{})
	s.slotMu.Unlock()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
