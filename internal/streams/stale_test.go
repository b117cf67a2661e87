package streams

import (
	"context"
	"testing"

	"github.com/kiln-dev/kiln/internal/natsd"
)

// A process whose cached description is stale (the stream was deleted and
// created again through another process, and the watch has not said so
// yet) still puts to, and deletes, the stream as it now is.
func TestStaleDescription(t *testing.T) {
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	open := func() *Service {
		nc, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		s, err := New(context.Background(), Config{NATS: nc})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := open(), open()
	ctx, k := context.Background(), key("111111111111", "s")
	stale := func() {
		t.Helper()
		if err := a.Create(ctx, "111111111111", "s", 1); err != nil {
			t.Fatal(err)
		}
		old, err := b.stream(ctx, "111111111111", "s")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Delete(ctx, "111111111111", "s"); err != nil {
			t.Fatal(err)
		}
		if err := a.Create(ctx, "111111111111", "s", 1); err != nil {
			t.Fatal(err)
		}
		b.open = new(natsd.Cache[*meta]) // as if the watch had not caught up
		b.open.Put(k, old, old.rev)
	}
	stale()
	res, err := b.Put(ctx, "111111111111", "s", []PutEntry{{PartitionKey: "k", Data: []byte("x")}})
	if err != nil || res[0].ErrorCode != "" {
		t.Fatalf("put with a stale description: %+v %v", res, err)
	}
	batch, err := a.Read(ctx, "111111111111", "s", ShardID(0), Position{Type: TrimHorizon}, 0)
	if err != nil || len(batch.Records) != 1 {
		t.Fatalf("the record put is not in the new stream: %+v %v", batch, err)
	}
	if err := a.Delete(ctx, "111111111111", "s"); err != nil {
		t.Fatal(err)
	}
	stale()
	if err := b.Delete(ctx, "111111111111", "s"); err != nil {
		t.Fatalf("delete with a stale description: %v", err)
	}
	if _, err := a.Describe(ctx, "111111111111", "s"); err == nil {
		t.Error("the stream is still there")
	}
}
