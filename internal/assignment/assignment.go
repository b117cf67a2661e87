// Package assignment is the assignment service: it knows every execution
// environment, its state (initializing, idle, busy) and its worker. An invoke
// gets an idle warm environment of its function version when there is one;
// otherwise assignment asks placement for a worker and has it create one.
package assignment

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/placement"
)

// Worker is what assignment needs of a worker; *worker.Worker in one process,
// a network client across processes.
type Worker interface {
	ID() string
	Create(ctx context.Context, spec invoke.EnvSpec) (*invoke.EnvInfo, error)
	Invoke(ctx context.Context, envID string, inv *invoke.Invocation) (*invoke.Result, error)
	Destroy(ctx context.Context, envID string) error
}

// Placer chooses workers for new environments.
type Placer interface {
	Place(ctx context.Context, req placement.Request) (string, error)
	Release(workerID string, req placement.Request)
}

// ScaleLimiter rations new execution environments (the scaling rate).
type ScaleLimiter interface {
	AllowNewEnvironment(k counting.Key) error
}

// Config configures the service. Placement is required.
type Config struct {
	Placement Placer
	// Scale, when set, is asked before every new environment.
	Scale ScaleLimiter
	// IdleTimeout is how long an idle environment's lease lasts before it
	// is reaped; 0 means 10 minutes.
	IdleTimeout time.Duration
	Logger      *slog.Logger
}

// Service is the assignment service of one process.
type Service struct {
	cfg Config

	mu        sync.Mutex
	workers   map[string]Worker
	pools     map[poolKey]*pool
	causes    Causes
	stop      chan struct{}
	closeOnce sync.Once
}

// poolKey identifies environments that may serve each other's invokes: the
// same function version at the same revision of its configuration and code.
type poolKey struct {
	account, function, version, revision string
}

type pool struct {
	idle    []*Env // most recently used last
	busy    int
	leased  map[*Env]bool // busy environments, once started (the console lists them)
	retired bool          // stale: its environments end when their invokes do

	// Provisioned concurrency: environments initialized ahead of traffic,
	// served first and never reaped for idleness.
	idleProv    []*Env
	target      int // provisioned environments wanted
	provisioned int // provisioned environments alive or starting
	creating    int // of which still initializing
	prov        *Provision
	provErr     error // last init failure of this target, reported as FAILED

	// One report in flight per pool, and it reads the counts when it runs:
	// reports racing each other could leave a stale count as the last word.
	reporting, reportAgain bool
}

// Env is an execution environment leased to one invoke.
type Env struct {
	ID     string
	Worker Worker
	// Cold is true when the environment was created for this invoke, and
	// Cause says why (CauseScaleUp, ...).
	Cold         bool
	Cause        string
	InitDuration time.Duration
	Phases       invoke.ColdStart // of a cold start

	pool        *pool
	place       placement.Request
	lastUsed    time.Time
	provisioned bool
}

// New starts the service; Close stops its reaper.
func New(cfg Config) *Service {
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{cfg: cfg, workers: map[string]Worker{}, pools: map[poolKey]*pool{}, stop: make(chan struct{})}
	go s.reap()
	return s
}

// AddWorker makes a worker's environments reachable.
func (s *Service) AddWorker(w Worker) {
	s.mu.Lock()
	s.workers[w.ID()] = w
	s.mu.Unlock()
}

// Request asks for an environment for one invoke.
type Request struct {
	Account  string
	Function *api.FunctionConfiguration // the resolved version's configuration

	initType string // "" (on-demand) or "provisioned-concurrency"
}

func keyOf(req Request) poolKey {
	return poolKey{req.Account, req.Function.FunctionName, req.Function.Version, req.Function.RevisionId}
}

// Acquire returns an environment that is busy with the caller's invoke until
// Release. A failed init returns *invoke.InitError.
func (s *Service) Acquire(ctx context.Context, req Request) (*Env, error) {
	key := keyOf(req)
	s.mu.Lock()
	p := s.pools[key]
	if p == nil {
		p = &pool{}
		s.pools[key] = p
	}
	if e := p.takeIdle(); e != nil {
		p.busy++
		p.lease(e)
		s.mu.Unlock()
		e.Cold, e.Cause, e.InitDuration, e.Phases = false, "", 0, invoke.ColdStart{}
		return e, nil
	}
	p.busy++ // count the initializing environment as busy
	s.mu.Unlock()

	var e *Env
	err := s.allowNew(key)
	if err == nil {
		e, err = s.create(ctx, req, key)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		p.busy--
		return nil, err
	}
	e.pool, e.Cause = p, s.causes.Cold(key.account, key.function)
	p.lease(e)
	return e, nil
}

func (p *pool) lease(e *Env) {
	if p.leased == nil {
		p.leased = map[*Env]bool{}
	}
	p.leased[e] = true
}

func (s *Service) allowNew(k poolKey) error {
	if s.cfg.Scale == nil {
		return nil
	}
	return s.cfg.Scale.AllowNewEnvironment(counting.Key{Account: k.account, Function: k.function})
}

