package natsd_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bucket is KV bucket "b" on a JetStream of the test's own.
func bucket(t *testing.T) (*nats.Conn, jetstream.KeyValue) {
	nc := natstest.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	return nc, kv
}

// LeaderGet answers as the KV API's Get does: values and revisions,
// missing and deleted keys, and keys the KV API refuses (a wildcard would
// otherwise read another key through the leader's message get).
func TestLeaderGet(t *testing.T) {
	ctx := context.Background()
	nc, kv := bucket(t)
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

// LeaderLast tells a subject's last message, and none of a subject
// without one.
func TestLeaderLast(t *testing.T) {
	ctx := context.Background()
	nc := natstest.Connect(t)
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.*"}}); err != nil {
		t.Fatal(err)
	}
	var last *jetstream.PubAck
	for _, subj := range []string{"s.a", "s.b", "s.a", "s.b"} {
		ack, err := js.Publish(ctx, subj, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if subj == "s.a" {
			last = ack
		}
	}
	seq, at, err := natsd.LeaderLast(ctx, nc, "S", "s.a")
	if err != nil || seq != last.Sequence || time.Since(at) > time.Minute || at.After(time.Now()) {
		t.Errorf("last of s.a: %d at %v (%v), want %d a moment ago", seq, at, err, last.Sequence)
	}
	if _, _, err := natsd.LeaderLast(ctx, nc, "S", "s.c"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("s.c: %v, want ErrMsgNotFound", err)
	}
}

// LeaderKeys lists what the KV API lists, deleted keys included, filtered
// by a key pattern.
func TestLeaderKeys(t *testing.T) {
	ctx := context.Background()
	nc, kv := bucket(t)
	if keys, err := natsd.LeaderKeys(ctx, nc, "b", ""); err != nil || len(keys) != 0 {
		t.Errorf("empty bucket: %q %v", keys, err)
	}
	for _, k := range []string{"a.x", "a.y", "b.x", "gone"} {
		kv.Put(ctx, k, []byte("v"))
	}
	kv.Delete(ctx, "gone")
	for filter, want := range map[string]string{"": "[a.x a.y b.x gone]", "a.>": "[a.x a.y]", "*.x": "[a.x b.x]", "c.>": "[]"} {
		if keys, err := natsd.LeaderKeys(ctx, nc, "b", filter); err != nil || fmt.Sprint(keys) != want {
			t.Errorf("filter %q: %q %v, want %s", filter, keys, err, want)
		}
	}
	if _, err := natsd.LeaderKeys(ctx, nc, "missing", ""); err == nil {
		t.Error("a missing bucket listed")
	}
}

// In a cluster, a write acknowledged through one node is seen at once by
// LeaderGet and LeaderKeys through another, however far its replica lags
// (the KV API's Get and ListKeys may be answered by that replica).
func TestLeaderReadsSeeAcknowledgedWritesInCluster(t *testing.T) {
	_, conns, kv := clusterBucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 200 {
		k := fmt.Sprintf("k%03d", i)
		if _, err := kv.Create(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
		reader := conns[1+i%2]
		if v, _, err := natsd.LeaderGet(ctx, reader, "b", k); err != nil || string(v) != k {
			t.Fatalf("read %s right after its write: %q %v", k, v, err)
		}
		keys, err := natsd.LeaderKeys(ctx, reader, "b", "")
		if err != nil || len(keys) != i+1 || keys[i] != k {
			t.Fatalf("listed %d keys right after writing %s (%v): last %q", len(keys), k, err, keys[len(keys)-1:])
		}
	}
}

// A leader read waits through the election that follows the death of the
// stream's leader, rather than failing: the members left answer that there
// is no leader, or nobody answers, for a few seconds.
func TestLeaderReadsWaitThroughElection(t *testing.T) {
	nodes, conns, kv := clusterBucket(t)
	wait.Retry(t, "put", func(ctx context.Context) error {
		_, err := kv.Put(ctx, "k", []byte("v"))
		return err
	})
	js, _ := jetstream.New(conns[0])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := js.Stream(ctx, "KV_b")
	if err != nil {
		t.Fatal(err)
	}
	leader := info.CachedInfo().Cluster.Leader
	var reader *nats.Conn
	killed := false
	for i, n := range nodes {
		if n.Name() == leader {
			n.Shutdown()
			killed = true
		} else {
			reader = conns[i]
		}
	}
	if !killed {
		t.Fatalf("no node named %q, the stream's leader", leader)
	}
	if v, _, err := natsd.LeaderGet(ctx, reader, "b", "k"); err != nil || string(v) != "v" {
		t.Fatalf("read while electing a leader: %q %v", v, err)
	}
	if keys, err := natsd.LeaderKeys(ctx, reader, "b", ""); err != nil || len(keys) != 1 {
		t.Fatalf("list while electing a leader: %q %v", keys, err)
	}
}

// clusterBucket is KV bucket "b", with 3 replicas, on 3 clustered nodes,
// and a connection to each node.
func clusterBucket(t *testing.T) ([]*server.Server, []*nats.Conn, jetstream.KeyValue) {
	nodes := natstest.Cluster(t, 3)
	var conns []*nats.Conn
	for _, n := range nodes {
		conns = append(conns, natstest.ConnectTo(t, n))
	}
	js, _ := jetstream.New(conns[0])
	var kv jetstream.KeyValue
	wait.Retry(t, "create the bucket", func(ctx context.Context) (err error) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b", Replicas: 3})
		return err
	})
	return nodes, conns, kv
}
