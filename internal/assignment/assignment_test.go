package assignment_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/placement"
)

// These tests drive assignment's decisions alone, without processes: the
// real placement service (it does no I/O) and, at the edge where
// environments start, a worker that only records what it was asked. The
// real worker behind this interface is exercised by server's tests.

// recWorker is a worker that starts nothing: Create hands out IDs (or
// fails with fail, or waits for gate), Destroy records.
type recWorker struct {
	id string

	mu        sync.Mutex
	n         int
	live      map[string]invoke.EnvSpec
	destroyed []string
	fail      error
	gate      chan struct{}
}

func newWorker(id string) *recWorker {
	return &recWorker{id: id, live: map[string]invoke.EnvSpec{}}
}

func (w *recWorker) ID() string { return w.id }

func (w *recWorker) Create(ctx context.Context, spec invoke.EnvSpec) (*invoke.EnvInfo, error) {
	w.mu.Lock()
	gate, fail := w.gate, w.fail
	w.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	id := fmt.Sprintf("%s-e%d", w.id, w.n)
	w.live[id] = spec
	return &invoke.EnvInfo{ID: id, InitDuration: time.Millisecond}, nil
}

func (w *recWorker) Invoke(context.Context, string, *invoke.Invocation) (*invoke.Result, error) {
	return nil, errors.New("recWorker runs nothing")
}

func (w *recWorker) Destroy(_ context.Context, id string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.live, id)
	w.destroyed = append(w.destroyed, id)
	return nil
}

// liveIDs is the environments created and not destroyed, sorted.
func (w *recWorker) liveIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []string
	for id := range w.live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

const account = "123456789012"

func fn(name, version, revision string) *api.FunctionConfiguration {
	return &api.FunctionConfiguration{FunctionName: name, Version: version, RevisionId: revision, MemorySize: 128}
}

// setup is a service with one worker; cfg's Placement is filled in.
func setup(t *testing.T, cfg assignment.Config) (*assignment.Service, *recWorker, *placement.Service) {
	t.Helper()
	place := placement.New()
	place.Register(placement.WorkerInfo{ID: "w1"})
	cfg.Placement = place
	s := assignment.New(cfg)
	t.Cleanup(s.Close)
	w := newWorker("w1")
	s.AddWorker(w)
	return s, w, place
}

func acquire(t *testing.T, s *assignment.Service, f *api.FunctionConfiguration) *assignment.Env {
	t.Helper()
	e, err := s.Acquire(context.Background(), assignment.Request{Account: account, Function: f})
	if err != nil {
		t.Fatalf("acquire %s:%s: %v", f.FunctionName, f.Version, err)
	}
	return e
}

