package frontend

import (
	"context"
	"sync"

	"github.com/kiln-dev/kiln/metadata"
)

// FunctionStore is where function metadata lives.
type FunctionStore interface {
	Get(ctx context.Context, account, name string) (*metadata.Function, error)
	Watch(ctx context.Context, changed func(account, name string)) error
}

// cache keeps function metadata in memory and drops an entry whenever the
// store reports a change to it, so the invoke path reads no store at all once
// warm and never serves a configuration older than the last change it saw.
type cache struct {
	store FunctionStore
	mu    sync.RWMutex
	fns   map[string]*metadata.Function
	gen   uint64 // bumped on every invalidation, so a fill that raced one is not kept
}

func newCache(ctx context.Context, store FunctionStore, onChange func(account, name string)) (*cache, error) {
	c := &cache{store: store, fns: map[string]*metadata.Function{}}
	err := store.Watch(ctx, func(account, name string) {
		c.mu.Lock()
		delete(c.fns, account+"/"+name)
		c.gen++
		c.mu.Unlock()
		if onChange != nil {
			onChange(account, name)
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
