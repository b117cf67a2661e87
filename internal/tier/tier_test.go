package tier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-dev/kiln/internal/tier"
	"github.com/kiln-dev/kiln/internal/tier/tiertest"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMemory(t *testing.T) {
	tiertest.Run(t, func(t *testing.T) tier.Store { return tier.NewMemory(8 << 20) })
}

func TestDir(t *testing.T) {
	tiertest.Run(t, func(t *testing.T) tier.Store {
		d, err := tier.OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
	// A Remove cut short between setting the blob aside and deleting it
	// (a crash) leaves it aside: the next listing puts it back.
	t.Run("RemoveCutShort", func(t *testing.T) {
		root := t.TempDir()
		d, _ := tier.OpenDir(root)
		name, b := blob(1)
		os.MkdirAll(filepath.Join(root, name[:2]), 0o700)
		if err := os.WriteFile(filepath.Join(root, name[:2], ".sweep-"+name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		var listed []string
		for b, err := range d.List(context.Background()) {
			if err != nil {
				t.Fatal(err)
			}
			listed = append(listed, b.Name)
		}
		if got, err := d.Get(context.Background(), name); err != nil || !bytes.Equal(got, b) || len(listed) != 1 || listed[0] != name {
			t.Fatalf("after listing %v: %q, %v", listed, got, err)
		}
	})
}

func TestDisk(t *testing.T) {
	tiertest.Run(t, func(t *testing.T) tier.Store {
		d, err := tier.OpenDisk(t.TempDir(), 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestJetStream(t *testing.T) {
	nc := natstest.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	tiertest.Run(t, func(t *testing.T) tier.Store {
		n++
		o, err := tier.OpenJetStream(context.Background(), js, fmt.Sprint("CHUNKS_", n), 1)
		if err != nil {
			t.Fatal(err)
		}
		return o
	})
	// A listing leaves no consumer behind: a stream's are limited, and a
	// collection lists every interval.
	t.Run("ListingLeavesNoConsumer", func(t *testing.T) {
		ctx := context.Background()
		s, err := tier.OpenJetStream(ctx, js, "LISTED", 1)
		if err != nil {
			t.Fatal(err)
		}
		name, b := blob(1)
		s.Put(ctx, name, b)
		for range 3 {
			for _, err := range s.List(ctx) {
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		stream, err := js.Stream(ctx, "KV_LISTED")
		if err != nil {
			t.Fatal(err)
		}
		if info, err := stream.Info(ctx); err != nil || info.State.Consumers != 0 {
			t.Fatalf("consumers after listing: %+v, %v", info.State, err)
		}
	})
}

func blob(i int) (string, []byte) {
	b := bytes.Repeat([]byte{byte(i)}, 100)
	return tier.Name(b), b
}

// TestCachesStayBounded fills each cache past its bound and checks the least
// recently used blobs went, the recently read one stayed, and a reopened disk
// cache finds what was left.
func TestCachesStayBounded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	disk, err := tier.OpenDisk(dir, 350)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]interface {
		tier.Store
		Size() int64
	}{"memory": tier.NewMemory(350), "disk": disk} {
		t.Run(name, func(t *testing.T) {
			for i := range 3 {
				n, b := blob(i)
				c.Put(ctx, n, b)
			}
			n0, _ := blob(0)
			if _, err := c.Get(ctx, n0); err != nil { // 0 is now the most recent
				t.Fatal(err)
			}
			n3, b3 := blob(3)
			c.Put(ctx, n3, b3)
			if c.Size() > 350 {
				t.Fatalf("size %d over the bound", c.Size())
			}
			for i, want := range []bool{true, false, true, true} {
				n, _ := blob(i)
				if _, err := c.Get(ctx, n); (err == nil) != want {
					t.Errorf("blob %d: err %v, want present=%v", i, err, want)
				}
			}
		})
	}
	again, err := tier.OpenDisk(dir, 350)
	if err != nil {
		t.Fatal(err)
	}
	if again.Size() != 300 {
		t.Fatalf("reopened disk cache holds %d bytes, want 300", again.Size())
	}
}

// TestTiersRefetchCorruptCopy corrupts a blob in the disk cache and in the
// authoritative store: the cached copy is dropped and refetched, the
// authoritative one refused.
func TestTiersRefetchCorruptCopy(t *testing.T) {
	ctx := context.Background()
	cacheDir, storeDir := t.TempDir(), t.TempDir()
	disk, _ := tier.OpenDisk(cacheDir, 1<<20)
	store, _ := tier.OpenDir(storeDir)
	hits := map[int]int{}
	tr := &tier.Tiers{Caches: []tier.Store{tier.NewMemory(1 << 20), disk}, Store: store, Hit: func(i int) { hits[i]++ }}
	data := []byte("the only copy")
	name, err := tr.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Get(ctx, name); err != nil || hits[2] != 1 {
		t.Fatalf("first read: %v, hits %v", err, hits)
	}
	tr.Caches[0] = tier.NewMemory(1 << 20) // a restarted worker: memory empty, disk warm
	p := filepath.Join(cacheDir, name[:2], name)
	if err := os.WriteFile(p, []byte("the only cop!"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := tr.Get(ctx, name)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after cache corruption = %q, %v", got, err)
	}
	if hits[1] != 0 || hits[2] != 2 {
		t.Fatalf("corrupt cache copy served: hits %v", hits)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) {
		t.Fatalf("cache not refilled with the good copy: %q", b)
	}

	tr.Caches = nil
	if err := os.WriteFile(filepath.Join(storeDir, name[:2], name), []byte("tampered"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := tr.Get(ctx, name); !errors.Is(err, tier.ErrCorrupt) || got != nil {
		t.Fatalf("Get of tampered authoritative copy = %q, %v", got, err)
	}
}

func TestS3(t *testing.T) {
	tiertest.Run(t, func(t *testing.T) tier.Store {
		s, err := tier.OpenS3(context.Background(), tiertest.S3(t, "kiln"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	t.Run("NoBucket", func(t *testing.T) {
		cfg := tiertest.S3(t, "kiln")
		cfg.Bucket = "absent"
		if _, err := tier.OpenS3(context.Background(), cfg); err == nil {
			t.Fatal("opened a bucket that does not exist")
		}
	})
}
