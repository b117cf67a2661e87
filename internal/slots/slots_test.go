package slots

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const parts = 2

func logger() *slog.Logger {
	if os.Getenv("KILN_TEST_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// rig is three clustered NATS JetStream nodes with a counting member on
// each, as three hosts would run them.
type rig struct {
	t       *testing.T
	urls    []string
	members []*Member
	conns   []*nats.Conn
	store   *metadata.Store
	limit   int
}

func newRig(t *testing.T, limit int) *rig {
	t.Helper()
	r := &rig{t: t, limit: limit}
	for _, n := range natstest.Cluster(t, 3) {
		r.urls = append(r.urls, n.ClientURL())
	}
	nc := r.connect(0)
	js, _ := jetstream.New(nc)
	r.retry(func(ctx context.Context) (err error) {
		r.store, err = metadata.Open(ctx, js, metadata.Config{Replicas: 3})
		return err
	})
	r.members = make([]*Member, 3)
	r.conns = make([]*nats.Conn, 3)
	for i := range r.members {
		r.start(i)
	}
	t.Cleanup(func() {
		for i := range r.members {
			r.kill(i)
		}
	})
	return r
}

// retry runs fn until it succeeds (JetStream electing its stream leaders).
func (r *rig) retry(fn func(context.Context) error) {
	r.t.Helper()
	wait.Retry(r.t, "cluster call", fn)
}

func (r *rig) connect(node int) *nats.Conn {
	nc, err := nats.Connect(r.urls[node], nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	return nc
}

func (r *rig) start(i int) {
	nc := r.connect(i)
	r.retry(func(ctx context.Context) (err error) {
		r.members[i], err = Start(ctx, Config{NC: nc, Member: fmt.Sprintf("m%d", i), Partitions: parts, Replicas: 3,
			Counting: counting.Config{AccountLimit: r.limit}, Functions: r.store, Lease: 300 * time.Millisecond,
			Logger: logger()})
		return err
	})
	r.conns[i] = nc
}

// kill stops member i as a crash would: its connection first, so it says
// nothing more; its lease lapses.
func (r *rig) kill(i int) {
	if r.members[i] == nil {
		return
	}
	r.conns[i].Close()
	r.members[i].Close()
	r.members[i] = nil
}

// leader is the member leading account's partition, waiting for one.
func (r *rig) leader(account string) int {
	r.t.Helper()
	p := PartitionOf(partition.NewRing(parts), account)
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		for i, m := range r.members {
			if m != nil && m.leads(p) {
				return i
			}
		}
	}
	r.t.Fatalf("no counting leader of partition %d", p)
	return -1
}

func (r *rig) client(node int) *Client {
	c, err := NewClient(ClientConfig{NC: r.connect(node), Partitions: parts})
	if err != nil {
		r.t.Fatal(err)
	}
	c.Deadline = 30 * time.Second
	r.t.Cleanup(c.Close)
	return c
}

func reason(err error) string {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// hammer has 24 workers over clients take slots of one account and hold
// each for 2 ms, until stop returns true (asked after every grant); it
// fails the test if more than limit ran at once, or if anything but the
// account limit refused them.
func hammer(t *testing.T, clients []*Client, limit int, stop func(granted int64) bool) {
	t.Helper()
	var running, most, granted, throttled atomic.Int64
	var done atomic.Bool
	var wg sync.WaitGroup
	for g := 0; g < 24; g++ {
		wg.Add(1)
		go func(c *Client, fn string) {
			defer wg.Done()
			for !done.Load() {
				release, err := c.Take(context.Background(), counting.Key{Account: "acct", Function: fn})
				if err != nil {
					if reason(err) != counting.ReasonAccount {
						t.Errorf("take: %v", err)
						done.Store(true)
						return
					}
					throttled.Add(1)
					time.Sleep(time.Millisecond) // a throttled caller backs off a moment before asking again
					continue
				}
				n := running.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(2 * time.Millisecond) // the invoke runs a moment, so that too many at once would show
				running.Add(-1)
				release()
				if stop(granted.Add(1)) {
					done.Store(true)
				}
			}
		}(clients[g%len(clients)], fmt.Sprintf("f%d", g%5))
	}
	wg.Wait()
	t.Logf("granted %d, throttled %d, most running at once %d", granted.Load(), throttled.Load(), most.Load())
	if most.Load() > int64(limit) {
		t.Fatalf("%d invokes ran at once across frontends; the account limit is %d", most.Load(), limit)
	}
	if throttled.Load() == 0 {
		t.Fatal("nothing was refused")
	}
}

// refill checks that once the releases are in, the frontends together get
// the whole limit back, and no more.
func refill(t *testing.T, clients []*Client, limit int) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var releases []func()
		for i := 0; ; i++ {
			release, err := clients[i%len(clients)].Take(context.Background(), counting.Key{Account: "acct", Function: "f"})
			if reason(err) == counting.ReasonAccount {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
		if len(releases) > limit {
			t.Fatalf("%d slots taken after the load; the account limit is %d", len(releases), limit)
		}
		for _, release := range releases {
			release()
		}
		if len(releases) == limit {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("only %d slots free after the load, of %d", len(releases), limit)
		}
	}
}

// TestFrontendsShareTheAccountLimit: three frontends, on three NATS nodes,
// hammer one account: together they never run more than its limit, and
// get all of it back afterwards.
func TestFrontendsShareTheAccountLimit(t *testing.T) {
	const limit = 4
	r := newRig(t, limit)
	r.leader("acct")
	clients := []*Client{r.client(0), r.client(1), r.client(2)}
	hammer(t, clients, limit, func(granted int64) bool { return granted >= 300 })
	refill(t, clients, limit)
}

// TestLeaderKilledUnderLoad: the counting leader dies while three frontends
// hammer its account; its successor takes over mid-load (grants of the old
// leader still on their way, releases lost), and the limit holds
// throughout.
func TestLeaderKilledUnderLoad(t *testing.T) {
	const limit = 4
	r := newRig(t, limit)
	old := r.leader("acct")
	clients := []*Client{r.client(0), r.client(1), r.client(2)}
	var once sync.Once
	var killed atomic.Bool
	var after atomic.Int64
	hammer(t, clients, limit, func(granted int64) bool {
		if granted >= 150 {
			once.Do(func() {
				go func() {
					r.kill(old)
					killed.Store(true)
				}()
			})
		}
		return killed.Load() && after.Add(1) >= 150 // served by the successor
	})
	if l := r.leader("acct"); l == old {
		t.Fatal("the killed member still leads")
	}
	refill(t, clients, limit)
}

// TestReservedAcrossFrontends: a function's reserved concurrency, set in
// the metadata the members follow, caps it across frontends with Lambda's
// reserved reason, and the account's other functions keep the rest.
func TestReservedAcrossFrontends(t *testing.T) {
	r := newRig(t, 10)
	r.leader("acct")
	one := 1
	r.retry(func(ctx context.Context) error {
		err := r.store.Create(ctx, &metadata.Function{Account: "acct", Name: "r", ReservedConcurrency: &one})
		if errors.Is(err, metadata.ErrExists) {
			return nil
		}
		return err
	})
	a, b := r.client(0), r.client(1)
	k := counting.Key{Account: "acct", Function: "r"}
	var held []func()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// Until the members have seen the reservation, r draws on the pool.
		release, err := a.Take(context.Background(), k)
		if err == nil {
			held = append(held, release)
			release, err = b.Take(context.Background(), k)
			if reason(err) == counting.ReasonReserved {
				break
			}
			if err == nil {
				held = append(held, release)
			}
		}
		if (err != nil && reason(err) != counting.ReasonReserved) || time.Now().After(end) {
			t.Fatalf("took r on two frontends, reserved 1: %v, want %s", err, counting.ReasonReserved)
		}
		for _, release := range held {
			release()
		}
		held = nil
	}
	// The account's 10 less r's 1 remain for the others.
	for i := 0; i < 9; i++ {
		if _, err := b.Take(context.Background(), counting.Key{Account: "acct", Function: fmt.Sprint("g", i%2)}); err != nil {
			t.Fatalf("take %d of the unreserved 9: %v", i, err)
		}
	}
	if _, err := a.Take(context.Background(), counting.Key{Account: "acct", Function: "g0"}); reason(err) != counting.ReasonAccount {
		t.Fatalf("take beyond the unreserved pool: %v, want %s", err, counting.ReasonAccount)
	}
}

// fill takes slots of account with c until refused, returning how many.
func fill(t *testing.T, c *Client, account string) int {
	t.Helper()
	for n := 0; ; n++ {
		_, err := c.Take(context.Background(), counting.Key{Account: account, Function: "f"})
		if reason(err) == counting.ReasonAccount {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeadFrontendsSlotsExpire: a frontend holding the whole account goes
// silent (its connection dropped, as under kill -9): no other frontend gets
// a slot while its lease runs, and all of them come free after it.
func TestDeadFrontendsSlotsExpire(t *testing.T) {
	const limit = 3
	r := newRig(t, limit)
	r.leader("acct")
	nc := r.connect(1)
	dead, err := NewClient(ClientConfig{NC: nc, Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	live := r.client(2)
	if n := fill(t, dead, "acct"); n != limit {
		t.Fatalf("the first frontend got %d slots, want %d", n, limit)
	}
	nc.Close() // no release, no more heartbeats
	start := time.Now()
	var got int
	for got == 0 {
		if time.Since(start) > 30*time.Second {
			t.Fatal("the silent frontend's slots never expired")
		}
		got = fill(t, live, "acct")
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("slots free %v after the frontend went silent (TTL %v)", time.Since(start).Round(time.Millisecond), DefaultTTL)
	if got != limit {
		t.Fatalf("the live frontend got %d slots, want all %d", got, limit)
	}
	dead.Close()
}

// TestLeaderKilledCountsCarryOver: the partition's leader dies while a
// frontend holds the whole account; its successor learns the held slots
// from the frontends' renewals, so nothing is granted over the limit, and a
// slot released afterwards is granted again.
func TestLeaderKilledCountsCarryOver(t *testing.T) {
	const limit = 3
	r := newRig(t, limit)
	old := r.leader("acct")
	holder, other := r.client((old+1)%3), r.client((old+2)%3)
	var releases []func()
	for i := 0; i < limit; i++ {
		release, err := holder.Take(context.Background(), counting.Key{Account: "acct", Function: "f"})
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	r.kill(old)
	start := time.Now()
	// Until a new leader counts (and after), every ask is refused.
	for time.Since(start) < 3*time.Second {
		if _, err := other.Take(context.Background(), counting.Key{Account: "acct", Function: "g"}); reason(err) != counting.ReasonAccount {
			t.Fatalf("take during failover with the account full: %v, want %s", err, counting.ReasonAccount)
		}
	}
	if l := r.leader("acct"); l == old {
		t.Fatal("the killed member still leads")
	}
	releases[0]()
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := other.Take(context.Background(), counting.Key{Account: "acct", Function: "g"})
		if err == nil {
			break
		}
		if reason(err) != counting.ReasonAccount || time.Now().After(end) {
			t.Fatalf("take after a release: %v", err)
		}
	}
	if _, err := other.Take(context.Background(), counting.Key{Account: "acct", Function: "g"}); reason(err) != counting.ReasonAccount {
		t.Fatalf("take beyond the limit after failover: %v", err)
	}
}
