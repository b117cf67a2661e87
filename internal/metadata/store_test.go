package metadata

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"

	"github.com/nats-io/nats.go/jetstream"
)

// testStore is a store in a JetStream of its own, stopped when the test ends.
func testStore(t *testing.T) *Store {
	t.Helper()
	nc := natstest.Connect(t)
	js, _ := jetstream.New(nc)
	s, err := Open(context.Background(), js, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A replicated store reads through the stream leader's message get: the
// same functions, revisions that compare-and-set accepts, deletes seen.
func TestLeaderRead(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	s.kv.Leader = s.js.Conn() // one server: the leader's answer, as in a cluster
	const account = "111122223333"
	if _, err := s.Get(ctx, account, "f"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a missing function: %v", err)
	}
	if err := s.Create(ctx, &Function{Account: account, Name: "f"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // each read's revision is the one the next write compares with
		if _, err := s.Modify(ctx, account, "f", func(f *Function) error {
			n := i
			f.ReservedConcurrency = &n
			return nil
		}); err != nil {
			t.Fatalf("modify %d: %v", i, err)
		}
		f, err := s.Get(ctx, account, "f")
		if err != nil || f.ReservedConcurrency == nil || *f.ReservedConcurrency != i {
			t.Fatalf("get after modify %d: %+v %v", i, f, err)
		}
	}
	if fs, err := s.List(ctx, account); err != nil || len(fs) != 1 || fs[0].Name != "f" {
		t.Fatalf("list: %v %v", fs, err)
	}
	if err := s.Delete(ctx, account, "f"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, account, "f"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a deleted function: %v", err)
	}
	if fs, err := s.List(ctx, account); err != nil || len(fs) != 0 {
		t.Fatalf("list after delete: %v %v", fs, err)
	}
}

// Follow gives the functions there already, then every write and delete,
// with the values written.
func TestFollow(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := testStore(t)
	create := func(name string) {
		if err := store.Create(ctx, &Function{Account: "111122223333", Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	create("before")

	var mu sync.Mutex
	seen := map[string]*int{} // name → reserved concurrency, as followed
	gone := map[string]bool{}
	if err := store.Follow(ctx, func(account, name string, f *Function) {
		mu.Lock()
		defer mu.Unlock()
		if f == nil {
			gone[name] = true
			delete(seen, name)
			return
		}
		if f.Account != account || f.Name != name {
			t.Errorf("followed %s/%s with the function %s/%s", account, name, f.Account, f.Name)
		}
		seen[name] = f.ReservedConcurrency
	}); err != nil {
		t.Fatal(err)
	}
	await := func(what string, cond func() bool) {
		t.Helper()
		wait.True(t, "followed: "+what, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return cond()
		})
	}
	await("a function created before Follow", func() bool { _, ok := seen["before"]; return ok })
	create("after")
	await("a function created after", func() bool { _, ok := seen["after"]; return ok })
	if _, err := store.Modify(ctx, "111122223333", "after", func(f *Function) error {
		zero := 0
		f.ReservedConcurrency = &zero
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	await("a change's value", func() bool { r := seen["after"]; return r != nil && *r == 0 })
	if err := store.Delete(ctx, "111122223333", "after"); err != nil {
		t.Fatal(err)
	}
	await("a delete", func() bool { return gone["after"] })
}

// In a cluster, what one control plane writes, another sees at once: a
// function created through one node is got, listed (List, All) and its
// layer listed through the others. The KV API's listing, which a lagging
// replica may answer, failed this within a few dozen writes in each run.
func TestReadYourWritesInCluster(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	var stores []*Store
	for _, n := range nodes {
		nc := natstest.ConnectTo(t, n)
		js, _ := jetstream.New(nc)
		var s *Store
		wait.Retry(t, "open the store", func(ctx context.Context) (err error) {
			if s, err = Open(ctx, js, Config{Replicas: 3}); err == nil {
				_, err = s.Layers(ctx)
			}
			return err
		})
		stores = append(stores, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const account = "111122223333"
	for i := range 60 {
		name := fmt.Sprintf("f%02d", i)
		if err := stores[0].Create(ctx, &Function{Account: account, Name: name}); err != nil {
			t.Fatal(err)
		}
		if _, err := stores[0].mustLayers(t).Modify(ctx, account, name, func(*Layer) error { return nil }); err != nil {
			t.Fatal(err)
		}
		r := stores[1+i%2]
		if _, err := r.Get(ctx, account, name); err != nil {
			t.Fatalf("get %s right after its create: %v", name, err)
		}
		if fs, err := r.List(ctx, account); err != nil || len(fs) != i+1 {
			t.Fatalf("list right after creating %s: %d functions (%v)", name, len(fs), err)
		}
		if fs, err := r.All(ctx); err != nil || len(fs) != i+1 {
			t.Fatalf("all right after creating %s: %d functions (%v)", name, len(fs), err)
		}
		if ls, err := r.mustLayers(t).List(ctx, ""); err != nil || len(ls) != i+1 {
			t.Fatalf("layers right after creating %s: %d (%v)", name, len(ls), err)
		}
	}
}

func (s *Store) mustLayers(t *testing.T) *Layers {
	l, err := s.Layers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}
