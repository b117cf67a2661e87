package metadata_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go/jetstream"
)

// stores opens n stores on one embedded JetStream, each on its own
// connection, as n control planes would.
func stores(t *testing.T, n int) []*metadata.Store {
	t.Helper()
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir()}) // not nats-server's default dir, shared under /tmp
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	var out []*metadata.Store
	for i := 0; i < n; i++ {
		nc, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		s, err := metadata.Open(context.Background(), js, metadata.Config{})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestLockExcludes: holders on different stores never overlap.
func TestLockExcludes(t *testing.T) {
	ss := stores(t, 3)
	ctx := context.Background()
	var inside, overlaps, rounds atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				unlock, err := ss[i%3].Lock(ctx, "acct", 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				time.Sleep(time.Millisecond) // holds the lock a moment, so that an overlap would show
				inside.Add(-1)
				rounds.Add(1)
				unlock()
			}
		}()
	}
	wg.Wait()
	if overlaps.Load() > 0 || rounds.Load() != 60 {
		t.Fatalf("%d overlaps in %d rounds", overlaps.Load(), rounds.Load())
	}
}

// TestLockOvertaken: a lock whose holder died (never unlocked) is taken
// once its ttl lapsed, not before; the dead holder's late unlock does not
// release the new holder's lock.
func TestLockOvertaken(t *testing.T) {
	ss := stores(t, 2)
	ctx := context.Background()
	// A ttl well past the 100 ms attempt below, however a loaded host
	// delays that attempt after this write.
	deadUnlock, err := ss[0].Lock(ctx, "acct", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := ss[1].Lock(short, "acct", time.Second); err == nil {
		t.Fatal("took a lock still held")
	}
	unlock, err := ss[1].Lock(ctx, "acct", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	deadUnlock() // too late: it was overtaken
	short2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if _, err := ss[0].Lock(short2, "acct", time.Second); err == nil {
		t.Fatal("the overtaken holder's unlock released the new holder's lock")
	}
	unlock()
	if u, err := ss[0].Lock(ctx, "acct", time.Second); err != nil {
		t.Fatal(err)
	} else {
		u()
	}
	// Locks do not show as functions.
	if fns, err := ss[0].All(ctx); err != nil || len(fns) != 0 {
		t.Fatalf("All: %v %v", fns, err)
	}
}
