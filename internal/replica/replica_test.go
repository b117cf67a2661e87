package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/kiln-dev/kiln/internal/placement"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeFleet is placement plus workers, in memory: it counts creations and
// catches two invokes in one environment at once.
type fakeFleet struct {
	mu      sync.Mutex
	n       int
	created atomic.Int64
	live    map[string]bool
	busy    map[string]string
	doubles atomic.Int64
}

func newFleet() *fakeFleet { return &fakeFleet{live: map[string]bool{}, busy: map[string]string{}} }

func (f *fakeFleet) Place(ctx context.Context, req placement.Request) (WorkerRef, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	id := fmt.Sprintf("w%d", f.n%3)
	return WorkerRef{ID: id, Zone: "z" + id[1:], Addr: id}, nil
}
func (f *fakeFleet) Release(string, placement.Request) {}
func (f *fakeFleet) Create(ctx context.Context, w WorkerRef, id string, spec invoke.EnvSpec) (*invoke.EnvInfo, error) {
	time.Sleep(time.Millisecond) // a creation takes a moment, so that requests overlap
	f.created.Add(1)
	f.mu.Lock()
	f.live[id] = true
	f.mu.Unlock()
	return &invoke.EnvInfo{ID: id, InitDuration: time.Millisecond}, nil
}
func (f *fakeFleet) Destroy(ctx context.Context, w WorkerRef, id string) error {
	f.mu.Lock()
	delete(f.live, id)
	f.mu.Unlock()
	return nil
}
func (f *fakeFleet) Invoke(ctx context.Context, addr, id string, inv *invoke.Invocation) (*invoke.Result, error) {
	f.mu.Lock()
	if !f.live[id] {
		f.mu.Unlock()
		return nil, invoke.ErrNoEnv
	}
	if other, ok := f.busy[id]; ok {
		f.doubles.Add(1)
		f.mu.Unlock()
		return nil, fmt.Errorf("double assignment of %s: %s and %s", id, other, inv.RequestID)
	}
	f.busy[id] = inv.RequestID
	f.mu.Unlock()
	time.Sleep(200 * time.Microsecond) // the invoke runs a moment: a second one given the same environment meanwhile is caught
	f.mu.Lock()
	delete(f.busy, id)
	f.mu.Unlock()
	return &invoke.Result{Payload: inv.Payload, Reusable: true}, nil
}

type rig struct {
	t       testing.TB
	srv     *natsd.Server
	url     string
	fleet   *fakeFleet
	members []*Member
	conns   []*nats.Conn
	client  *Client
	parts   int
	mode    Mode
	tune    func(*Config)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func logger() *slog.Logger {
	if os.Getenv("KILN_TEST_LOG") != "" {
		return slog.Default()
	}
	return quiet
}

func newRig(t testing.TB, parts int, mode Mode, tune func(*Config)) *rig {
	t.Helper()
	r := emptyRig(t, parts, mode, tune)
	for i := 0; i < 3; i++ {
		r.start(i)
	}
	nc := r.connect()
	var err error
	r.client, err = NewClient(context.Background(), nc, parts, 1, r.fleet)
	if err != nil {
		t.Fatal(err)
	}
	r.client.Deadline = 30 * time.Second
	for p := 0; p < parts; p++ {
		r.waitLeader(p, wait.Deadline)
	}
	return r
}

// emptyRig is a rig whose members are yet to start.
func emptyRig(t testing.TB, parts int, mode Mode, tune func(*Config)) *rig {
	t.Helper()
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, srv: srv, url: srv.ClientURL(), fleet: newFleet(), parts: parts, mode: mode, tune: tune}
	t.Cleanup(func() {
		if r.client != nil {
			r.client.Close()
		}
		for i := range r.members {
			r.kill(i)
		}
		srv.Shutdown()
	})
	return r
}

// A new cluster's partitions are led by their preferred members, spread
// over the zones, even when one member starts seconds after the others
// (as on a loaded host).
func TestLeadersSpreadDespiteALateMember(t *testing.T) {
	r := emptyRig(t, 3, Replicated, nil)
	r.start(1)
	r.start(2)
	time.Sleep(2 * time.Second) // the scenario: well after the others' lease (300 ms)
	r.start(0)
	for p := 0; p < 3; p++ {
		if i := r.waitLeader(p, wait.Deadline); i != p {
			t.Errorf("partition %d led by m%d, want its preferred m%d", p, i, p)
		}
	}
}