func (s *Service) create(ctx context.Context, req Request, key poolKey) (*Env, error) {
	place := placement.Request{Function: key.account + "/" + key.function, MemoryMB: req.Function.MemorySize}
	start := time.Now()
	workerID, err := s.cfg.Placement.Place(ctx, place)
	placed := time.Since(start)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	w := s.workers[workerID]
	s.mu.Unlock()
	if w == nil {
		s.cfg.Placement.Release(workerID, place)
		return nil, fmt.Errorf("assignment: placement chose unknown worker %q", workerID)
	}
	info, err := w.Create(ctx, invoke.EnvSpec{Account: req.Account, Function: *req.Function, InitType: req.initType})
	if err != nil {
		s.cfg.Placement.Release(workerID, place)
		return nil, err
	}
	info.Phases.Placement = placed
	return &Env{ID: info.ID, Worker: w, Cold: true, InitDuration: info.InitDuration, Phases: info.Phases, place: place}, nil
}

// Release ends an invoke's lease. A reusable environment becomes idle; any
// other is destroyed.
func (s *Service) Release(e *Env, reusable bool) {
	s.mu.Lock()
	p := e.pool
	p.busy--
	delete(p.leased, e)
	if reusable && !p.retired && (!e.provisioned || p.provisioned <= p.target) {
		e.lastUsed = time.Now()
		if e.provisioned {
			p.idleProv = append(p.idleProv, e)
		} else {
			p.idle = append(p.idle, e)
		}
		s.mu.Unlock()
		return
	}
	if e.provisioned {
		p.provisioned--
		s.reconcileLocked(p) // replace it
	}
	s.mu.Unlock()
	s.destroy(e)
}

// takeIdle pops a provisioned environment first, then an on-demand one.
func (p *pool) takeIdle() *Env {
	for _, stack := range []*[]*Env{&p.idleProv, &p.idle} {
		if n := len(*stack); n > 0 {
			e := (*stack)[n-1]
			*stack = (*stack)[:n-1]
			return e
		}
	}
	return nil
}

func (s *Service) destroy(e *Env) {
	e.Worker.Destroy(context.Background(), e.ID) // an env that died on its own is already gone
	s.cfg.Placement.Release(e.Worker.ID(), e.place)
}

// Retire removes environments of function that keep reports false for:
// idle ones now, busy ones when their invoke ends. The control plane's
// changes call it, so an updated function never runs stale code.
func (s *Service) Retire(account, function string, keep func(version, revision string) bool) {
	var doomed []*Env
	s.mu.Lock()
	for k, p := range s.pools {
		if k.account != account || k.function != function || keep(k.version, k.revision) {
			continue
		}
		doomed = append(doomed, p.idle...)
		doomed = append(doomed, p.idleProv...)
		p.provisioned -= len(p.idleProv)
		p.idle, p.idleProv, p.retired = nil, nil, true
		delete(s.pools, k) // its busy invokes still hold p
	}
	s.mu.Unlock()
	s.causes.Forget(account, function)
	for _, e := range doomed {
		s.destroy(e)
	}
}

// Stats counts environments by state.
type Stats struct{ Idle, Busy, Provisioned int }

// Stats reports the environments of one function, or of all when function is "".
func (s *Service) Stats(account, function string) Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st Stats
	for k, p := range s.pools {
		if function == "" || k.account == account && k.function == function {
			st.Idle += len(p.idle) + len(p.idleProv)
			st.Busy += p.busy
			st.Provisioned += p.provisioned
		}
	}
	return st
}

// reap ends idle environments whose lease ran out.
func (s *Service) reap() {
	t := time.NewTicker(max(s.cfg.IdleTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			var doomed []*Env
			s.mu.Lock()
			for k, p := range s.pools {
				kept := p.idle[:0]
				for _, e := range p.idle {
					if now.Sub(e.lastUsed) > s.cfg.IdleTimeout {
						doomed = append(doomed, e)
						s.causes.Lost(k.account, k.function, CauseIdleReap, 1)
					} else {
						kept = append(kept, e)
					}
				}
				p.idle = kept
				if len(p.idle) == 0 && p.busy == 0 && p.target == 0 && p.provisioned == 0 {
					delete(s.pools, k)
				}
			}
			s.mu.Unlock()
			for _, e := range doomed {
				s.destroy(e)
			}
		}
	}
}

// Close stops reaping and destroys every idle environment.
func (s *Service) Close() {
	s.closeOnce.Do(func() { close(s.stop) })
	var doomed []*Env
	s.mu.Lock()
	for _, p := range s.pools {
		doomed = append(doomed, p.idle...)
		doomed = append(doomed, p.idleProv...)
		p.idle, p.idleProv, p.target = nil, nil, 0
	}
	s.mu.Unlock()
	for _, e := range doomed {
		s.destroy(e)
	}
}

// EnvState is one environment as the console lists it.
type EnvState struct {
	ID, Account, Function, Version, Worker string
	State                                  string // idle, busy, initializing
	Provisioned                            bool
}

// Environments lists every environment; those still initializing have no
// ID yet and are listed once each.
func (s *Service) Environments() []EnvState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []EnvState
	for k, p := range s.pools {
		add := func(e *Env, state string) {
			out = append(out, EnvState{ID: e.ID, Account: k.account, Function: k.function, Version: k.version,
				Worker: e.Worker.ID(), State: state, Provisioned: e.provisioned})
		}
		for _, e := range p.idleProv {
			add(e, "idle")
		}
		for _, e := range p.idle {
			add(e, "idle")
		}
		for e := range p.leased {
			add(e, "busy")
		}
		for range p.busy - len(p.leased) {
			out = append(out, EnvState{Account: k.account, Function: k.function, Version: k.version, State: "initializing"})
		}
	}
	return out
}
