package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/kiln-dev/kiln/internal/placement"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// part is this member's replica of one partition.
type part struct {
	m  *Member
	id int

	mu  sync.Mutex
	st  *partition.State
	gen uint64 // bumps on every rebuild; stale journal deliveries are dropped
	// cons tails the journal (followers apply; the leader ignores it).
	cons jetstream.ConsumeContext

	// Leadership. held: this member holds the lease (leading, or catching
	// up to lead); leading: it serves.
	held, leading bool
	epoch         uint64
	myRev         uint64
	renewed       time.Time
	cancelLead    context.CancelFunc
	rpc           *nats.Subscription
	inflight      map[string]bool // acquire tokens being decided (a re-sent request waits)
	lastSeq       uint64          // journal sequence the next append expects
	queue         []*item
	kick          chan struct{}
	seq           int
	lastPurge     uint64
	// SingleOwner mode: the state this member held when it last led, and
	// the journal position then; it is this host's memory, kept if the
	// member leads again with nobody having led in between.
	owned     *partition.State
	ownedLast uint64
	// Provisioned concurrency wanted in this partition (every member),
	// and the leader's reconciling, one at a time.
	provisions  map[partition.Key]*provision
	reconciling sync.Mutex

	// The lease bucket as last seen.
	present bool
	kvRev   uint64
	kvLease Lease
	seen    time.Time
}

type item struct {
	recs []partition.Record
	done chan error
}

// follow (re)builds the state by replaying the journal from its first
// message (the oldest live lease's record, once trimmed) and keeps tailing.
func (p *part) follow() error {
	p.mu.Lock()
	if p.leading { // re-elected while a rebuild was retrying
		p.mu.Unlock()
		return nil
	}
	p.gen++
	gen := p.gen
	p.st = partition.New()
	old := p.cons
	p.cons = nil
	p.mu.Unlock()
	if old != nil {
		// Not waited for: a stuck tail's Stop waits on the library's
		// re-creation of its consumer (up to 20 s), and the stale gen
		// drops whatever it still delivers.
		go old.Stop()
	}
	c, err := p.m.js.OrderedConsumer(p.m.ctx, StreamName(p.id), jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("journal consumer of partition %d: %w", p.id, err)
	}
	cc, err := c.Consume(func(msg jetstream.Msg) { p.onJournal(gen, msg) },
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			p.m.cfg.Logger.Warn("assignment: journal tail", "partition", p.id, "err", err)
		}))
	if err != nil {
		return fmt.Errorf("journal consumer of partition %d: %w", p.id, err)
	}
	p.mu.Lock()
	if p.gen == gen {
		p.cons = cc
		cc = nil
	}
	p.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
	return nil
}

// refollow rebuilds the state after a step-down. It keeps trying while
// JetStream is unreachable (a member cut off from the cluster steps down
// exactly then), so the member rejoins as a follower once it is back.
func (p *part) refollow() {
	for wait := 50 * time.Millisecond; p.m.ctx.Err() == nil; wait = min(2*wait, time.Second) {
		p.mu.Lock()
		gen := p.gen
		p.mu.Unlock()
		err := p.follow()
		if err == nil {
			return
		}
		p.m.cfg.Logger.Warn("assignment: rebuilding partition", "partition", p.id, "err", err)
		select {
		case <-p.m.ctx.Done():
			return
		case <-time.After(wait):
		}
		p.mu.Lock()
		newer := p.gen > gen+1 // another step-down's refollow took over
		p.mu.Unlock()
		if newer {
			return
		}
	}
}