func (r *rig) connect() *nats.Conn {
	nc, err := nats.Connect(r.url)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	return nc
}

func (r *rig) start(i int) {
	cfg := Config{NC: r.connect(), Member: fmt.Sprintf("m%d", i), Zone: fmt.Sprintf("z%d", i), Partitions: r.parts,
		Index: i, Members: 3, Mode: r.mode, Lease: 300 * time.Millisecond, Placer: r.fleet, Workers: r.fleet, Logger: logger()}
	if r.tune != nil {
		r.tune(&cfg)
	}
	m, err := Start(context.Background(), cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	for len(r.members) <= i {
		r.members = append(r.members, nil)
		r.conns = append(r.conns, nil)
	}
	r.members[i], r.conns[i] = m, cfg.NC
}

// kill stops member i as a crash would: no goodbye, its lease lapses.
func (r *rig) kill(i int) {
	if r.members[i] == nil {
		return
	}
	r.conns[i].Close()
	r.members[i].Close()
	r.members[i] = nil
}

func (r *rig) leader(p int) int {
	for i, m := range r.members {
		if m == nil {
			continue
		}
		lead := false
		m.State(p, func(_ *partition.State, leading bool) { lead = leading })
		if lead {
			return i
		}
	}
	return -1
}

func (r *rig) waitLeader(p int, d time.Duration) int {
	r.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if i := r.leader(p); i >= 0 {
			return i
		}
	}
	r.t.Fatalf("partition %d: no leader after %v", p, d)
	return -1
}

var fn = &api.FunctionConfiguration{FunctionName: "f", Version: "$LATEST", RevisionId: "r1", MemorySize: 128}

func fnNamed(name string) *api.FunctionConfiguration {
	c := *fn
	c.FunctionName = name
	return &c
}

func (r *rig) invoke(f *api.FunctionConfiguration) (*assignment.Env, error) {
	env, err := r.client.Acquire(context.Background(), assignment.Request{Account: "acct", Function: f})
	if err != nil {
		return nil, err
	}
	res, err := env.Worker.Invoke(context.Background(), env.ID, &invoke.Invocation{RequestID: newToken(), Payload: []byte("{}")})
	r.client.Release(env, err == nil && res.Reusable)
	return env, err
}

// envsOf returns member i's environments of partition p, with Seq dropped.
func (r *rig) envsOf(i, p int) []partition.Env {
	var out []partition.Env
	r.members[i].State(p, func(st *partition.State, _ bool) { out = st.Envs() })
	for j := range out {
		out[j].Seq = 0
	}
	return out
}

func (r *rig) waitSame(p int) {
	r.t.Helper()
	l := r.leader(p)
	var want, got []partition.Env
	for end := time.Now().Add(wait.Deadline); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		want = r.envsOf(l, p)
		same := true
		for i, m := range r.members {
			if m != nil && i != l {
				got = r.envsOf(i, p)
				same = same && fmt.Sprint(got) == fmt.Sprint(want)
			}
		}
		if same {
			return
		}
	}
	r.t.Fatalf("followers differ from the leader:\nleader %v\nfollower %v", want, got)
}

func TestWarmReuseAndFollowersAgree(t *testing.T) {
	r := newRig(t, 2, Replicated, nil)
	e1, err := r.invoke(fn)
	if err != nil || !e1.Cold {
		t.Fatalf("first invoke: %v cold=%v", err, e1 != nil && e1.Cold)
	}
	for i := 0; i < 5; i++ {
		e, err := r.invoke(fn)
		if err != nil || e.Cold || e.ID != e1.ID {
			t.Fatalf("invoke %d: %v cold=%v id=%s want %s", i, err, e.Cold, e.ID, e1.ID)
		}
	}
	p := r.client.Ring().Of("acct", "f")
	r.waitSame(p)
	envs := r.envsOf(r.leader(p), p)
	if len(envs) != 1 || envs[0].Status != partition.Idle {
		t.Fatalf("envs %+v", envs)
	}
}

