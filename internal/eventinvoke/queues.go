package eventinvoke

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/lease"
	"github.com/nats-io/nats.go/jetstream"
)

// A dedicated queue is active (new events go to it) or retiring (new
// events go back to the shared queue while it drains, then it is removed).
const (
	stateActive   = "active"
	stateRetiring = "retiring"
)

// queueState is a dedicated queue's entry in the registry (bucket
// kiln-async-queues, key d.ACCOUNT.FUNCTION).
type queueState struct {
	Account  string    `json:"account"`
	Function string    `json:"function"`
	State    string    `json:"state"`
	Since    time.Time `json:"since"`
}

func registryKey(account, function string) string { return "d." + account + "." + function }

// queue is one queue as pollers see it.
type queue struct {
	name              string // consumer name, also the lease key
	shared            bool
	account, function string // of a dedicated queue
}

// queueList is every queue pollers must serve: the shared ones and every
// dedicated one in the registry, retiring ones included (they drain).
func (s *Service) queueList() []queue {
	out := make([]queue, 0, s.tune.Shards+8)
	for i := range s.tune.Shards {
		out = append(out, queue{name: sharedConsumer(i), shared: true})
	}
	s.dedMu.RLock()
	for _, st := range s.dedicated {
		out = append(out, queue{name: dedicatedConsumer(st.Account, st.Function), account: st.Account, function: st.Function})
	}
	s.dedMu.RUnlock()
	return out
}

// activeDedicated reports whether a function has an active dedicated queue.
func (s *Service) activeDedicated(account, function string) bool {
	s.dedMu.RLock()
	st, ok := s.dedicated[account+"/"+function]
	s.dedMu.RUnlock()
	return ok && st.State == stateActive
}

// watchRegistry loads the registry and follows it until the service ends.
func (s *Service) watchRegistry(ctx context.Context) error {
	w, err := s.queues.WatchAll(ctx)
	if err != nil {
		return err
	}
	// The initial values end with a nil entry; wait for them so that
	// Enqueue routes correctly from the first event.
	loaded := make(chan struct{})
	go func() {
		defer w.Stop()
		initial := true
		for {
			select {
			case <-s.ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(loaded)
					}
					continue
				}
				s.applyRegistry(e)
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) applyRegistry(e jetstream.KeyValueEntry) {
	_, rest, _ := strings.Cut(e.Key(), ".")
	account, function, ok := strings.Cut(rest, ".")
	if !ok {
		return
	}
	k := account + "/" + function
	s.dedMu.Lock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.dedicated, k)
	} else {
		var st queueState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			s.dedMu.Unlock()
			s.log.Warn("async queue registry: bad entry", "key", e.Key(), "err", err)
			return
		}
		s.dedicated[k] = st
	}
	s.dedMu.Unlock()
	s.notifyChanged()
}

// manage is the queue manager: one per cluster at a time (it holds the
// "manager" lease), it watches backlogs, dedicates queues to heavy functions
// and retires idle dedicated queues.
func (s *Service) manage() {
	defer s.wg.Done()
	l := &lease.Holder{KV: s.leases, ID: "manager-" + api.NewUUID(), TTL: s.tune.LeaseTTL}
	idle := map[string]time.Time{}
	tick := min(s.tune.ManagerInterval, s.tune.LeaseTTL/3)
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Time{}
	for {
		if l.Hold(s.ctx, "manager") && time.Since(last) >= s.tune.ManagerInterval {
			last = time.Now()
			if err := s.balance(s.ctx, idle); err != nil && s.ctx.Err() == nil {
				s.log.Warn("async queue manager", "err", err)
			}
		}
		select {
		case <-s.ctx.Done():
			l.Release(context.Background(), "manager")
			return
		case <-t.C:
		}
	}
}

// backlogs counts queued events per function on the subjects under prefix
// (kiln.events.s.SHARD.ACCOUNT.FUNCTION or kiln.events.d.ACCOUNT.FUNCTION).
func (s *Service) backlogs(ctx context.Context, prefix string) (map[[2]string]uint64, error) {
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, err
	}
	out := map[[2]string]uint64{}
	for subj, n := range info.State.Subjects {
		tok := strings.Split(strings.TrimPrefix(subj, prefix), ".")
		if prefix == sharedPrefix && len(tok) == 3 {
			tok = tok[1:]
		}
		if len(tok) == 2 {
			out[[2]string{tok[0], tok[1]}] += n
		}
	}
	return out, nil
}

