package natsd

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Cache keeps values decoded from a KV bucket's keys, each until a watch of
// the bucket reports a newer revision of its key: a change made through
// another process is seen a moment later. The zero value is a cache no
// watch follows.
type Cache[V any] struct {
	mu   sync.Mutex
	vals map[string]cached[V]
	seen map[string]uint64 // the newest revision of each key the watch reported
}

type cached[V any] struct {
	v   V
	rev uint64
}

// WatchCache starts an empty cache of kv's keys. Its watch ends with ctx or
// the connection.
func WatchCache[V any](ctx context.Context, kv jetstream.KeyValue) (*Cache[V], error) {
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		return nil, err
	}
	c := &Cache[V]{}
	go func() {
		for e := range w.Updates() {
			if e != nil {
				c.Forget(e.Key(), e.Revision())
			}
		}
	}()
	return c, nil
}

// Get returns key's cached value.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.vals[key]
	return e.v, ok
}

// Put caches v, key's value at revision rev, unless the watch already
// reported a newer revision.
func (c *Cache[V]) Put(key string, v V, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev >= c.seen[key] {
		if c.vals == nil {
			c.vals = map[string]cached[V]{}
		}
		c.vals[key] = cached[V]{v, rev}
	}
}

// Forget drops key's value when it is older than revision rev, or
// whatever its revision when rev is 0 (the key is gone).
func (c *Cache[V]) Forget(key string, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.vals[key]; ok && (rev == 0 || e.rev < rev) {
		delete(c.vals, key)
	}
	if rev > c.seen[key] {
		if c.seen == nil {
			c.seen = map[string]uint64{}
		}
		c.seen[key] = rev
	}
}

// OpenCatalog opens bucket, a catalog of descriptions (OpenKV: one value a
// key, on file, with replicas), and a cache of them that follows it. The
// cache's watch ends with the connection.
func OpenCatalog[V any](ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*KV, *Cache[V], error) {
	kv, err := OpenKV(ctx, js, jetstream.KeyValueConfig{Bucket: bucket, History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, nil, err
	}
	c, err := WatchCache[V](context.WithoutCancel(ctx), kv)
	if err != nil {
		return nil, nil, err
	}
	return kv, c, nil
}