func TestFailoverKeepsWarmEnvironments(t *testing.T) {
	r := newRig(t, 1, Replicated, nil)
	// 4 warm environments: 4 invokes at once.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env, err := r.client.Acquire(context.Background(), assignment.Request{Account: "acct", Function: fn})
			if err != nil {
				t.Error(err)
				return
			}
			time.Sleep(20 * time.Millisecond) // holds the environment a moment (the scenario)
			r.client.Release(env, true)
		}()
	}
	wg.Wait()
	if n := r.fleet.created.Load(); n != 4 {
		t.Fatalf("created %d", n)
	}
	r.waitSame(0)
	old := r.leader(0)
	killed := time.Now()
	r.kill(old)
	// Serve 4 concurrent invokes per round until the new leader answers.
	if _, err := r.invoke(fn); err != nil {
		t.Fatalf("invoke across failover: %v", err)
	}
	next := r.leader(0)
	t.Logf("failover: leader m%d killed, m%d serving after %v (measured by BenchmarkFailover)", old, next, time.Since(killed))
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := r.invoke(fn); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	// Concurrent rounds may briefly need more than 4 (a release in
	// flight); what matters is that the 4 warm ones were not orphaned.
	if n := r.fleet.created.Load(); n > 4+1 {
		t.Errorf("%d cold starts after failover: warm environments orphaned", n-4)
	}
	envs := r.envsOf(next, 0)
	if len(envs) < 4 {
		t.Errorf("new leader knows %d environments, want ≥4", len(envs))
	}
}

// TestStalledTailTakesOver: the followers' journal tails stop (as when
// their consumers went with a killed NATS node), the journal moves on,
// and the leader dies. The member that takes the lease must replay the
// journal on a new tail and serve, not hold the lease while its fenced
// lead record is refused (the frontends' requests found no responders
// until their deadline).
func TestStalledTailTakesOver(t *testing.T) {
	r := newRig(t, 1, Replicated, nil)
	old := r.leader(0)
	for i, m := range r.members {
		if i != old {
			p := m.parts[0]
			p.mu.Lock()
			p.cons.Stop() // left in place: the member still thinks it tails
			p.mu.Unlock()
		}
	}
	if _, err := r.invoke(fn); err != nil {
		t.Fatal(err)
	}
	r.kill(old)
	if _, err := r.invoke(fn); err != nil {
		t.Fatalf("invoke after the leader died: %v", err)
	}
	next := r.leader(0)
	if envs := r.envsOf(next, 0); len(envs) != 1 {
		t.Errorf("new leader knows %d environments, want the 1 made before the failover", len(envs))
	}
}

// BenchmarkFailover measures how long a partition serves no invoke after
// its leader dies: from the kill to the first invoke served by the next
// leader (the design's target is 1 s). The dead member comes back between
// rounds.
func BenchmarkFailover(b *testing.B) {
	r := newRig(b, 1, Replicated, nil)
	if _, err := r.invoke(fn); err != nil {
		b.Fatal(err)
	}
	var gaps []time.Duration
	for b.Loop() {
		r.waitSame(0)
		old := r.leader(0)
		killed := time.Now()
		r.kill(old)
		if _, err := r.invoke(fn); err != nil {
			b.Fatalf("invoke across failover: %v", err)
		}
		gaps = append(gaps, time.Since(killed))
		b.StopTimer()
		r.start(old)
		b.StartTimer()
	}
	slices.Sort(gaps)
	b.ReportMetric(float64(gaps[len(gaps)/2].Milliseconds()), "ms-p50-gap")
}

func TestSingleOwnerBaselineOrphans(t *testing.T) {
	r := newRig(t, 1, SingleOwner, nil)
	if _, err := r.invoke(fn); err != nil {
		t.Fatal(err)
	}
	r.kill(r.leader(0))
	e, err := r.invoke(fn)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Cold {
		t.Fatal("single-owner baseline kept its warm environment across failover")
	}
}

