package natsd

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KV is a JetStream KV bucket whose Read sees every write acknowledged
// before it.
type KV struct {
	jetstream.KeyValue
	// Leader, when set, is where Read asks: the bucket's stream leader
	// (OpenKV sets it for a replicated bucket).
	Leader *nats.Conn
}

// OpenKV binds to cfg's bucket, creating it with cfg when it does not
// exist. An existing bucket is not reconfigured: a process of another
// Replicas (a tool, a benchmark) must not change it under the others' feet.
func OpenKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (*KV, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) { // another process created it first
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	// The bucket's own replicas, not cfg's: it may have been made by
	// another process.
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	k := &KV{KeyValue: kv}
	if st.Config().Replicas > 1 {
		k.Leader = js.Conn()
	}
	return k, nil
}

// Read returns key's value and revision, or jetstream.ErrKeyNotFound: from
// the bucket's stream leader when it is replicated (see LeaderGet), else
// by the KV API's Get.
func (k *KV) Read(ctx context.Context, key string) ([]byte, uint64, error) {
	if k.Leader != nil {
		return LeaderGet(ctx, k.Leader, k.Bucket(), key)
	}
	e, err := k.Get(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// ReadKeys lists the bucket's keys matching filter (a KV key pattern; "" is
// every key), sorted, seeing every write acknowledged before it: from the
// bucket's stream leader when it is replicated (LeaderKeys), else by the
// KV API's listing. Keys deleted may be listed: Read each to tell.
func (k *KV) ReadKeys(ctx context.Context, filter string) ([]string, error) {
	if k.Leader != nil {
		return LeaderKeys(ctx, k.Leader, k.Bucket(), filter)
	}
	if filter == "" {
		filter = ">"
	}
	l, err := k.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, err
	}
	var keys []string
	for key := range l.Keys() {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	return keys, nil
}
