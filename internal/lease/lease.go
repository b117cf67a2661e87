// Package lease holds leases in a JetStream KV bucket whose TTL is the
// lease's: a key's value is its holder, taken by create and renewed by
// compare-and-set on its revision, so a holder that stops renewing loses
// the key when it expires and another can take it. The async pollers hold
// their queues and the event source mapping pollers their mappings with it.
package lease

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Holder holds leases (keys of KV) under one ID. TTL is the bucket's.
type Holder struct {
	KV  jetstream.KeyValue
	ID  string
	TTL time.Duration

	mu    sync.Mutex
	revs  map[string]uint64
	renew map[string]time.Time // last successful renewal
}

// Hold renews the lease on key, or takes it if it is free; false means
// somebody else holds it.
func (l *Holder) Hold(ctx context.Context, key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.revs == nil {
		l.revs, l.renew = map[string]uint64{}, map[string]time.Time{}
	}
	if rev, ok := l.revs[key]; ok {
		nrev, err := l.KV.Update(ctx, key, []byte(l.ID), rev)
		if err == nil {
			l.revs[key], l.renew[key] = nrev, time.Now()
			return true
		}
		var apiErr *jetstream.APIError
		// Lost for sure when the key changed (expired, taken); after other
		// errors (a timeout) the lease is still ours until it would expire.
		if !(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) &&
			time.Since(l.renew[key]) < l.TTL {
			return true
		}
		delete(l.revs, key)
		delete(l.renew, key)
		return false
	}
	rev, err := l.KV.Create(ctx, key, []byte(l.ID))
	if err != nil {
		return false
	}
	l.revs[key], l.renew[key] = rev, time.Now()
	return true
}

// Release gives a lease up at once, so another can take it without
// waiting for it to expire.
func (l *Holder) Release(ctx context.Context, key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rev, ok := l.revs[key]; ok {
		l.KV.Delete(ctx, key, jetstream.LastRevision(rev))
		delete(l.revs, key)
		delete(l.renew, key)
	}
}

// ReleaseAll gives up every lease held.
func (l *Holder) ReleaseAll(ctx context.Context) {
	l.mu.Lock()
	keys := make([]string, 0, len(l.revs))
	for k := range l.revs {
		keys = append(keys, k)
	}
	l.mu.Unlock()
	for _, k := range keys {
		l.Release(ctx, k)
	}
}