// booked is how many environments placement has booked, on every worker.
func booked(place *placement.Service) int {
	n := 0
	for _, b := range place.Bookings() {
		n += b.Envs
	}
	return n
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestLeases walks environments through their states, a step at a time,
// checking what each step leaves: which environment an invoke gets, whether
// it is a cold start and why, and the counts by state.
func TestLeases(t *testing.T) {
	s, w, place := setup(t, assignment.Config{})
	v1 := fn("f", "1", "r1")
	v1b := fn("f", "1", "r2") // the same version at another revision
	v2 := fn("f", "2", "r1")

	a := acquire(t, s, v1)
	if !a.Cold || a.Cause != assignment.CauseScaleUp || a.ID != "w1-e1" {
		t.Fatalf("first invoke: %+v", a)
	}
	// No double assignment: a second invoke while the first runs gets a
	// new environment.
	b := acquire(t, s, v1)
	if !b.Cold || b.ID == a.ID {
		t.Fatalf("second concurrent invoke got %+v (first %s)", b, a.ID)
	}
	if st := s.Stats(account, "f"); st.Busy != 2 || st.Idle != 0 {
		t.Fatalf("two busy: %+v", st)
	}
	s.Release(a, true)
	s.Release(b, true)
	if st := s.Stats(account, "f"); st.Busy != 0 || st.Idle != 2 {
		t.Fatalf("two idle: %+v", st)
	}
	// Warm: the most recently released environment, no cold start.
	c := acquire(t, s, v1)
	if c.Cold || c.Cause != "" || c.InitDuration != 0 || c.ID != b.ID {
		t.Fatalf("warm invoke: %+v, want %s warm", c, b.ID)
	}
	// Another revision or version never gets this pool's environments.
	for _, other := range []*api.FunctionConfiguration{v1b, v2} {
		o := acquire(t, s, other)
		if !o.Cold {
			t.Fatalf("%s at %s got a warm environment of r1 v1: %+v", other.Version, other.RevisionId, o)
		}
		s.Release(o, true)
	}
	// A failed invoke's environment is not reused: destroyed, and its
	// placement booking released.
	s.Release(c, false)
	if slices.Contains(w.liveIDs(), c.ID) {
		t.Fatalf("%s survived a non-reusable release", c.ID)
	}
	if st := s.Stats(account, "f"); st.Idle != 3 || st.Busy != 0 {
		t.Fatalf("after the failed invoke: %+v", st)
	}
	if n := booked(place); n != 3 {
		t.Fatalf("%d environments booked in placement for 3 live ones", n)
	}
}

// TestRetire: a changed function's stale environments go, the idle ones at
// once and busy ones when their invoke ends, and the kept ones stay.
func TestRetire(t *testing.T) {
	s, w, _ := setup(t, assignment.Config{})
	old, kept := fn("f", "$LATEST", "r1"), fn("f", "1", "r1")
	idle, busy, k := acquire(t, s, old), acquire(t, s, old), acquire(t, s, kept)
	s.Release(idle, true)
	s.Release(k, true)

	s.Retire(account, "f", func(version, revision string) bool { return version == "1" })
	if live := w.liveIDs(); slices.Contains(live, idle.ID) || !slices.Contains(live, busy.ID) || !slices.Contains(live, k.ID) {
		t.Fatalf("after retire: live %v (idle %s, busy %s, kept %s)", live, idle.ID, busy.ID, k.ID)
	}
	// The busy one may finish, but is not reused.
	s.Release(busy, true)
	if slices.Contains(w.liveIDs(), busy.ID) {
		t.Fatalf("retired %s reused after its invoke", busy.ID)
	}
	// The next invoke of the new code starts cold; its cause is not the
	// retirement (that was on purpose).
	if e := acquire(t, s, fn("f", "$LATEST", "r2")); !e.Cold || e.Cause != assignment.CauseScaleUp {
		t.Fatalf("after retire: %+v", e)
	}
	if e := acquire(t, s, kept); e.Cold || e.ID != k.ID {
		t.Fatalf("kept version: %+v, want warm %s", e, k.ID)
	}
}

// TestIdleReap: an idle environment past IdleTimeout is destroyed, and the
// function's next cold start says it replaces a reaped one.
func TestIdleReap(t *testing.T) {
	s, w, place := setup(t, assignment.Config{IdleTimeout: 20 * time.Millisecond})
	f := fn("f", "1", "r1")
	e := acquire(t, s, f)
	s.Release(e, true)
	waitFor(t, "the idle environment to be reaped", func() bool { return len(w.liveIDs()) == 0 })
	if n := booked(place); n != 0 {
		t.Fatalf("reaped environment still booked: %+v", place.Bookings())
	}
	if again := acquire(t, s, f); !again.Cold || again.Cause != assignment.CauseIdleReap {
		t.Fatalf("after the reap: %+v", again)
	}
}

// TestCreateFailures: a failed init, a refused scale-up and a create
// cancelled by its caller leave nothing behind: no busy count, no booking.
func TestCreateFailures(t *testing.T) {
	initErr := &invoke.InitError{ErrorType: "Runtime.ExitError"}
	throttled := api.Errorf(api.TooManyRequests, "Rate Exceeded.")
	for _, c := range []struct {
		name  string
		fail  error
		scale error
		want  error
	}{
		{"init fails", initErr, nil, initErr},
		{"scaling rate", nil, throttled, throttled},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, w, place := setup(t, assignment.Config{Scale: refuse{c.scale}})
			w.fail = c.fail
			_, err := s.Acquire(context.Background(), assignment.Request{Account: account, Function: fn("f", "1", "r1")})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if st := s.Stats(account, "f"); st != (assignment.Stats{}) {
				t.Fatalf("left %+v", st)
			}
			if booked(place) != 0 || len(w.liveIDs()) != 0 {
				t.Fatalf("left bookings %+v, environments %v", place.Bookings(), w.liveIDs())
			}
		})
	}
}

type refuse struct{ err error }

func (r refuse) AllowNewEnvironment(counting.Key) error { return r.err }

