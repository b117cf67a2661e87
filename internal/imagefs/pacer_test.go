package imagefs

import (
	"context"
	"testing"
	"time"
)

// TestPrefetchPaced: a prefetch runs only its pacer's ahead chunks past the
// furthest of them a read needed, and goes on as reads move.
func TestPrefetchPaced(t *testing.T) {
	st, e := chunkedFile(t, 12)
	refs := e.Chunks
	c := NewCache(st, 64).c
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPacer(2)
	c.prefetchInOrder(ctx, refs, 2, p)
	fetched := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); c.stats.ChunksFetched.Load() < want && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // anything more it was going to fetch
		if got := c.stats.ChunksFetched.Load(); got != want {
			t.Fatalf("fetched %d chunks, want %d", got, want)
		}
	}
	fetched(2) // places 0 and 1 before any read
	p.read(refs[5].ID)
	fetched(8) // up to place 7
	cancel()
	p.read(refs[11].ID)
	fetched(8) // stopped
}