// TestDeposedLeaderCannotAppend: a leader that no longer hears the lease
// bucket (a partition, a GC pause) keeps believing it leads; once another
// member took the lease and appended its lead record, the old leader's
// appends fail, and it hands out nothing.
func TestDeposedLeaderCannotAppend(t *testing.T) {
	r := newRig(t, 1, Replicated, nil)
	if _, err := r.invoke(fn); err != nil {
		t.Fatal(err)
	}
	r.waitSame(0)
	oldIdx := r.leader(0)
	old := r.members[oldIdx].parts[0]
	// Freeze the old leader's view of leadership: stop its election loop
	// (no renewals, no watch), keep its journal connection.
	old.m.stop()
	old.m.wg.Wait()
	// Another member takes over after the lease lapses.
	var next int
	for end := time.Now().Add(wait.Deadline); ; time.Sleep(5 * time.Millisecond) {
		next = -1
		for i, m := range r.members {
			if i == oldIdx || m == nil {
				continue
			}
			m.State(0, func(_ *partition.State, leading bool) {
				if leading {
					next = i
				}
			})
		}
		if next >= 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("no new leader")
		}
	}
	old.mu.Lock()
	stillThinks := old.leading
	var idle partition.Env
	for _, e := range old.st.Envs() {
		idle = e
	}
	old.mu.Unlock()
	if !stillThinks {
		t.Fatal("test setup: old leader already stepped down")
	}
	// The old leader tries to hand the warm env to an invoke: the append
	// is fenced (its ctx is cancelled too, so use the appender directly).
	old.mu.Lock()
	old.cancelLead() // its appender died with the member's context; run one now
	old.kick = make(chan struct{}, 1)
	lctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go old.appender(lctx, old.epoch, old.kick)
	done, err := old.proposeLocked(partition.Transition(partition.OpAcquire, 0, idle, "stale-invoke"))
	old.mu.Unlock()
	if err == nil {
		err = <-done
	}
	if !errors.Is(err, errNotLeader) {
		t.Fatalf("deposed leader's append: %v, want fenced", err)
	}
	// The new leader's state never saw the stale acquire.
	r.members[next].State(0, func(st *partition.State, _ bool) {
		if e, _ := st.Env(idle.ID); e.Token == "stale-invoke" {
			t.Fatal("stale acquire reached the journal")
		}
	})
	if _, err := r.invoke(fn); err != nil {
		t.Fatal(err)
	}
	r.members[oldIdx] = nil // already stopped
}

// TestNoDoubleAssignmentAcrossFailovers drives concurrent invokes while
// leaders are killed and restarted; the fake workers catch any env given
// to two invokes at once.
func TestNoDoubleAssignmentAcrossFailovers(t *testing.T) {
	r := newRig(t, 2, Replicated, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for c := 0; c < 16; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			f := fnNamed(fmt.Sprintf("fn%d", c%4))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := r.invoke(f); err != nil {
					failed.Add(1)
					t.Logf("invoke: %v", err)
				} else {
					ok.Add(1)
				}
			}
		}(c)
	}
	// The sleeps are the scenario: load runs a while before each kill,
	// while the member is down, and after the last restart.
	for round := 0; round < 3; round++ {
		time.Sleep(300 * time.Millisecond)
		i := r.waitLeader(0, wait.Deadline) // a restarted member may not lead yet on a loaded host
		r.kill(i)
		time.Sleep(700 * time.Millisecond)
		r.start(i)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d invokes ok, %d failed, %d retries, %d environments created", ok.Load(), failed.Load(), r.client.Retries.Load(), r.fleet.created.Load())
	if d := r.fleet.doubles.Load(); d > 0 {
		t.Fatalf("%d double assignments", d)
	}
	if failed.Load() > 0 {
		t.Errorf("%d invokes failed across failovers", failed.Load())
	}
	for p := 0; p < 2; p++ {
		r.waitSame(p)
	}
}