// TestInitializingListed: an environment being created is busy in Stats and
// listed as initializing until its init ends.
func TestInitializingListed(t *testing.T) {
	s, w, _ := setup(t, assignment.Config{})
	w.gate = make(chan struct{})
	got := make(chan *assignment.Env)
	go func() { got <- acquire(t, s, fn("f", "1", "r1")) }()
	waitFor(t, "an initializing environment", func() bool {
		envs := s.Environments()
		return len(envs) == 1 && envs[0].State == "initializing" && envs[0].ID == ""
	})
	if st := s.Stats(account, "f"); st.Busy != 1 {
		t.Fatalf("initializing: %+v", st)
	}
	close(w.gate)
	e := <-got
	if envs := s.Environments(); len(envs) != 1 || envs[0].State != "busy" || envs[0].ID != e.ID || envs[0].Worker != "w1" {
		t.Fatalf("started: %+v", envs)
	}
}

// TestProvisioned: provisioned environments start ahead of traffic, are
// served first, replaced when they fail, reported, and go with the target.
func TestProvisioned(t *testing.T) {
	s, w, _ := setup(t, assignment.Config{})
	f := fn("f", "1", "r1")
	var mu sync.Mutex
	var allocated []int
	report := func(n int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			allocated = append(allocated, n)
		}
	}
	lastReport := func() int {
		mu.Lock()
		defer mu.Unlock()
		if len(allocated) == 0 {
			return -1
		}
		return allocated[len(allocated)-1]
	}
	s.SetProvisioned(account, "f", []assignment.Provision{{Account: account, Function: f, N: 2, Report: report}})
	waitFor(t, "two provisioned environments, reported", func() bool {
		return s.Stats(account, "f") == assignment.Stats{Idle: 2, Provisioned: 2} && lastReport() == 2
	})
	w.mu.Lock()
	for id, spec := range w.live {
		if spec.InitType != "provisioned-concurrency" {
			t.Errorf("%s created with init type %q", id, spec.InitType)
		}
	}
	w.mu.Unlock()
	// Served warm, before any on-demand environment.
	e := acquire(t, s, f)
	if e.Cold {
		t.Fatalf("provisioned invoke was cold: %+v", e)
	}
	// A provisioned environment that fails its invoke is replaced.
	s.Release(e, false)
	waitFor(t, "the replacement", func() bool {
		return s.Stats(account, "f") == assignment.Stats{Idle: 2, Provisioned: 2} && len(w.liveIDs()) == 2
	})
	// Beyond the target, invokes get on-demand environments.
	a, b, c := acquire(t, s, f), acquire(t, s, f), acquire(t, s, f)
	if a.Cold || b.Cold || !c.Cold {
		t.Fatalf("third concurrent invoke should be the only cold one: %v %v %v", a.Cold, b.Cold, c.Cold)
	}
	for _, e := range []*assignment.Env{a, b, c} {
		s.Release(e, true)
	}
	// With both kinds idle, the provisioned are served first, even though
	// the on-demand one was released last.
	if e := acquire(t, s, f); e.ID == c.ID {
		t.Fatalf("on-demand %s served before idle provisioned ones", c.ID)
	} else {
		s.Release(e, true)
	}
	// No target: the provisioned ones go; the on-demand one stays.
	s.SetProvisioned(account, "f", nil)
	waitFor(t, "the provisioned environments to go", func() bool {
		return s.Stats(account, "f") == assignment.Stats{Idle: 1} && len(w.liveIDs()) == 1
	})
	if live := w.liveIDs(); live[0] != c.ID {
		t.Fatalf("left %v, want the on-demand %s", live, c.ID)
	}
}

// BenchmarkWarmCycle is kiln up's assignment of one warm invoke: acquire
// an idle environment, release it (partition's BenchmarkWarmCycle is the
// same cycle in the cluster's state machine).
func BenchmarkWarmCycle(b *testing.B) {
	place := placement.New()
	place.Register(placement.WorkerInfo{ID: "w1"})
	s := assignment.New(assignment.Config{Placement: place})
	defer s.Close()
	s.AddWorker(newWorker("w1"))
	req := assignment.Request{Account: account, Function: fn("f", "1", "r1")}
	e, err := s.Acquire(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	s.Release(e, true)
	b.ReportAllocs()
	for b.Loop() {
		e, err := s.Acquire(context.Background(), req)
		if err != nil || e.Cold {
			b.Fatal(err, e)
		}
		s.Release(e, true)
	}
}