func (p *part) onJournal(gen uint64, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	seq := meta.Sequence.Stream
	var recs []partition.Record
	if err := json.Unmarshal(msg.Data(), &recs); err != nil {
		p.m.cfg.Logger.Error("assignment: undecodable journal message", "partition", p.id, "seq", seq, "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.gen || p.leading || seq <= p.st.Applied {
		return // the leader's state is ahead of the journal it wrote
	}
	if p.st.Applied != 0 && seq > p.st.Applied+1 {
		// The leader purged messages this member had not read yet (it
		// lagged behind the trim point): records about environments are
		// missing, so rebuild from the journal's new first message.
		p.m.cfg.Logger.Warn("assignment: journal gap, rebuilding", "partition", p.id, "applied", p.st.Applied, "next", seq)
		p.gen++
		go p.refollow()
		return
	}
	if err := p.st.Apply(seq, recs...); err != nil {
		p.m.cfg.Logger.Warn("assignment: journal record skipped", "partition", p.id, "seq", seq, "err", err)
	}
}

// elect follows the partition's lease and campaigns when it lapses.
func (p *part) elect() {
	defer p.m.wg.Done()
	ctx := p.m.ctx
	w, err := p.m.kv.Watch(ctx, leaseKey(p.id))
	if err != nil {
		p.m.cfg.Logger.Error("assignment: lease watch", "partition", p.id, "err", err)
		return
	}
	defer w.Stop()
	start := time.Now()
	t := time.NewTicker(p.m.cfg.Lease / 6)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			p.mu.Lock()
			p.kvRev, p.seen = e.Revision(), time.Now()
			var l Lease
			p.present = e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &l) == nil
			if p.present {
				p.kvLease = l
			}
			if p.held && (!p.present || l.Member != p.m.cfg.Member || l.Epoch != p.epoch) {
				p.stepDownLocked("lease taken by " + l.Member)
				go p.refollow()
			}
			p.mu.Unlock()
		case <-t.C:
			p.tick(start)
		}
	}
}

// startGrace is how long a member leaves a vacant partition to the member
// it prefers.
const startGrace = 5 * time.Second

func (p *part) tick(start time.Time) {
	cfg := p.m.cfg
	p.mu.Lock()
	if p.held {
		rev, epoch := p.myRev, p.epoch
		p.mu.Unlock()
		val, _ := json.Marshal(Lease{Member: cfg.Member, Zone: cfg.Zone, Epoch: epoch, PID: os.Getpid()})
		ctx, cancel := context.WithTimeout(p.m.ctx, cfg.Lease/2)
		newRev, err := p.m.kv.Update(ctx, leaseKey(p.id), val, rev)
		cancel()
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.held || p.epoch != epoch {
			return
		}
		switch {
		case err == nil:
			p.myRev, p.renewed = newRev, time.Now()
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), time.Since(p.renewed) > cfg.Lease:
			p.stepDownLocked("lease renewal failed: " + err.Error())
			go p.refollow()
		}
		return
	}
	// A vacant partition (a new cluster's) goes to its preferred member
	// first, spreading leaders over zones; another takes it only once the
	// preferred member has had time to start, which on a loaded host is
	// seconds after the others (a lease of 2 of them let the first members
	// up take every partition). A lapsed lease goes to whoever is quickest.
	preferred := p.id%cfg.Members == cfg.Index
	lapsed := p.present && time.Since(p.seen) > cfg.Lease
	vacant := !p.present && (preferred || time.Since(start) > max(2*cfg.Lease, startGrace)) && time.Since(p.seen) > cfg.Lease/4
	if (!lapsed && !vacant) || p.cons == nil { // not tailing the journal: could not catch up
		p.mu.Unlock()
		return
	}
	epoch := max(p.kvLease.Epoch, p.st.Epoch) + 1
	present, rev := p.present, p.kvRev
	p.mu.Unlock()
	val, _ := json.Marshal(Lease{Member: cfg.Member, Zone: cfg.Zone, Epoch: epoch, PID: os.Getpid()})
	ctx, cancel := context.WithTimeout(p.m.ctx, cfg.Lease/2)
	defer cancel()
	var err error
	if present {
		rev, err = p.m.kv.Update(ctx, leaseKey(p.id), val, rev)
	} else if rev == 0 {
		rev, err = p.m.kv.Create(ctx, leaseKey(p.id), val)
	} else {
		rev, err = p.m.kv.Update(ctx, leaseKey(p.id), val, rev) // after a delete marker
	}
	if err != nil {
		return // another member won
	}
	p.mu.Lock()
	p.held, p.epoch, p.myRev, p.renewed = true, epoch, rev, time.Now()
	p.mu.Unlock()
	go p.lead(epoch)
}

