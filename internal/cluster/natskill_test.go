package cluster_test

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/kilntest/load"
	"github.com/kiln-dev/kiln/internal/replica"
	"github.com/nats-io/nats.go/jetstream"
)

// TestKillNATSNodeUnderLoad kills -9 one node of the R3 NATS cluster under
// invokes through both frontends: the node leading the invoked function's
// partition journal, the hard case (every invoke appends to it). Its
// clients reconnect to the other nodes, JetStream elects a new stream
// leader (nats-server's Raft: 4 to 9 s without heartbeats), and the
// cluster keeps serving: no invoke fails, invokes complete again, and
// management calls (metadata writes) still succeed.
func TestKillNATSNodeUnderLoad(t *testing.T) {
	f := up(t, cluster.UpConfig{})
	c := client(f, 0)
	create(t, c, "steady")
	nc, err := f.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	leaderOfStream := func(name string) string {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return ""
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	_, p := leaderOf(t, f, "steady")
	victim := leaderOfStream(replica.StreamName(p))
	if victim == "" {
		t.Fatalf("no leader for partition %d's journal", p)
	}

	var mu sync.Mutex
	var results []outcome
	okAfter := 0
	clients := []*lambda.Client{client(f, 0), client(f, 1)}
	killedAt := killUnderLoad(t, f, victim, 4, func(i int, killedAt func() time.Time) {
		o := invoke(clients[i%2], "steady", `{"action":"sleep","ms":5}`)
		mu.Lock()
		results = append(results, o)
		if k := killedAt(); !k.IsZero() && o.start.After(k) && o.err == nil {
			okAfter++
		}
		mu.Unlock()
	}, func() bool { // 200 invokes issued after the kill succeeded
		mu.Lock()
		defer mu.Unlock()
		return okAfter >= 200
	})

	var before, after, errs int
	var ends []time.Time
	for _, o := range results {
		if o.end.Before(killedAt) {
			before++
		} else {
			after++
		}
		if o.err != nil {
			errs++
			t.Errorf("invoke ended %v after the kill failed: %v", o.end.Sub(killedAt), o.err)
			continue
		}
		ends = append(ends, o.end)
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	var pause time.Duration
	for i := 1; i < len(ends); i++ {
		if ends[i].After(killedAt) {
			pause = max(pause, ends[i].Sub(ends[i-1]))
		}
	}
	t.Logf("killed %s (leader of partition %d's journal); new leader %s", victim, p, leaderOfStream(replica.StreamName(p)))
	t.Logf("invokes: %d before the kill, %d after (%d issued after it succeeded), %d failed; longest pause in completions %v",
		before, after, okAfter, errs, pause)
	if okAfter < 200 {
		t.Fatalf("only %d invokes issued after the kill succeeded", okAfter)
	}
	// JetStream (R3, two nodes left) still takes writes.
	create(t, c, "after-kill")
	if o := invoke(client(f, 1), "after-kill", `{}`); o.err != nil {
		t.Fatalf("new function after the kill: %v", o.err)
	}
}

// killUnderLoad runs step(i, killedAt) over and over in each of workers
// goroutines: for 2 s, then while it kills victim (a process of f) with
// SIGKILL, until enough says so (asked every 100 ms) or 60 s have passed.
// It returns the time of the kill, which killedAt tells the steps (zero
// before the kill).
func killUnderLoad(t *testing.T, f *cluster.File, victim string, workers int, step func(i int, killedAt func() time.Time), enough func() bool) time.Time {
	t.Helper()
	var mu sync.Mutex
	var at time.Time
	killedAt := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return at
	}
	defer load.Repeat(workers, func(i int) { step(i, killedAt) })()
	time.Sleep(2 * time.Second) // load runs a while before the kill (the scenario)
	mu.Lock()
	at = time.Now()
	mu.Unlock()
	if _, err := f.Kill(victim); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end) && !enough(); {
		time.Sleep(100 * time.Millisecond)
	}
	return at
}
