package imagefs

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/kiln-dev/kiln/internal/chunk"
)

// pacer keeps a mount's prefetch at most ahead chunks past the furthest of
// its chunks a read has needed: the start's own reads set the pace. A
// prefetch left to run ahead took the CPUs the runtime's init needed (on
// two cores, a working set of 64 MiB made the start slower, not faster).
type pacer struct {
	ahead   int
	started atomic.Bool

	mu      sync.Mutex
	cond    sync.Cond
	pos     map[chunk.ID]int // a chunk's place in the prefetch
	reached int              // the furthest place a read needed
}

func newPacer(ahead int) *pacer {
	p := &pacer{ahead: ahead, reached: -1}
	p.cond.L = &p.mu
	return p
}

// start paces a prefetch of refs, in their order, until ctx ends.
func (p *pacer) start(ctx context.Context, refs []chunk.Ref) {
	p.mu.Lock()
	p.pos = make(map[chunk.ID]int, len(refs))
	for i, r := range refs {
		if _, ok := p.pos[r.ID]; !ok {
			p.pos[r.ID] = i
		}
	}
	p.mu.Unlock()
	p.started.Store(true)
	context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
}

// read notes that a read needed the chunk id.
func (p *pacer) read(id chunk.ID) {
	if p == nil || !p.started.Load() {
		return
	}
	p.mu.Lock()
	if i, ok := p.pos[id]; ok && i > p.reached {
		p.reached = i
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// wait blocks until the prefetch may fetch place i, or ctx ends (false).
func (p *pacer) wait(ctx context.Context, i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i > p.reached+p.ahead && ctx.Err() == nil {
		p.cond.Wait()
	}
	return ctx.Err() == nil
}
