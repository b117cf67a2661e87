package logs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// A read waits through the election that follows the death of the log
// stream's leader, rather than failing: the consumer a read makes, and
// its fetches, find nobody to answer for a few seconds. CI once failed a
// FilterLogEvents with "no responders" while a loaded cluster's stream
// changed leaders.
func TestReadsWaitThroughElection(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	var stores []*logs.Store
	for _, n := range nodes {
		js, _ := jetstream.New(natstest.ConnectTo(t, n))
		var s *logs.Store
		wait.Retry(t, "open the store", func(ctx context.Context) (err error) {
			s, err = logs.Open(ctx, js, logs.Config{Replicas: 3, Logger: quiet()})
			return err
		})
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	const group = "/aws/lambda/elect"
	now := time.Now()
	var lines []logline.Line
	for i := range 20 {
		lines = append(lines, logline.Line{Time: now, Message: fmt.Sprintf("line %d", i)})
	}
	stores[0].Append(account, group, "2026/12/05/[$LATEST]a", lines)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := stores[0].Flush(ctx); err != nil {
		t.Fatal(err)
	}

	js, _ := jetstream.New(natstest.ConnectTo(t, nodes[0]))
	stream, err := js.Stream(ctx, "KILN_LOGS")
	if err != nil {
		t.Fatal(err)
	}
	leader := stream.CachedInfo().Cluster.Leader
	reader := -1
	for i, n := range nodes {
		if n.Name() == leader {
			n.Shutdown()
		} else {
			reader = i
		}
	}
	if reader < 0 || len(leader) == 0 {
		t.Fatalf("no node named %q, the stream's leader", leader)
	}
	evs, _, err := stores[reader].Tail(ctx, account, group, "", now.Add(-time.Minute).UnixMilli(), 100)
	if err != nil || len(evs) != len(lines) {
		t.Fatalf("read while electing a leader: %d events, want %d (%v)", len(evs), len(lines), err)
	}
}