// lead takes the partition at epoch: catch up with the journal, append the
// lead record (fenced on the last sequence this member applied), then serve.
func (p *part) lead(epoch uint64) {
	cfg := p.m.cfg
	began := time.Now()
	stream, err := p.m.js.Stream(p.m.ctx, StreamName(p.id))
	for attempt := 0; err == nil; attempt++ {
		var info *jetstream.StreamInfo
		info, err = stream.Info(p.m.ctx)
		if err != nil {
			break
		}
		last := info.State.LastSeq
		if cfg.Mode == SingleOwner {
			// The baseline: the owner's memory was the only copy.
			p.mu.Lock()
			p.gen++
			if p.owned != nil && p.ownedLast == last {
				p.st = p.owned
			} else {
				p.st = partition.New()
				p.st.Applied, p.st.Base = last, last
			}
			p.mu.Unlock()
		}
		p.mu.Lock()
		from := p.st.Applied
		p.mu.Unlock()
		caught := false
		for deadline := time.Now().Add(5 * time.Second); !caught && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			p.mu.Lock()
			caught = p.st.Applied >= last
			p.mu.Unlock()
		}
		p.mu.Lock()
		if !p.held || p.epoch != epoch {
			p.mu.Unlock()
			return
		}
		expected := p.st.Applied
		p.mu.Unlock()
		if !caught {
			// An append fenced short of the journal's end is refused, and
			// retrying it while holding the lease left the partition
			// unserved. A tail that made no progress is stuck (its consumer
			// went with a NATS node; the library re-creates it only after
			// missed heartbeats, with backoff): replay on a new one.
			if attempt >= 20 {
				err = fmt.Errorf("journal tail at %d, end at %d", expected, last)
				break
			}
			if expected == from {
				cfg.Logger.Warn("assignment: journal tail stalled, rebuilding", "partition", p.id, "applied", expected, "last", last)
				if err = p.follow(); err != nil {
					break
				}
			}
			continue
		}
		lead := []partition.Record{{Op: partition.OpLead, Epoch: epoch, Leader: cfg.Member}}
		b, _ := json.Marshal(lead)
		ctx, cancel := context.WithTimeout(p.m.ctx, 5*time.Second)
		ack, perr := p.m.js.Publish(ctx, "kiln.journal."+strconv.Itoa(p.id), b, jetstream.WithExpectLastSequence(expected))
		cancel()
		if perr != nil {
			if attempt < 20 && p.m.ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
				continue // someone appended after us: catch up and retry
			}
			err = perr
			break
		}
		p.mu.Lock()
		if !p.held || p.epoch != epoch {
			p.mu.Unlock()
			return
		}
		if p.st.Applied < ack.Sequence {
			p.st.Apply(ack.Sequence, lead...)
		}
		p.leading, p.lastSeq = true, ack.Sequence
		lctx, cancelLead := context.WithCancel(p.m.ctx)
		p.cancelLead = cancelLead
		p.kick = make(chan struct{}, 1)
		go p.appender(lctx, epoch, p.kick)
		go p.housekeep(lctx)
		var stale []partition.Env
		for _, e := range p.st.Envs() {
			if e.Status == partition.Initializing {
				stale = append(stale, e) // its creator died mid-create
			}
		}
		p.rpc, err = cfg.NC.Subscribe(Subject(p.id, cfg.Member), func(msg *nats.Msg) { go p.serve(msg) })
		if err != nil {
			p.stepDownLocked("subscribe: " + err.Error())
			p.mu.Unlock()
			break
		}
		counts := p.st.Count()
		p.mu.Unlock()
		cfg.Logger.Info("assignment: leading", "partition", p.id, "epoch", epoch, "member", cfg.Member,
			"took", time.Since(began), "idle", counts[partition.Idle], "busy", counts[partition.Busy], "mode", cfg.Mode)
		if len(stale) > 0 {
			p.kill(stale, true)
		}
		return
	}
	cfg.Logger.Warn("assignment: could not take partition", "partition", p.id, "epoch", epoch, "err", err)
	p.mu.Lock()
	if p.epoch == epoch {
		p.stepDownLocked("lead failed")
	}
	p.mu.Unlock()
	p.refollow()
}

