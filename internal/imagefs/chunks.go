package imagefs

import (
	"container/list"
	"context"
	"log/slog"
	"sync"

	"github.com/kiln-dev/kiln/internal/chunk"
)

// chunks is a bounded LRU of decrypted chunks in front of a Source, fetching
// each chunk once however many reads want it at the same time.
type chunks struct {
	src   Source
	max   int
	stats *Stats

	mu       sync.Mutex
	lru      list.List // of cached, most recent first
	byID     map[chunk.ID]*list.Element
	inflight map[chunk.ID]*fetch
}

type cached struct {
	id   chunk.ID
	data []byte
}

type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

func (c *chunks) get(ctx context.Context, ref chunk.Ref) ([]byte, error) {
	data, f := c.lookup(ctx, ref)
	if f == nil {
		return data, nil
	}
	select {
	case <-f.done:
		return f.data, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// prefetch starts fetching ref unless it is cached or on its way.
func (c *chunks) prefetch(ref chunk.Ref) {
	c.lookup(context.Background(), ref)
}

// lookup returns the cached chunk, or else the fetch bringing it, starting
// one if none is on its way. The fetch outlives ctx's cancellation (a read
// the kernel interrupted): other reads may be waiting for it.
func (c *chunks) lookup(ctx context.Context, ref chunk.Ref) ([]byte, *fetch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[ref.ID]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cached).data, nil
	}
	f, ok := c.inflight[ref.ID]
	if !ok {
		f = &fetch{done: make(chan struct{})}
		c.inflight[ref.ID] = f
		go c.fetch(context.WithoutCancel(ctx), ref, f)
	}
	return nil, f
}

func (c *chunks) fetch(ctx context.Context, ref chunk.Ref, f *fetch) {
	f.data, f.err = c.src.Chunk(ctx, ref)
	c.mu.Lock()
	delete(c.inflight, ref.ID)
	if f.err == nil {
		c.stats.ChunksFetched.Add(1)
		c.stats.BytesFetched.Add(int64(len(f.data)))
		c.byID[ref.ID] = c.lru.PushFront(&cached{ref.ID, f.data})
		for c.lru.Len() > c.max {
			old := c.lru.Remove(c.lru.Back()).(*cached)
			delete(c.byID, old.id)
		}
	} else {
		slog.Warn("imagefs: chunk fetch failed", "chunk", ref.ID, "err", f.err)
	}
	c.mu.Unlock()
	close(f.done)
}
