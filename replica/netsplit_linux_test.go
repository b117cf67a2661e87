package replica

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/natsd"
	"github.com/kiln-dev/kiln/partition"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"
)

// netSplit is two network namespaces this test creates, joined by a veth
// pair: "hub" holds a listener that forwards to the NATS server on the
// host's 127.0.0.1, "cut" holds the isolated member's socket. Addresses
// exist only inside the two namespaces; cutting takes the veth down.
type netSplit struct {
	t        *testing.T
	hub, cut string // namespace names
	cutIf    string
	hubIP    string
	ln       net.Listener
	mu       sync.Mutex
	conns    []net.Conn
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %v: %v: %s", args, err, out)
	}
	return nil
}

func newNetSplit(t *testing.T, target string) *netSplit {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	var b [3]byte
	rand.Read(b[:])
	sfx := hex.EncodeToString(b[:])
	n := &netSplit{t: t, hub: "kiln-hub-" + sfx, cut: "kiln-cut-" + sfx, cutIf: "kc" + sfx}
	// A /30 inside the two namespaces only; never on the host.
	n.hubIP = fmt.Sprintf("10.%d.%d.1", 200+int(b[0])%50, b[1])
	cutIP := n.hubIP[:len(n.hubIP)-1] + "2"
	t.Cleanup(n.close)
	for _, args := range [][]string{
		{"netns", "add", n.hub},
		{"netns", "add", n.cut},
		{"-n", n.hub, "link", "add", "kh" + sfx, "type", "veth", "peer", "name", n.cutIf, "netns", n.cut},
		{"-n", n.hub, "addr", "add", n.hubIP + "/30", "dev", "kh" + sfx},
		{"-n", n.cut, "addr", "add", cutIP + "/30", "dev", n.cutIf},
		{"-n", n.hub, "link", "set", "lo", "up"},
		{"-n", n.cut, "link", "set", "lo", "up"},
		{"-n", n.hub, "link", "set", "kh" + sfx, "up"},
		{"-n", n.cut, "link", "set", n.cutIf, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := inNetns(n.hub, func() (err error) {
		n.ln, err = net.Listen("tcp", n.hubIP+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go n.forward(target)
	// The veth pair may take a moment to carry traffic.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := n.Dial("tcp", n.ln.Addr().String())
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(end) {
			t.Fatalf("no route through the namespaces: %v", err)
		}
	}
	return n
}

// inNetns runs fn on an OS thread switched into namespace name, and
// switches it back. Sockets fn creates stay in that namespace. Threads the
// runtime starts meanwhile do not inherit it (a locked thread never
// clones itself). If the thread cannot be restored it is left locked, so
// it dies with the goroutine.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := os.Open("/run/netns/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("restoring network namespace: %w", err)
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// forward relays every connection made to the hub listener to target.
func (n *netSplit) forward(target string) {
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		n.mu.Lock()
		n.conns = append(n.conns, c, up)
		n.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// Dial implements nats.CustomDialer: the socket lives in the cut namespace.
func (n *netSplit) Dial(network, address string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(n.cut, func() (err error) {
		c, err = net.DialTimeout(network, address, time.Second)
		return err
	})
	return c, err
}

func (n *netSplit) url() string { return "nats://" + n.ln.Addr().String() }

func (n *netSplit) setLink(up bool) {
	n.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	if err := ipCmd("-n", n.cut, "link", "set", n.cutIf, state); err != nil {
		n.t.Fatal(err)
	}
}

func (n *netSplit) close() {
	if n.ln != nil {
		n.ln.Close()
	}
	n.mu.Lock()
	for _, c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	ipCmd("netns", "del", n.cut) // removes the veth pair too
	ipCmd("netns", "del", n.hub)
}

// TestNetworkPartitionedLeader cuts a partition's leader off the NATS
// cluster (its only route, a veth pair into its own network namespace,
// goes down) under steady load: the others elect a new leader and serve;
// the cut member stops serving and hands out nothing; no environment goes
// to two invokes (the fake workers catch it, and the journal replays
// without a single illegal transition or stale-epoch record); once the
// link is back the member rejoins as a follower with the leader's state.
func TestNetworkPartitionedLeader(t *testing.T) {
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	hostPort := srv.ClientURL()[len("nats://"):]
	split := newNetSplit(t, hostPort)
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
	cutNC, err := nats.Connect(split.url(), nats.SetCustomDialer(split), nats.PingInterval(100*time.Millisecond),
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
	if l := r.waitLeader(0, 5*time.Second); l != 0 {
		t.Fatalf("m%d leads, want m0", l)
	}
	start(1, r.connect())
	start(2, r.connect())
	r.client, err = NewClient(context.Background(), r.connect(), 1, 1, r.fleet)
	if err != nil {
		t.Fatal(err)
	}
	r.client.Deadline = 10 * time.Second

	// Warm 4 environments, then keep 8 callers busy.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); r.invoke(fn) }()
	}
	wg.Wait()
	r.waitSame(0)
	warm := r.fleet.created.Load()
	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var lastOK atomic.Int64 // unix ns of the last successful invoke
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := r.invoke(fn); err != nil {
					failed.Add(1)
					t.Logf("invoke: %v", err)
				} else {
					ok.Add(1)
					lastOK.Store(time.Now().UnixNano())
				}
			}
		}()
	}
	defer func() { // stop the callers even if the test fails
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	time.Sleep(300 * time.Millisecond)

	split.setLink(false)
	cutAt := time.Now()
	okAtCut := ok.Load()
	// Watch leadership every 2 ms while cut: who leads, and when m0 stops.
	var newLeader, newLeaderAfter, m0StepDown time.Duration = -1, -1, -1
	var m0HandedAtStepDown int64
	overlap := time.Duration(0) // m0 still believing it leads while another leads
	for end := cutAt.Add(3 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
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

	split.setLink(true)
	healedAt := time.Now()
	// m0 reconnects, rebuilds from the journal and tails it.
	var rejoined time.Duration = -1
	for end := healedAt.Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
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
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	t.Logf("cut m0 (leader of partition 0): new leader after %v, serving after %v; m0 stepped down after %v; "+
		"%d invokes ok while cut, %d handed out by m0 after it stepped down; m0 leading beside another for %v",
		newLeader, newLeaderAfter, m0StepDown, okWhileCut, handedWhileCut, overlap)
	t.Logf("healed: m0 caught up after %v; %d invokes ok, %d failed, %d client re-sends, %d environments created (%d warm before)",
		rejoined, ok.Load(), failed.Load(), r.client.Retries.Load(), r.fleet.created.Load(), warm)

	if newLeader < 0 || newLeader > 2*time.Second {
		t.Errorf("no new leader while m0 was cut (%v)", newLeader)
	}
	if newLeaderAfter < 0 {
		t.Errorf("the new leader served nothing while m0 was cut")
	}
	if m0StepDown < 0 || m0StepDown > time.Second {
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
		t.Fatalf("m0 did not catch up within 10 s of the heal")
	}
	if l := r.leader(0); l == 0 {
		t.Errorf("m0 leads again after the heal; want a follower")
	}
	r.waitSame(0) // every member, m0 included, holds the leader's environments
	// Audit with every member stopped: a leader's purge while the audit
	// reads would skip messages under it.
	audit := r.connect()
	for i := range r.members {
		r.kill(i)
	}
	auditJournal(t, audit)
}

// auditJournal replays partition 0's whole journal into a fresh state: a
// record from a deposed epoch, an acquire of a busy environment or any
// other illegal transition fails the test.
func auditJournal(t *testing.T, nc *nats.Conn) {
	t.Helper()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, StreamName(0))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	st := partition.New()
	epochs := map[uint64]string{}
	var msgs, recs int
	for st.Applied < info.State.LastSeq {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatalf("journal at %d of %d: %v", st.Applied, info.State.LastSeq, err)
		}
		meta, _ := m.Metadata()
		var rs []partition.Record
		if err := json.Unmarshal(m.Data(), &rs); err != nil {
			t.Fatal(err)
		}
		if os.Getenv("KILN_TEST_LOG") != "" {
			var ops []string
			for _, r := range rs {
				id, tok := "", r.Token
				if r.Env != nil {
					id, tok = r.Env.ID, r.Env.Token+"/"+r.Token
				}
				ops = append(ops, fmt.Sprintf("%s@%d %s %s", r.Op, r.Epoch, id, tok))
			}
			t.Logf("journal %d: %v", meta.Sequence.Stream, ops)
		}
		for _, r := range rs {
			if l, ok := epochs[r.Epoch]; ok && l != r.Leader {
				t.Errorf("epoch %d written by %s and %s: split brain", r.Epoch, l, r.Leader)
			}
			epochs[r.Epoch] = r.Leader
		}
		if err := st.Apply(meta.Sequence.Stream, rs...); err != nil {
			if errors.Is(err, partition.ErrFenced) {
				t.Errorf("journal message %d from a deposed leader: %v", meta.Sequence.Stream, err)
			} else {
				t.Errorf("journal message %d: %v", meta.Sequence.Stream, err)
			}
		}
		msgs++
		recs += len(rs)
	}
	t.Logf("journal audit: %d messages, %d records, epochs %v: no stale or illegal record", msgs, recs, epochs)
}
