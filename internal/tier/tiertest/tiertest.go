// Package tiertest is the conformance suite every tier.Store runs.
package tiertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/tier"
)

// Run checks the behaviour every tier shares. open returns a new, empty store
// holding at least 8 MiB.
func Run(t *testing.T, open func(t *testing.T) tier.Store) {
	ctx := context.Background()
	blob := func(s string) (string, []byte) { b := []byte(s); return tier.Name(b), b }

	t.Run("RoundTrip", func(t *testing.T) {
		s := open(t)
		name, b := blob("a chunk")
		if err := s.Put(ctx, name, b); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, name)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("Get = %q, %v", got, err)
		}
	})
	t.Run("Large", func(t *testing.T) { // larger than one NATS message
		s := open(t)
		b := make([]byte, 5<<20/2)
		for i := range b {
			b[i] = byte(i * 31)
		}
		name := tier.Name(b)
		if err := s.Put(ctx, name, b); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, name)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("Get: %d bytes, %v", len(got), err)
		}
	})
	t.Run("BytesAreTheCallers", func(t *testing.T) {
		// A reader decrypts a chunk in the bytes Get gave it, and a
		// writer may reuse its buffer once Put returns: neither may
		// change what the store holds.
		s := open(t)
		name, b := blob("kept as put")
		put := bytes.Clone(b)
		if err := s.Put(ctx, name, put); err != nil {
			t.Fatal(err)
		}
		clear(put)
		got, err := s.Get(ctx, name)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("Get after the put's buffer changed = %q, %v", got, err)
		}
		clear(got)
		if got, err = s.Get(ctx, name); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("Get after a reader changed its bytes = %q, %v", got, err)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		s := open(t)
		name, _ := blob("never put")
		if _, err := s.Get(ctx, name); !errors.Is(err, tier.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("PutTwice", func(t *testing.T) {
		s := open(t)
		name, b := blob("twice")
		for range 2 {
			if err := s.Put(ctx, name, b); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := s.Get(ctx, name); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("Get = %q, %v", got, err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		name, b := blob("deleted")
		if err := s.Put(ctx, name, b); err != nil {
			t.Fatal(err)
		}
		for range 2 { // deleting what is gone is not an error
			if err := s.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Get(ctx, name); !errors.Is(err, tier.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("RefusesPathNames", func(t *testing.T) {
		s := open(t)
		for _, name := range []string{"", "../../etc/passwd", "ab/" + tier.Name(nil)[3:], tier.Name(nil) + "x"} {
			if err := s.Put(ctx, name, []byte("x")); err == nil {
				t.Errorf("Put(%q) accepted", name)
			}
			if _, err := s.Get(ctx, name); err == nil {
				t.Errorf("Get(%q) succeeded", name)
			}
		}
	})
	t.Run("ListRemove", func(t *testing.T) {
		l, ok := open(t).(tier.Lister)
		if !ok {
			t.Skip("not an authoritative store")
		}
		s := l.(tier.Store)
		big := make([]byte, 5<<20/2) // parts, in JetStream
		big[0] = 1
		names := map[string][]byte{tier.Name(big): big}
		for _, v := range []string{"swept", "renewed"} {
			name, b := blob(v)
			names[name] = b
		}
		before := time.Now().Add(-time.Second)
		for name, b := range names {
			if err := s.Put(ctx, name, b); err != nil {
				t.Fatal(err)
			}
		}
		listed := list(t, l)
		if len(listed) != len(names) {
			t.Fatalf("listed %d blobs, want %d", len(listed), len(names))
		}
		for name, b := range names {
			if got := listed[name]; got.Size != int64(len(b)) || got.Written.Before(before) || got.Written.After(time.Now().Add(time.Second)) {
				t.Errorf("listed %s as %+v, want %d bytes written now", name[:8], got, len(b))
			}
		}
		// Put again (an import reusing it): renewed, so the listing's
		// decision no longer holds. Listing times may be whole seconds.
		renewed, _ := blob("renewed")
		wait.For(t, "a Put again to renew the blob", func() error {
			if err := s.Put(ctx, renewed, names[renewed]); err != nil {
				return err
			}
			if w := list(t, l)[renewed].Written; w.Truncate(time.Second).Equal(listed[renewed].Written.Truncate(time.Second)) {
				return fmt.Errorf("still written at %v", w)
			}
			return nil
		})
		if ok, err := l.Remove(ctx, listed[renewed]); ok || err != nil {
			t.Fatalf("Remove of a blob put since it was listed = %v, %v", ok, err)
		}
		for name := range names {
			if name == renewed {
				continue
			}
			if ok, err := l.Remove(ctx, listed[name]); !ok || err != nil {
				t.Fatalf("Remove = %v, %v", ok, err)
			}
			if _, err := s.Get(ctx, name); !errors.Is(err, tier.ErrNotFound) {
				t.Fatalf("removed blob: %v", err)
			}
			if ok, err := l.Remove(ctx, listed[name]); ok || err != nil {
				t.Fatalf("Remove again = %v, %v", ok, err)
			}
		}
		if got, err := s.Get(ctx, renewed); err != nil || !bytes.Equal(got, names[renewed]) {
			t.Fatalf("renewed blob = %q, %v", got, err)
		}
		if left := list(t, l); len(left) != 1 || left[renewed].Name != renewed {
			t.Fatalf("listed after removal: %v", left)
		}
		// Written anew after removal: whole again.
		for name, b := range names {
			if err := s.Put(ctx, name, b); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, name); err != nil || !bytes.Equal(got, b) {
				t.Fatalf("Get after a Put again of a removed blob: %d bytes, %v", len(got), err)
			}
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name, b := blob(fmt.Sprint(i % 4)) // four writers per blob
				if err := s.Put(ctx, name, b); err != nil {
					errs <- err
					return
				}
				if got, err := s.Get(ctx, name); err != nil || !bytes.Equal(got, b) {
					errs <- fmt.Errorf("Get %d = %q, %v", i, got, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// list reads a store's whole listing.
func list(t *testing.T, l tier.Lister) map[string]tier.Blob {
	t.Helper()
	out := map[string]tier.Blob{}
	for b, err := range l.List(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		out[b.Name] = b
	}
	return out
}
