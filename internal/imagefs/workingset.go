package imagefs

import (
	"cmp"
	"container/list"
	"context"
	"sync"
	"sync/atomic"

	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/flatten"
)

// Touch is one chunk of an image by its place in the manifest: the
// entry's index and the chunk's index in that file. A working set names
// chunks only this way, so it can only ever name the image's own chunks
// (those of the manifest the account opened), never a chunk ID or key.
type Touch struct{ Entry, Chunk int32 }

// recorder notes the chunks reads needed, first needed first, until it
// holds max or is stopped: the working set of a start.
type recorder struct {
	done atomic.Bool // set once it records nothing more: reads skip the lock
	mu   sync.Mutex
	max  int
	seen map[Touch]bool
	got  []Touch
}

func newRecorder(max int) *recorder {
	return &recorder{max: max, seen: map[Touch]bool{}}
}

func (r *recorder) note(entry int32, first, last int) {
	if r == nil || r.done.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := first; i <= last && len(r.got) < r.max; i++ {
		t := Touch{entry, int32(i)}
		if !r.seen[t] {
			r.seen[t] = true
			r.got = append(r.got, t)
		}
	}
	if len(r.got) >= r.max {
		r.done.Store(true)
	}
}

// stop ends the recording and returns what it holds.
func (r *recorder) stop() []Touch {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done.Store(true)
	r.seen = nil
	return r.got
}

// WorkingSets remembers, per image, the chunks its last recorded start
// read, in the order it first read them, so the image's next fresh mount
// fetches them all at once instead of one read at a time. Bounded: at most
// Images images (the least recently used forgotten), each set at most the
// prefetch bound of the mount that recorded it. The zero value is ready.
type WorkingSets struct {
	Images int // images remembered; 1,024 when zero

	mu   sync.Mutex
	lru  list.List // of *workingSet, most recent first
	byID map[string]*list.Element
}

type workingSet struct {
	key     string
	touches []Touch
}

func (w *WorkingSets) get(key string) []Touch {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, ok := w.byID[key]
	if !ok {
		return nil
	}
	w.lru.MoveToFront(e)
	return e.Value.(*workingSet).touches
}

// put replaces key's set (a start that read nothing keeps the old one).
func (w *WorkingSets) put(key string, touches []Touch) {
	if len(touches) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byID == nil {
		w.byID = map[string]*list.Element{}
	}
	if e, ok := w.byID[key]; ok {
		e.Value.(*workingSet).touches = touches
		w.lru.MoveToFront(e)
		return
	}
	w.byID[key] = w.lru.PushFront(&workingSet{key, touches})
	for w.lru.Len() > cmp.Or(w.Images, 1024) {
		delete(w.byID, w.lru.Remove(w.lru.Back()).(*workingSet).key)
	}
}

// refs resolves touches against entries, dropping any that does not name a
// chunk of a regular file there (a set recorded for another manifest of the
// same digest names the same chunks; one that does not fit is ignored, not
// trusted).
func refs(entries []flatten.Entry, touches []Touch) []chunk.Ref {
	out := make([]chunk.Ref, 0, len(touches))
	for _, t := range touches {
		if t.Entry < 0 || int(t.Entry) >= len(entries) {
			continue
		}
		e := &entries[t.Entry]
		if e.Type != flatten.File || t.Chunk < 0 || int(t.Chunk) >= len(e.Chunks) {
			continue
		}
		out = append(out, e.Chunks[t.Chunk])
	}
	return out
}

// prefetchInOrder fetches refs in their order, at most workers at a time,
// skipping what is cached or on its way, as fast as pace lets it, until
// ctx ends: the chunk a start needs first is ready first, where fetching
// them all at once would finish them all together, late. A read that needs
// a chunk not fetched yet fetches it itself at once, ahead of the queue.
func (c *chunks) prefetchInOrder(ctx context.Context, refs []chunk.Ref, workers int, pace *pacer) {
	pace.start(ctx, refs)
	var next atomic.Int64
	for range min(workers, len(refs)) {
		go func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(refs) || !pace.wait(ctx, i) {
					return
				}
				c.get(ctx, refs[i])
			}
		}()
	}
}
