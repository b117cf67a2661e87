package frontend

import (
	"context"
	"sync"

	"github.com/kiln-dev/kiln/internal/metadata"
)

// FunctionStore is where function metadata lives.
type FunctionStore interface {
	Get(ctx context.Context, account, name string) (*metadata.Function, error)
	// URL reads what a function URL id names (metadata.ErrNotFound if nothing).
	URL(ctx context.Context, id string) (metadata.URLRef, error)
	// Watch reports every function written (its new value) or deleted (nil).
	Watch(ctx context.Context, changed func(account, name string, f *metadata.Function)) error
}

// cache keeps function metadata in memory and replaces (or drops) an entry
// whenever the store reports a change to it, so the invoke path reads no
// store at all once warm and never serves a configuration older than the
// last change it saw.
type cache struct {
	store FunctionStore
	mu    sync.RWMutex
	fns   map[string]*metadata.Function
	gen   uint64 // bumped on every invalidation, so a fill that raced one is not kept
}

// newCache follows store; onChange (if not nil) hears of every write
// after the cache has taken it (f nil: the function was deleted).
func newCache(ctx context.Context, store FunctionStore, onChange func(account, name string, f *metadata.Function)) (*cache, error) {
	c := &cache{store: store, fns: map[string]*metadata.Function{}}
	err := store.Watch(ctx, func(account, name string, f *metadata.Function) {
		c.changed(account, name, f)
		if onChange != nil {
			onChange(account, name, f)
		}
	})
	return c, err
}

func (c *cache) get(ctx context.Context, account, name string) (*metadata.Function, error) {
	k := account + "/" + name
	c.mu.RLock()
	f, ok := c.fns[k]
	gen := c.gen
	c.mu.RUnlock()
	if ok {
		return f, nil
	}
	f, err := c.store.Get(ctx, account, name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.fns[k] = f
	}
	c.mu.Unlock()
	return f, nil
}

// forget drops a function's entry, and any fill of it under way.
func (c *cache) forget(account, name string) { c.changed(account, name, nil) }

// changed replaces a cached function by the value just written (f), or
// drops it (nil), and cancels any fill under way. Taking the written value
// rather than reading the store again matters in a cluster: a read may
// reach a replica that has not applied the write yet, and the stale value
// it returned would be kept until the next change.
func (c *cache) changed(account, name string, f *metadata.Function) {
	k := account + "/" + name
	c.mu.Lock()
	if _, cached := c.fns[k]; cached && f != nil {
		c.fns[k] = f
	} else {
		delete(c.fns, k)
	}
	c.gen++
	c.mu.Unlock()
}
