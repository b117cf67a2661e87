package replica

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/audit"
	"github.com/kiln-dev/kiln/internal/kilntest/load"
	"github.com/kiln-dev/kiln/internal/kilntest/netns"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNetworkPartitionedLeader cuts a partition's leader off the NATS
// cluster (its only route, a veth pair into its own network namespace,
// goes down) under steady load: the others elect a new leader and serve;
// the cut member stops serving and hands out nothing; no environment goes
// to two invokes (the fake workers catch it, and the journal replays
// without a single illegal transition or stale-epoch record); once the
// link is back the member rejoins as a follower with the leader's state.
func TestNetworkPartitionedLeader(t *testing.T) {
	split := netns.New(t) // skips unless root with iproute2
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cutURL := "nats://" + split.Forward(srv.ClientURL()[len("nats://"):])
	r := &rig{t: t, srv: srv, url: srv.ClientURL(), fleet: newFleet(), parts: 1, mode: Replicated}
	t.Cleanup(func() {
		if r.client != nil {
			r.client.Close()
		}
		for i := range r.members {
			r.kill(i)
		}
	})
	// m0 reaches NATS only through the namespace; it detects a dead
	// connection within ~300 ms (pings) and keeps reconnecting.
	cutNC, err := nats.Connect(cutURL, nats.SetCustomDialer(split), nats.PingInterval(100*time.Millisecond),
		nats.MaxPingsOutstanding(2), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.Timeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cutNC.Close)
	start := func(i int, nc *nats.Conn) {
		m, err := Start(context.Background(), Config{NC: nc, Member: fmt.Sprintf("m%d", i), Zone: fmt.Sprintf("z%d", i),
			Partitions: 1, Index: i, Members: 3, Lease: 300 * time.Millisecond, Placer: r.fleet, Workers: r.fleet, Logger: logger()})
		if err != nil {
			t.Fatal(err)
		}
		r.members = append(r.members, m)
		r.conns = append(r.conns, nc)
	}
	start(0, cutNC)
	if l := r.waitLeader(0, wait.Deadline); l != 0 {
		t.Fatalf("m%d leads, want m0", l)
	}
	start(1, r.connect())
	start(2, r.connect())
	r.client, err = NewClient(context.Background(), r.connect(), 1, 1, r.fleet)
	if err != nil {
		t.Fatal(err)
	}
	r.client.Deadline = 30 * time.Second

	// Warm 4 environments, then keep 8 callers busy.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); r.invoke(fn) }()
	}
	wg.Wait()
	r.waitSame(0)
	warm := r.fleet.created.Load()
	var ok, failed atomic.Int64
	var lastOK atomic.Int64 // unix ns of the last successful invoke
	stop := load.Repeat(8, func(int) {
		if _, err := r.invoke(fn); err != nil {
			failed.Add(1)
			t.Logf("invoke: %v", err)
		} else {
			ok.Add(1)
			lastOK.Store(time.Now().UnixNano())
		}
	})
	defer stop()                       // stop the callers even if the test fails
	time.Sleep(300 * time.Millisecond) // load runs a while before the cut (the scenario)

	split.SetLink(false)
	cutAt := time.Now()
	okAtCut := ok.Load()
	// Watch leadership every 2 ms while cut: who leads, and when m0 stops;
	// for 3 s, and on a loaded host on until m0 stopped and the new leader
	// served (a minute at most).
	var newLeader, newLeaderAfter, m0StepDown time.Duration = -1, -1, -1
	var m0HandedAtStepDown int64
	overlap := time.Duration(0) // m0 still believing it leads while another leads
	for end, most := cutAt.Add(3*time.Second), cutAt.Add(wait.Deadline); time.Now().Before(end) ||
		(m0StepDown < 0 || newLeaderAfter < 0) && time.Now().Before(most); time.Sleep(2 * time.Millisecond) {
		var m0Leads bool
		r.members[0].State(0, func(_ *partition.State, leading bool) { m0Leads = leading })
		other := false
		for i := 1; i < 3; i++ {
			r.members[i].State(0, func(_ *partition.State, leading bool) { other = other || leading })
		}
		if other && newLeader < 0 {
			newLeader = time.Since(cutAt)
		}
		if !m0Leads && m0StepDown < 0 {
			m0StepDown = time.Since(cutAt)
			m0HandedAtStepDown = r.members[0].handedOut.Load()
		}
		if m0Leads && other {
			overlap += 2 * time.Millisecond
		}
		if newLeader >= 0 && newLeaderAfter < 0 && lastOK.Load() > cutAt.Add(newLeader).UnixNano() {
			newLeaderAfter = time.Since(cutAt)
		}
	}
	okWhileCut := ok.Load() - okAtCut
	handedWhileCut := r.members[0].handedOut.Load() - m0HandedAtStepDown

	split.SetLink(true)
	healedAt := time.Now()
	// m0 reconnects, rebuilds from the journal and tails it.
	var rejoined time.Duration = -1
	for end := healedAt.Add(wait.Deadline); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		l := r.leader(0)
		if l > 0 {
			var la, ma uint64
			r.members[l].State(0, func(st *partition.State, _ bool) { la = st.Applied })
			r.members[0].State(0, func(st *partition.State, _ bool) { ma = st.Applied })
			if ma >= la && ma > 0 {
				rejoined = time.Since(healedAt)
				break
			}
		}
	}
	time.Sleep(300 * time.Millisecond) // and a while after the heal
	stop()

	t.Logf("cut m0 (leader of partition 0): new leader after %v, serving after %v; m0 stepped down after %v; "+
		"%d invokes ok while cut, %d handed out by m0 after it stepped down; m0 leading beside another for %v",
		newLeader, newLeaderAfter, m0StepDown, okWhileCut, handedWhileCut, overlap)
	t.Logf("healed: m0 caught up after %v; %d invokes ok, %d failed, %d client re-sends, %d environments created (%d warm before)",
		rejoined, ok.Load(), failed.Load(), r.client.Retries.Load(), r.fleet.created.Load(), warm)

	if newLeader < 0 {
		t.Errorf("no new leader while m0 was cut (%v)", newLeader)
	}
	if newLeaderAfter < 0 {
		t.Errorf("the new leader served nothing while m0 was cut")
	}
	if m0StepDown < 0 {
		t.Errorf("m0 did not step down on losing its lease (%v)", m0StepDown)
	}
	if handedWhileCut != 0 {
		t.Errorf("m0 handed out %d environments after stepping down", handedWhileCut)
	}
	if d := r.fleet.doubles.Load(); d > 0 {
		t.Errorf("%d double assignments", d)
	}
	if failed.Load() > 0 {
		t.Errorf("%d invokes failed", failed.Load())
	}
	if rejoined < 0 {
		t.Fatalf("m0 did not catch up within %v of the heal", wait.Deadline)
	}
	if l := r.leader(0); l == 0 {
		t.Errorf("m0 leads again after the heal; want a follower")
	}
	r.waitSame(0) // every member, m0 included, holds the leader's environments
	// Audit with every member stopped: a leader's purge while the audit
	// reads would skip messages under it.
	nc := r.connect()
	for i := range r.members {
		r.kill(i)
	}
	js, _ := jetstream.New(nc)
	audit.Tail(t, js, StreamName(0)).Check()
}
