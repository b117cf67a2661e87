package tier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/tier"
	"github.com/kiln-dev/kiln/internal/tier/tiertest"
)

// peerNet is an embedded NATS server that workers' peer tiers join, each on
// a connection of its own.
func peerNet(t *testing.T) func(id string, local ...tier.Store) *tier.Peer {
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return func(id string, local ...tier.Store) *tier.Peer {
		nc, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		p, err := tier.NewPeer(nc, id, local...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
}

// knows waits until p has heard that a peer holds name.
func knows(p *tier.Peer, name string) error {
	for deadline := time.Now().Add(10 * time.Second); !p.Knows(name); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("no announcement of %s reached the peer", name)
		}
	}
	return nil
}

func waitKnows(t *testing.T, p *tier.Peer, name string) {
	t.Helper()
	if err := knows(p, name); err != nil {
		t.Fatal(err)
	}
}

// peerPair is the peer tier seen from worker a, with worker b holding what
// is put: Put fills b's cache and b announces it; a's Get fetches it from b.
type peerPair struct {
	a, b   *tier.Peer
	bCache tier.Store
}

func (pp *peerPair) Get(ctx context.Context, name string) ([]byte, error) { return pp.a.Get(ctx, name) }
func (pp *peerPair) Delete(ctx context.Context, name string) error        { return pp.a.Delete(ctx, name) }
func (pp *peerPair) Put(ctx context.Context, name string, b []byte) error {
	if err := pp.b.Put(ctx, name, b); err != nil { // refuses bad names first
		return err
	}
	if err := pp.bCache.Put(ctx, name, b); err != nil {
		return err
	}
	return knows(pp.a, name)
}

func TestPeer(t *testing.T) {
	tiertest.Run(t, func(t *testing.T) tier.Store {
		join := peerNet(t)
		cache := tier.NewMemory(8 << 20)
		return &peerPair{a: join("a"), b: join("b", cache), bCache: cache}
	})
}

// counted counts the reads of the authoritative store.
type counted struct {
	tier.Store
	gets atomic.Int64
}

func (c *counted) Get(ctx context.Context, name string) ([]byte, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, name)
}

// TestPeerWorkers: three workers, each reading through memory → peer → the
// store. The first reader fetches from the store; the others get the blob
// from a peer, and the store is not read again. A peer serving a corrupt
// copy is never believed: the reader gets the store's copy.
func TestPeerWorkers(t *testing.T) {
	ctx := context.Background()
	dir, err := tier.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &counted{Store: dir}
	join := peerNet(t)
	type worker struct {
		cache *tier.Memory
		tiers *tier.Tiers
		hits  [3]int
	}
	workers := make([]*worker, 3)
	for i := range workers {
		w := &worker{cache: tier.NewMemory(8 << 20)}
		w.tiers = &tier.Tiers{Caches: []tier.Store{w.cache, join(string(rune('a'+i)), w.cache)}, Store: store,
			Hit: func(i int) { w.hits[i]++ }}
		workers[i] = w
	}
	data := bytes.Repeat([]byte("chunk "), 300_000) // over one NATS message
	name, err := workers[0].tiers.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := workers[0].tiers.Get(ctx, name); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("worker a: %d bytes, %v", len(got), err)
	}
	if workers[0].hits[2] != 1 {
		t.Fatalf("worker a's first read did not come from the store: %v", workers[0].hits)
	}
	for _, w := range workers[1:] {
		waitKnows(t, w.tiers.Caches[1].(*tier.Peer), name)
		if got, err := w.tiers.Get(ctx, name); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes, %v", len(got), err)
		}
		if w.hits[1] != 1 || w.hits[2] != 0 {
			t.Fatalf("read not served by a peer: hits %v", w.hits)
		}
	}
	if n := store.gets.Load(); n != 1 {
		t.Fatalf("the store was read %d times, want once", n)
	}

	// Worker a's cached copy goes bad; c, which never read it, asks a peer
	// (a, the only one that announced it) and must not be served the bad copy.
	other := bytes.Repeat([]byte("other "), 1000)
	oname, _ := workers[0].tiers.Put(ctx, other)
	workers[0].tiers.Get(ctx, oname)
	waitKnows(t, workers[2].tiers.Caches[1].(*tier.Peer), oname)
	bad := append([]byte(nil), other...)
	bad[10] ^= 1
	workers[0].cache.Delete(ctx, oname)
	workers[0].cache.Put(ctx, oname, bad)
	before := workers[2].hits
	got, err := workers[2].tiers.Get(ctx, oname)
	if err != nil || !bytes.Equal(got, other) {
		t.Fatalf("after a peer's corrupt copy: %q…, %v", got[:min(len(got), 20)], err)
	}
	if workers[2].hits[1] != before[1] || workers[2].hits[2] != before[2]+1 {
		t.Fatalf("the corrupt peer copy was served or the store not asked: hits %v", workers[2].hits)
	}

	// A peer that went away costs a failed request, not the read.
	last := bytes.Repeat([]byte("last "), 1000)
	lname, _ := workers[1].tiers.Put(ctx, last)
	workers[1].tiers.Get(ctx, lname)
	waitKnows(t, workers[0].tiers.Caches[1].(*tier.Peer), lname)
	workers[1].tiers.Caches[1].(*tier.Peer).Close()
	if got, err := workers[0].tiers.Get(ctx, lname); err != nil || !bytes.Equal(got, last) {
		t.Fatalf("with the holder gone: %v", err)
	}
	if _, err := workers[0].tiers.Caches[1].Get(ctx, tier.Name([]byte("nobody has it"))); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("a blob no peer announced: %v", err)
	}
}
