package eventinvoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd"
)

// recorder is an Invoker that runs every event at once and records it.
type recorder struct {
	mu   sync.Mutex
	seen map[int]int
}

func (r *recorder) Resolve(ctx context.Context, account, function, qualifier string) (*metadata.Target, error) {
	return &metadata.Target{Account: account, Ref: api.FunctionRef{Name: function, Qualifier: qualifier},
		Function: &metadata.Function{Account: account, Name: function}, Config: &api.FunctionConfiguration{Version: metadata.Latest}}, nil
}

func (r *recorder) Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error) {
	var ev struct{ ID int }
	json.Unmarshal(req.Payload, &ev)
	r.mu.Lock()
	r.seen[ev.ID]++
	r.mu.Unlock()
	return &invoke.Response{ExecutedVersion: metadata.Latest, Payload: req.Payload}, nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// A poller that stops renewing its lease (stuck) loses its queue to
// another poller, which serves the queue's events from then on.
func TestStalledPollerLosesItsLease(t *testing.T) {
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	s, err := New(ctx, Config{NATS: nc, Tuning: Tuning{Shards: 1, Pollers: 2, LeaseTTL: time.Second, AckWait: time.Second,
		ManagerInterval: 100 * time.Millisecond, ThrottleBase: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{seen: map[int]int{}}
	s.Start(rec)
	defer s.Close()

	holder := func(except *poller) *poller {
		for _, p := range s.pollers {
			if p == except {
				continue
			}
			p.mu.Lock()
			_, ok := p.runs[sharedConsumer(0)]
			p.mu.Unlock()
			if ok {
				return p
			}
		}
		return nil
	}
	wait.For(t, "somebody leases the shared queue", func() error {
		if holder(nil) == nil {
			return errors.New("no holder")
		}
		return nil
	})
	stuck := holder(nil)
	stuck.stalled.Store(true)
	stalledAt := time.Now()

	target := &metadata.Target{Account: "123456789012", Ref: api.FunctionRef{Name: "f"}}
	const n = 50
	for i := range n {
		b, _ := json.Marshal(map[string]int{"id": i})
		if _, err := s.Enqueue(ctx, target, b, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, "the events run after the queue's poller got stuck", func() error {
		if c := rec.count(); c < n {
			return fmt.Errorf("%d of %d ran", c, n)
		}
		return nil
	})
	took := time.Since(stalledAt)
	if holder(stuck) == nil {
		t.Fatalf("no other poller took the shared queue over")
	}
	if took < 500*time.Millisecond {
		t.Errorf("events ran %s after the poller got stuck: before its lease could expire", took)
	}
	t.Logf("another poller took the queue over and ran %d events %s after the first got stuck", n, took.Round(time.Millisecond))
}
