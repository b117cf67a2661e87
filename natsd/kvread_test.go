package natsd_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kiln-dev/kiln/natsd"
	"github.com/kiln-dev/kiln/natsd/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// LeaderGet answers as the KV API's Get does: values and revisions,
// missing and deleted keys, and keys the KV API refuses (a wildcard would
// otherwise read another key through the leader's message get).
func TestLeaderGet(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(ctx, "acct.name", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, "gone", []byte("x"))
	kv.Delete(ctx, "gone")
	if v, got, err := natsd.LeaderGet(ctx, nc, "b", "acct.name"); err != nil || string(v) != "v1" || got != rev {
		t.Errorf("%q at %d (%v), want v1 at %d", v, got, err, rev)
	}
	for _, k := range []string{"missing", "gone"} {
		if _, _, err := natsd.LeaderGet(ctx, nc, "b", k); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("%s: %v, want ErrKeyNotFound", k, err)
		}
	}
	for _, k := range []string{">", "acct.*", "*.name", "", ".acct", "acct.", "a b", "a..b"} {
		if _, _, err := natsd.LeaderGet(ctx, nc, "b", k); !errors.Is(err, jetstream.ErrInvalidKey) {
			t.Errorf("key %q: %v, want ErrInvalidKey", k, err)
		}
	}
}