// TestBootstrapFromTrimmedJournal: old leases are renewed and the journal
// behind the oldest is purged; a new member replays what is left and holds
// the leader's state.
func TestBootstrapFromTrimmedJournal(t *testing.T) {
	r := newRig(t, 1, Replicated, func(c *Config) { c.RenewAge = 100 * time.Millisecond })
	for i := 0; i < 30; i++ { // many records about few envs
		if _, err := r.invoke(fnNamed(fmt.Sprintf("fn%d", i%3))); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := jetstream.New(r.conns[r.leader(0)])
	var first uint64
	for end := time.Now().Add(wait.Deadline); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		s, _ := js.Stream(context.Background(), StreamName(0))
		info, _ := s.Info(context.Background())
		if first = info.State.FirstSeq; first > 10 {
			break
		}
	}
	if first <= 10 {
		t.Fatalf("journal not trimmed: first sequence %d", first)
	}
	r.kill(1)
	r.start(1) // bootstraps from the trimmed journal
	r.waitSame(0)
	var base uint64
	r.members[1].State(0, func(st *partition.State, _ bool) { base = st.Base })
	if base < first {
		t.Fatalf("new member began at %d, journal at %d", base, first)
	}
	if n := len(r.envsOf(1, 0)); n != 3 {
		t.Fatalf("new member knows %d envs, want 3", n)
	}
	// and it can lead with them
	r.kill(r.leader(0))
	r.waitLeader(0, wait.Deadline)
	before := r.fleet.created.Load()
	for i := 0; i < 3; i++ {
		r.invoke(fnNamed(fmt.Sprintf("fn%d", i)))
	}
	if r.fleet.created.Load() != before {
		t.Fatal("cold start after bootstrap + failover")
	}
}

// TestDecisionThroughput measures warm acquire+release decisions through
// partition leaders (JetStream journal, R1 here) against the single-process
// assignment.Service. Numbers only with KILN_BENCH=1.
func TestDecisionThroughput(t *testing.T) {
	if os.Getenv("KILN_BENCH") == "" {
		t.Skip("KILN_BENCH=1 to measure")
	}
	for _, parts := range []int{1, 4} {
		t.Run(fmt.Sprint(parts), func(t *testing.T) {
			r := newRig(t, parts, Replicated, nil)
			measure(t, fmt.Sprintf("replicated, %d partition(s), 1 JetStream node", parts), 32, 3*time.Second, func(f *api.FunctionConfiguration) error {
				env, err := r.client.Acquire(context.Background(), assignment.Request{Account: "acct", Function: f})
				if err != nil {
					return err
				}
				r.client.Release(env, true)
				return nil
			})
		})
	}
	svc := assignment.New(assignment.Config{Placement: placerShim{}, Logger: quiet})
	defer svc.Close()
	svc.AddWorker(shimWorker{})
	measure(t, "single process (assignment.Service)", 32, 2*time.Second, func(f *api.FunctionConfiguration) error {
		env, err := svc.Acquire(context.Background(), assignment.Request{Account: "acct", Function: f})
		if err != nil {
			return err
		}
		svc.Release(env, true)
		return nil
	})
}

// Measure runs clients goroutines, each acquiring and releasing its own
// function's environment, and reports decisions/s and p50/p99.
func measure(t *testing.T, name string, clients int, d time.Duration, op func(*api.FunctionConfiguration) error) {
	var mu sync.Mutex
	var lat []time.Duration
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			f := fnNamed(fmt.Sprintf("bench-%d", c))
			var mine []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				if err := op(f); err != nil {
					t.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	// each op is two decisions (acquire, release)
	t.Logf("%-50s %8.0f decisions/s  acquire+release p50 %v p99 %v (%d ops, %d clients)", name,
		float64(2*len(lat))/el.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100], len(lat), clients)
}

type placerShim struct{}

func (placerShim) Place(context.Context, placement.Request) (string, error) { return "w", nil }
func (placerShim) Release(string, placement.Request)                        {}

type shimWorker struct{}

func (shimWorker) ID() string { return "w" }
func (shimWorker) Create(context.Context, invoke.EnvSpec) (*invoke.EnvInfo, error) {
	return &invoke.EnvInfo{ID: newToken()}, nil
}
func (shimWorker) Invoke(context.Context, string, *invoke.Invocation) (*invoke.Result, error) {
	return nil, nil
}
func (shimWorker) Destroy(context.Context, string) error { return nil }

