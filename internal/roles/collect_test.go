package roles_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/controlplane"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/lease"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/metrics"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/kiln-dev/kiln/internal/roles"
)

// TestCollectorsOneAtATime: two control planes' collectors share the
// collect bucket; while the collector lease is held elsewhere neither
// collects (a periodic one gives up), and an operator's request is
// answered by one of them once it is free, leaving the done key.
func TestCollectorsOneAtATime(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := natstest.Connect(t)
	js, _ := jetstream.New(nc)
	store, err := metadata.Open(ctx, js, metadata.Config{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := roles.OpenCollectKV(ctx, js, 1, roles.CollectConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var collectors []*roles.Collector
	for range 2 {
		code, err := codestore.Open(codestore.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		cp := controlplane.New(controlplane.Config{Store: store, Code: code})
		defer cp.Close()
		c := roles.NewCollector(kv, cp, roles.CollectConfig{}, metrics.New(), nil)
		collectors = append(collectors, c)
		go c.Run(ctx, nc)
	}

	other := &lease.Holder{KV: kv, ID: "elsewhere", TTL: time.Minute}
	if !other.Hold(ctx, "collector") {
		t.Fatal("the collector lease is taken before anyone collects")
	}
	for _, c := range collectors {
		if _, err := c.Collect(ctx, 0, false); err == nil {
			t.Fatal("collected while another held the lease")
		}
	}
	// A negative grace, reaching past now, is refused (at once: the lease
	// is not asked for).
	req, _ := json.Marshal(roles.CollectRequest{Grace: -time.Hour})
	var m *nats.Msg
	wait.For(t, "a collector subscribed", func() (err error) {
		m, err = nc.Request(roles.CollectSubject, req, time.Minute)
		return err
	})
	if !strings.Contains(string(m.Data), "bad request") {
		t.Fatalf("a negative grace: %s", m.Data)
	}
	// An operator's request waits for the lease.
	done := make(chan error, 1)
	go func() {
		req, _ := json.Marshal(roles.CollectRequest{})
		m, err := nc.Request(roles.CollectSubject, req, time.Minute)
		if err == nil {
			var r roles.CollectReply
			if err = json.Unmarshal(m.Data, &r); err == nil && r.Error != "" {
				err = errors.New(r.Error)
			}
		}
		done <- err
	}()
	if _, err := kv.Get(ctx, "done"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a collection ran while the lease was held elsewhere: %v", err)
	}
	other.Release(ctx, "collector")
	if err := <-done; err != nil {
		t.Fatalf("collection once the lease was free: %v", err)
	}
	if _, err := kv.Get(ctx, "done"); err != nil {
		t.Fatalf("a collection ran but left no done key: %v", err)
	}
}