// stepDownLocked stops serving; the caller rebuilds the state (refollow),
// since it may hold tentative changes that never reached the journal.
func (p *part) stepDownLocked(why string) {
	if p.held {
		p.m.cfg.Logger.Info("assignment: stepping down", "partition", p.id, "epoch", p.epoch, "member", p.m.cfg.Member, "why", why)
	}
	if p.leading && p.m.cfg.Mode == SingleOwner {
		p.owned, p.ownedLast = p.st, p.lastSeq
	}
	p.held, p.leading = false, false
	if p.rpc != nil {
		// Drain, not Unsubscribe: requests the server routed here before
		// it saw the unsubscribe are still answered ("retry", since this
		// member no longer leads) instead of being dropped by the client
		// library, which left their senders waiting out their deadline.
		if p.rpc.Drain() != nil {
			p.rpc.Unsubscribe()
		}
		p.rpc = nil
	}
	if p.cancelLead != nil {
		p.cancelLead()
		p.cancelLead = nil
	}
	for _, it := range p.queue {
		it.done <- errNotLeader
	}
	p.queue = nil
	p.gen++ // the journal is replayed from scratch by refollow
}

// proposeLocked applies recs tentatively and queues them for the journal;
// the returned channel says whether they were appended. Nothing may act on
// them before that.
func (p *part) proposeLocked(recs ...partition.Record) (<-chan error, error) {
	if !p.leading {
		return nil, errNotLeader
	}
	now := time.Now().UnixNano()
	for i := range recs {
		recs[i].Epoch, recs[i].Leader = p.epoch, p.m.cfg.Member
		if recs[i].Env != nil {
			recs[i].Env.Lease = now
		}
	}
	for _, r := range recs {
		if err := p.st.Check(r); err != nil {
			// Several records about one env in one proposal are checked in
			// order by Apply; a single bad one fails the proposal.
			if len(recs) == 1 {
				return nil, err
			}
		}
	}
	if err := p.st.Apply(0, recs...); err != nil && len(recs) == 1 {
		return nil, err
	}
	done := make(chan error, 1)
	p.queue = append(p.queue, &item{recs: recs, done: done})
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return done, nil
}

// appender writes queued records to the journal, many per message (group
// commit), each append fenced on the previous one's sequence.
func (p *part) appender(ctx context.Context, epoch uint64, kick chan struct{}) {
	subj := "kiln.journal." + strconv.Itoa(p.id)
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		p.mu.Lock()
		items, expected := p.queue, p.lastSeq
		p.queue = nil
		p.mu.Unlock()
		if len(items) == 0 {
			continue
		}
		var recs []partition.Record
		for _, it := range items {
			recs = append(recs, it.recs...)
		}
		b, _ := json.Marshal(recs)
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := p.m.js.Publish(actx, subj, b, jetstream.WithExpectLastSequence(expected))
		cancel()
		p.mu.Lock()
		if err != nil || !p.leading || p.epoch != epoch {
			if err == nil {
				err = errNotLeader
			}
			p.stepDownLocked("append failed: " + err.Error())
			p.mu.Unlock()
			for _, it := range items {
				it.done <- errNotLeader
			}
			p.refollow()
			return
		}
		p.st.Commit(ack.Sequence, recs)
		p.lastSeq = ack.Sequence
		p.mu.Unlock()
		for _, it := range items {
			it.done <- nil
		}
	}
}

// commit proposes recs and waits until they are in the journal.
func (p *part) commit(recs ...partition.Record) error {
	p.mu.Lock()
	return p.commitLocked(recs...)
}