// TestProvisionedSurvivesFailover: the partition leader creates the
// provisioned environments and reports them; a new leader keeps them (no
// creation, a READY report of its own) and serves from them warm; one
// lost with its worker is replaced.
func TestProvisionedSurvivesFailover(t *testing.T) {
	r := newRig(t, 1, Replicated, nil)
	v1 := fnNamed("prov")
	v1.Version = "1"
	var mu sync.Mutex
	var reports []int
	for _, m := range r.members {
		m.SetProvisioned("acct", "prov", []assignment.Provision{{Account: "acct", Function: v1, N: 2,
			Report: func(allocated int, err error) {
				if err != nil {
					t.Errorf("report: %v", err)
				}
				mu.Lock()
				reports = append(reports, allocated)
				mu.Unlock()
			}}})
	}
	// waitReport waits for a report of 2 after the first `after` reports.
	waitReport := func(after int) int {
		t.Helper()
		for end := time.Now().Add(wait.Deadline); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			n := len(reports)
			done := n > after && reports[n-1] == 2
			mu.Unlock()
			if done {
				return n
			}
		}
		t.Fatalf("no report of 2 provisioned environments (reports %v)", reports)
		return 0
	}
	seen := waitReport(0)
	if n := r.fleet.created.Load(); n != 2 {
		t.Fatalf("created %d environments for 2 provisioned", n)
	}
	r.waitSame(0)
	r.kill(r.leader(0))
	r.waitLeader(0, wait.Deadline)
	waitReport(seen) // the new leader's own count
	if n := r.fleet.created.Load(); n != 2 {
		t.Fatalf("%d environments created across the failover; the provisioned ones were not kept", n-2)
	}
	e, err := r.invoke(v1)
	if err != nil || e.Cold {
		t.Fatalf("invoke after failover: cold %v, err %v", e != nil && e.Cold, err)
	}
	lost := r.envsOf(r.leader(0), 0)[0]
	r.conns[r.leader(0)].Publish(WorkerDown, []byte(`{"id":"`+lost.Worker+`"}`))
	for end := time.Now().Add(wait.Deadline); ; time.Sleep(10 * time.Millisecond) {
		var provisioned int
		for _, e := range r.envsOf(r.leader(0), 0) {
			if e.Provisioned && e.Status == partition.Idle && e.ID != lost.ID {
				provisioned++
			}
		}
		if provisioned == 2 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the environment lost with worker %s was not replaced", lost.Worker)
		}
	}
}

// TestScalingRateAtThePartitionLeader: a function's new environments are
// rationed by its partition's leader, whichever frontend asks, with
// Lambda's 429 reason; a warm environment needs no token.
func TestScalingRateAtThePartitionLeader(t *testing.T) {
	r := newRig(t, 1, Replicated, func(cfg *Config) {
		cfg.Scale = counting.New(counting.Config{ScaleBurst: 1, ScaleRefill: 1}) // 1 per 10 s
	})
	held, err := r.client.Acquire(context.Background(), assignment.Request{Account: "acct", Function: fn})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.client.Acquire(context.Background(), assignment.Request{Account: "acct", Function: fn})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Reason != counting.ReasonScaling {
		t.Fatalf("a second new environment at once: %v, want %s", err, counting.ReasonScaling)
	}
	r.client.Release(held, true)
	if e, err := r.invoke(fn); err != nil || e.Cold {
		t.Fatalf("warm invoke after the throttle: cold %v, err %v", e != nil && e.Cold, err)
	}
}

// TestOrphanedBusyEnvironmentRetired: a frontend that dies mid-invoke never
// releases its environment; once the function's timeout and the grace are
// past, the leader retires it (the worker ended the invoke by then).
func TestOrphanedBusyEnvironmentRetired(t *testing.T) {
	r := newRig(t, 1, Replicated, func(cfg *Config) { cfg.OrphanGrace = 100 * time.Millisecond })
	f := fnNamed("orphan")
	f.Timeout = 1
	env, err := r.client.Acquire(context.Background(), assignment.Request{Account: "acct", Function: f})
	if err != nil {
		t.Fatal(err)
	}
	// Never released.
	for end := time.Now().Add(wait.Deadline); ; time.Sleep(20 * time.Millisecond) {
		gone := true
		for _, e := range r.envsOf(r.leader(0), 0) {
			gone = gone && e.ID != env.ID
		}
		r.fleet.mu.Lock()
		live := r.fleet.live[env.ID]
		r.fleet.mu.Unlock()
		if gone && !live {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("orphaned busy environment %s never retired and destroyed (retired %v)", env.ID, gone)
		}
	}
}