// balance is one round of the queue manager.
func (s *Service) balance(ctx context.Context, idle map[string]time.Time) error {
	shared, err := s.backlogs(ctx, sharedPrefix)
	if err != nil {
		return err
	}
	for fn, n := range shared {
		if n >= uint64(s.tune.DedicateBacklog) && !s.activeDedicated(fn[0], fn[1]) {
			s.log.Info("async: dedicated queue", "account", fn[0], "function", fn[1], "backlog", n)
			if err := s.dedicate(ctx, fn[0], fn[1], stateActive); err != nil {
				return err
			}
		}
	}
	// Events on a dedicated subject without a registered queue (a crash
	// during retirement) get their queue back, retiring, so they drain.
	dedicated, err := s.backlogs(ctx, dedicPrefix)
	if err != nil {
		return err
	}
	s.dedMu.RLock()
	var orphans [][2]string
	for fn := range dedicated {
		if _, ok := s.dedicated[fn[0]+"/"+fn[1]]; !ok {
			orphans = append(orphans, fn)
		}
	}
	states := make([]queueState, 0, len(s.dedicated))
	for _, st := range s.dedicated {
		states = append(states, st)
	}
	s.dedMu.RUnlock()
	for _, fn := range orphans {
		if err := s.dedicate(ctx, fn[0], fn[1], stateRetiring); err != nil {
			return err
		}
	}

	now := time.Now()
	for _, st := range states {
		name := dedicatedConsumer(st.Account, st.Function)
		empty := dedicated[[2]string{st.Account, st.Function}] == 0
		if empty {
			c, err := s.stream.Consumer(ctx, name)
			if err == nil {
				ci, err := c.Info(ctx)
				if err != nil {
					return err
				}
				empty = ci.NumPending == 0 && ci.NumAckPending == 0
			} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return err
			}
		}
		if !empty {
			delete(idle, name)
			continue
		}
		if _, ok := idle[name]; !ok {
			idle[name] = now
		}
		switch {
		case st.State == stateActive && now.Sub(idle[name]) >= s.tune.RetireAfter:
			s.log.Info("async: retiring idle dedicated queue", "account", st.Account, "function", st.Function)
			if err := s.dedicate(ctx, st.Account, st.Function, stateRetiring); err != nil {
				return err
			}
		case st.State == stateRetiring && now.Sub(st.Since) >= s.tune.LeaseTTL && now.Sub(idle[name]) >= s.tune.LeaseTTL:
			// Every frontend has long seen "retiring" and sends this
			// function's events to its shared queue: remove the queue.
			if err := s.stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return err
			}
			if err := s.queues.Delete(ctx, registryKey(st.Account, st.Function)); err != nil {
				return err
			}
			s.dedMu.Lock()
			delete(s.dedicated, st.Account+"/"+st.Function)
			s.dedMu.Unlock()
			s.notifyChanged()
			delete(idle, name)
		}
	}
	return nil
}

// dedicate creates a function's dedicated queue (or changes its state).
func (s *Service) dedicate(ctx context.Context, account, function, state string) error {
	if _, err := s.ensureConsumer(ctx, dedicatedConsumer(account, function), dedicatedSubject(account, function)); err != nil {
		return err
	}
	st := queueState{Account: account, Function: function, State: state, Since: time.Now()}
	b, _ := json.Marshal(st)
	if _, err := s.queues.Put(ctx, registryKey(account, function), b); err != nil {
		return err
	}
	// Known here at once, not only when the registry's watch reports it,
	// so that the next round does not take the new queue for an orphan.
	s.dedMu.Lock()
	s.dedicated[account+"/"+function] = st
	s.dedMu.Unlock()
	s.notifyChanged()
	return nil
}

// QueueInfo describes one queue, for operators and tests.
type QueueInfo struct {
	Name              string // consumer of the KILN_EVENTS stream, and lease key
	Subject           string // filter subject
	Dedicated         bool
	Account, Function string // of a dedicated queue
	State             string // of a dedicated queue: active or retiring
}

// Queues lists the shared and dedicated queues.
func (s *Service) Queues() []QueueInfo {
	var out []QueueInfo
	for i := range s.tune.Shards {
		out = append(out, QueueInfo{Name: sharedConsumer(i), Subject: sharedPrefix + strconv.Itoa(i) + ".>"})
	}
	s.dedMu.RLock()
	defer s.dedMu.RUnlock()
	for _, st := range s.dedicated {
		out = append(out, QueueInfo{Name: dedicatedConsumer(st.Account, st.Function), Subject: dedicatedSubject(st.Account, st.Function),
			Dedicated: true, Account: st.Account, Function: st.Function, State: st.State})
	}
	return out
}

// Backlog is the number of events queued (waiting, in flight or waiting
// for a retry) in every queue.
func (s *Service) Backlog(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// Depth is the number of one function's events queued (waiting, in flight
// or waiting for a retry), in the shared queues and its dedicated one.
func (s *Service) Depth(ctx context.Context, account, function string) (uint64, error) {
	var n uint64
	for _, filter := range []string{sharedPrefix + "*." + account + "." + function, dedicatedSubject(account, function)} {
		info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			return 0, err
		}
		for _, m := range info.State.Subjects {
			n += m
		}
	}
	return n, nil
}