// commitLocked is commit with p.mu held, which it unlocks before waiting.
func (p *part) commitLocked(recs ...partition.Record) error {
	done, err := p.proposeLocked(recs...)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return <-done
}

// housekeep reaps idle environments whose lease ran out, renews old
// leases and trims the journal behind the oldest.
func (p *part) housekeep(ctx context.Context) {
	cfg := p.m.cfg
	every := min(cfg.IdleTimeout/4, cfg.RenewAge/4, time.Second)
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var doomed []partition.Env
			var renew []partition.Record
			p.mu.Lock()
			for _, e := range p.st.Envs() {
				switch {
				case e.Status == partition.Idle && !e.Provisioned && now.Sub(time.Unix(0, e.Used)) > cfg.IdleTimeout:
					doomed = append(doomed, e)
					p.m.causes.Lost(e.Key.Account, e.Key.Function, assignment.CauseIdleReap, 1)
				case e.Status == partition.Busy && e.Timeout > 0 &&
					now.Sub(time.Unix(0, e.Used)) > time.Duration(e.Timeout)*time.Second+cfg.OrphanGrace:
					// The worker ended the invoke at its timeout; the
					// frontend that held it never released it.
					doomed = append(doomed, e)
				case e.Seq != 0 && now.Sub(time.Unix(0, e.Lease)) > cfg.RenewAge:
					renew = append(renew, partition.Transition(partition.OpRenew, 0, e, ""))
				}
			}
			p.mu.Unlock()
			if len(doomed) > 0 {
				p.kill(doomed, true)
			}
			p.reconcile()
			if len(renew) > 0 {
				if p.commit(renew...) != nil {
					return
				}
			}
			p.mu.Lock()
			tp, leading := p.st.TrimPoint(), p.leading
			purge := leading && tp > p.lastPurge+1
			p.mu.Unlock()
			if purge {
				if s, err := p.m.js.Stream(ctx, StreamName(p.id)); err == nil {
					if err := s.Purge(ctx, jetstream.WithPurgeSequence(tp)); err == nil {
						p.mu.Lock()
						p.lastPurge = tp
						p.mu.Unlock()
					}
				}
			}
		}
	}
}

// kill journals envs as dead, then destroys them on their workers.
func (p *part) kill(envs []partition.Env, destroy bool) {
	recs := make([]partition.Record, 0, len(envs))
	for _, e := range envs {
		recs = append(recs, partition.Transition(partition.OpDead, 0, e, ""))
	}
	if p.commit(recs...) != nil || !destroy {
		return
	}
	for _, e := range envs {
		go p.destroy(e)
	}
}

func (p *part) destroy(e partition.Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.m.cfg.Workers.Destroy(ctx, WorkerRef{ID: e.Worker, Zone: e.Zone, Addr: e.Addr}, e.ID)
	p.m.cfg.Placer.Release(e.Worker, placement.Request{Function: e.Key.Account + "/" + e.Key.Function, MemoryMB: e.MemoryMB})
}

// retireWorker ends (OpDead: the worker is gone) or drains (OpDrain) a
// worker's environments.
func (p *part) retireWorker(workerID string, op partition.Op) {
	var idle, rest []partition.Env
	p.mu.Lock()
	if !p.leading {
		p.mu.Unlock()
		return
	}
	for _, e := range p.st.Envs() {
		if e.Worker != workerID {
			continue
		}
		if e.Status == partition.Idle || op == partition.OpDead {
			idle = append(idle, e)
		} else if e.Status != partition.Draining {
			rest = append(rest, e)
		}
	}
	p.mu.Unlock()
	if op == partition.OpDead {
		for _, e := range idle {
			p.m.causes.Lost(e.Key.Account, e.Key.Function, assignment.CauseFailover, 1)
		}
	}
	if len(idle) > 0 {
		p.kill(idle, op == partition.OpDrain)
	}
	if len(rest) > 0 {
		recs := make([]partition.Record, 0, len(rest))
		for _, e := range rest {
			recs = append(recs, partition.Transition(partition.OpDrain, 0, e, ""))
		}
		p.commit(recs...)
	}
}

