package accounts_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/accounts"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

func open(t *testing.T) (*accounts.Store, jetstream.JetStream) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := accounts.Open(context.Background(), js, accounts.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

// A keyring following the bucket (a frontend's) takes keys added and
// removed through another store (the control plane's) while it runs.
func TestKeysFollowed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, js := open(t)
	if err := s.EnsureAdmin(ctx, "123456789012"); err != nil {
		t.Fatal(err)
	}
	a, first, err := s.Create(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.ID) != 12 || a.Admin || first.Account != a.ID || first.SecretAccessKey == "" {
		t.Fatalf("created %+v %+v", a, first)
	}

	other, err := accounts.Open(ctx, js, accounts.Config{}) // binds to the bucket
	if err != nil {
		t.Fatal(err)
	}
	k := auth.NewKeyring()
	if err := other.Follow(ctx, k); err != nil {
		t.Fatal(err)
	}
	if acct, ok := k.Password(first.AccessKeyID, first.SecretAccessKey); !ok || acct != a.ID {
		t.Fatalf("a stored key is not in the keyring once Follow returns: %q %v", acct, ok)
	}
	second, err := s.AddKey(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	wait.True(t, "the added key", func() bool { _, ok := k.Password(second.AccessKeyID, second.SecretAccessKey); return ok })
	if _, ok := k.Password(second.AccessKeyID, first.SecretAccessKey); ok {
		t.Fatal("a key's id with another key's secret is accepted")
	}
	if err := s.RemoveKey(ctx, "123456789012", first.AccessKeyID); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("removing a key through another account: %v; want ErrNotFound", err)
	}
	if err := s.RemoveKey(ctx, a.ID, first.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	wait.True(t, "the removed key gone", func() bool { _, ok := k.Password(first.AccessKeyID, first.SecretAccessKey); return !ok })
	if _, ok := k.Password(second.AccessKeyID, second.SecretAccessKey); !ok {
		t.Fatal("removing one key removed the other")
	}

	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// List sorts by id, and the new account's id is random: it may come before the admin's.
	team := slices.IndexFunc(list, func(e accounts.Listed) bool { return e.ID == a.ID })
	if len(list) != 2 || team < 0 || !list[1-team].Admin || len(list[team].Keys) != 1 || list[team].Keys[0] != second.AccessKeyID {
		t.Fatalf("List = %+v", list)
	}
	for i := 0; i < accounts.MaxKeys-1; i++ {
		if _, err := s.AddKey(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddKey(ctx, a.ID); !errors.Is(err, accounts.ErrTooMany) {
		t.Fatalf("key %d: %v; want ErrTooMany", accounts.MaxKeys+1, err)
	}
	if _, err := s.AddKey(ctx, "999999999999"); !errors.Is(err, accounts.ErrNotFound) {
		t.Fatalf("a key of no account: %v", err)
	}
}

// In a cluster, an account created through one node is listed, with its
// key, through the others at once.
func TestListedRightAfterCreateInCluster(t *testing.T) {
	var stores []*accounts.Store
	for _, n := range natstest.Cluster(t, 3) {
		js, _ := jetstream.New(natstest.ConnectTo(t, n))
		var s *accounts.Store
		wait.Retry(t, "open the store", func(ctx context.Context) (err error) {
			s, err = accounts.Open(ctx, js, accounts.Config{Replicas: 3})
			return err
		})
		stores = append(stores, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 20 {
		a, k, err := stores[0].Create(ctx, fmt.Sprint("a", i))
		if err != nil {
			t.Fatal(err)
		}
		list, err := stores[1+i%2].List(ctx)
		if err != nil || len(list) != i+1 || !slices.ContainsFunc(list, func(l accounts.Listed) bool {
			return l.ID == a.ID && slices.Equal(l.Keys, []string{k.AccessKeyID})
		}) {
			t.Fatalf("listed %+v (%v) right after creating %s with key %s", list, err, a.ID, k.AccessKeyID)
		}
	}
}
