package natsd_test

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// OpenKV creates a bucket once and binds to it after, keeping its
// configuration; a cache drops a key another writer changed and refuses a
// value older than the watch has seen.
func TestOpenKVAndCache(t *testing.T) {
	ctx := context.Background()
	js, err := jetstream.New(natstest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	a, err := natsd.OpenKV(ctx, js, jetstream.KeyValueConfig{Bucket: "b", History: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsd.OpenKV(ctx, js, jetstream.KeyValueConfig{Bucket: "b", History: 5})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := b.Status(ctx); err != nil || st.History() != 2 {
		t.Fatalf("bound bucket's history %v (%v), want the creator's 2", st, err)
	}
	rev, err := a.Put(ctx, "k", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if v, got, err := b.Read(ctx, "k"); err != nil || string(v) != "v1" || got != rev {
		t.Fatalf("read %q at %d (%v), want v1 at %d", v, got, err, rev)
	}

	c, err := natsd.WatchCache[string](ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	c.Put("k", "v1", rev)
	if v, ok := c.Get("k"); !ok || v != "v1" {
		t.Fatalf("cached %q %v", v, ok)
	}
	rev2, err := a.Put(ctx, "k", []byte("v2"))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, ok := c.Get("k"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cache still holds v1 after another writer's v2")
		}
	}
	c.Put("k", "v1", rev) // read before the change the watch reported
	if _, ok := c.Get("k"); ok {
		t.Error("the cache took a value older than the watch has seen")
	}
	c.Put("k", "v2", rev2)
	c.Forget("k", 0)
	if _, ok := c.Get("k"); ok {
		t.Error("Forget(k, 0) kept the value")
	}
}