func (p *part) serve(msg *nats.Msg) {
	var req Request
	var rep Reply
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		rep.Error = "bad request: " + err.Error()
	} else {
		switch req.Op {
		case "acquire":
			rep = p.acquire(req)
		case "release":
			rep = p.release(req)
		default:
			rep.Error = "unknown op " + req.Op
		}
	}
	rep.Leader = p.m.cfg.Member
	if req.Op == "acquire" && rep.Env != nil {
		p.m.handedOut.Add(1)
	}
	b, _ := json.Marshal(rep)
	msg.Respond(b)
}

func retry(err error) Reply { return Reply{Retry: true, Error: err.Error()} }

func (p *part) acquire(req Request) Reply {
	cfg := p.m.cfg
	if req.Function == nil || req.Token == "" {
		return Reply{Error: "acquire needs a function and a token"}
	}
	fn := req.Function
	key := partition.Key{Account: req.Account, Function: fn.FunctionName, Version: fn.Version, Revision: fn.RevisionId}
	p.mu.Lock()
	if !p.leading || time.Since(p.renewed) > cfg.Lease {
		p.mu.Unlock()
		return retry(errNotLeader)
	}
	if p.inflight[req.Token] {
		// The same request, re-sent while its first copy is still being
		// decided: answering from the tentative state could hand out an
		// environment whose acquire is not yet in the journal.
		p.mu.Unlock()
		return retry(errors.New("request in progress"))
	}
	if e, ok := p.st.ByToken(req.Token); ok { // a retried request (journaled)
		p.mu.Unlock()
		if e.Status == partition.Busy {
			return Reply{Env: &e}
		}
		return retry(errors.New("environment still initializing"))
	}
	if p.inflight == nil {
		p.inflight = map[string]bool{}
	}
	p.inflight[req.Token] = true
	defer func() {
		p.mu.Lock()
		delete(p.inflight, req.Token)
		p.mu.Unlock()
	}()
	e, ok := p.st.PickIdle(key, func(e *partition.Env) bool { return e.Provisioned })
	if !ok {
		e, ok = p.st.PickIdle(key, nil)
	}
	if ok {
		rec := partition.Transition(partition.OpAcquire, 0, e, req.Token)
		rec.Env.Used = time.Now().UnixNano()
		if err := p.commitLocked(rec); err != nil {
			return retry(err)
		}
		return Reply{Env: rec.Env}
	}
	p.mu.Unlock()

	if cfg.Scale != nil {
		if err := cfg.Scale.AllowNewEnvironment(counting.Key{Account: req.Account, Function: fn.FunctionName}); err != nil {
			var ae *api.Error
			if errors.As(err, &ae) {
				return Reply{APIError: ae}
			}
			return Reply{Error: err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(p.m.ctx, 2*time.Minute)
	defer cancel()
	started, info, err := p.start(ctx, req.Account, fn, req.Token, false)
	var ae *api.Error
	var ie *invoke.InitError
	var again *retryable
	switch {
	case err == nil:
		return Reply{Env: started.Env, Cold: true, Cause: p.m.causes.Cold(req.Account, fn.FunctionName), InitDuration: info.InitDuration, Phases: info.Phases}
	case errors.As(err, &ae):
		return Reply{APIError: ae}
	case errors.As(err, &ie):
		return Reply{InitError: ie}
	case errors.As(err, &again):
		return retry(again.err)
	}
	return Reply{Error: err.Error()}
}

// retryable is a failure before anything started: the caller may send the
// same request again.
type retryable struct{ err error }

func (r *retryable) Error() string { return r.err.Error() }

// start places a new environment of fn, journals it, has its worker
// initialize it and journals it busy with token. Errors: a placement
// *api.Error (no capacity), the function's *invoke.InitError, *retryable,
// or another failure.
func (p *part) start(ctx context.Context, account string, fn *api.FunctionConfiguration, token string, provisioned bool) (partition.Record, *invoke.EnvInfo, error) {
	cfg := p.m.cfg
	key := partition.Key{Account: account, Function: fn.FunctionName, Version: fn.Version, Revision: fn.RevisionId}
	preq := placement.Request{Function: account + "/" + fn.FunctionName, MemoryMB: fn.MemorySize}
	placing := time.Now()
	ref, err := cfg.Placer.Place(ctx, preq)
	placed := time.Since(placing)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return partition.Record{}, nil, ae
		}
		return partition.Record{}, nil, fmt.Errorf("placement: %w", err)
	}
	p.mu.Lock()
	p.seq++
	env := partition.Env{ID: fmt.Sprintf("%s.p%d.e%d.%d", cfg.Member, p.id, p.epoch, p.seq), Worker: ref.ID, Zone: ref.Zone,
		Addr: ref.Addr, Key: key, MemoryMB: fn.MemorySize, Timeout: fn.Timeout, Provisioned: provisioned}
	create := partition.Transition(partition.OpCreate, 0, env, token)
	if err := p.commitLocked(create); err != nil {
		cfg.Placer.Release(ref.ID, preq)
		return partition.Record{}, nil, &retryable{err}
	}
	spec := invoke.EnvSpec{Account: account, Function: *fn}
	if provisioned {
		spec.InitType = "provisioned-concurrency"
	}
	info, err := cfg.Workers.Create(ctx, ref, env.ID, spec)
	if err != nil {
		p.kill([]partition.Env{*create.Env}, false)
		cfg.Placer.Release(ref.ID, preq)
		var ie *invoke.InitError
		if errors.As(err, &ie) {
			return partition.Record{}, nil, ie
		}
		var dial *net.OpError
		if errors.As(err, &dial) && dial.Op == "dial" {
			// The worker is gone and placement has not noticed yet (it
			// waits for missed heartbeats). Nothing started, so the caller
			// may safely try again, after a pause that lets placement catch up.
			time.Sleep(100 * time.Millisecond)
			return partition.Record{}, nil, &retryable{fmt.Errorf("worker %s unreachable: %w", ref.ID, err)}
		}
		return partition.Record{}, nil, fmt.Errorf("create environment on %s: %w", ref.ID, err)
	}
	info.Phases.Placement = placed
	p.mu.Lock()
	cur, ok := p.st.Env(env.ID)
	if !ok {
		p.mu.Unlock()
		go p.destroy(env)
		return partition.Record{}, nil, &retryable{errNotLeader}
	}
	if cur.Status == partition.Draining {
		// Its worker began draining while it initialized: retire it
		// unused, and the re-sent request is placed elsewhere.
		p.mu.Unlock()
		p.kill([]partition.Env{cur}, true)
		return partition.Record{}, nil, &retryable{errors.New("worker draining")}
	}
	started := partition.Transition(partition.OpStarted, 0, cur, token)
	started.Env.Used = time.Now().UnixNano()
	if err := p.commitLocked(started); err != nil {
		return partition.Record{}, nil, &retryable{err} // the next leader ends the initializing env
	}
	return started, info, nil
}

func (p *part) release(req Request) Reply {
	p.mu.Lock()
	if !p.leading {
		p.mu.Unlock()
		return retry(errNotLeader)
	}
	e, ok := p.st.Env(req.Env)
	if !ok || e.Token != req.Token || e.Status == partition.Idle || e.Status == partition.Initializing {
		p.mu.Unlock()
		return Reply{} // already released (a retry), or already dead
	}
	if req.Reusable && e.Status == partition.Busy {
		rec := partition.Transition(partition.OpRelease, 0, e, req.Token)
		rec.Env.Used = time.Now().UnixNano()
		if err := p.commitLocked(rec); err != nil {
			return retry(err)
		}
		return Reply{}
	}
	p.mu.Unlock()
	p.kill([]partition.Env{e}, true)
	return Reply{}
}
