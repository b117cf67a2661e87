package codebucket_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/codebucket"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/nats-io/nats.go/jetstream"
)

func zipOf(t *testing.T, name, body string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create(name)
	w.Write([]byte(body))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// openBucket opens the bucket in a NATS server of the test's own.
func openBucket(t *testing.T) *codebucket.Bucket {
	js, _ := jetstream.New(natstest.Connect(t))
	b, err := codebucket.Open(context.Background(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSharedThroughTheBucket: what one store (a control plane) puts,
// another (a worker, with an empty directory) unpacks by digest alone,
// the first one's zips gone.
func TestSharedThroughTheBucket(t *testing.T) {
	ctx := context.Background()
	b := openBucket(t)
	open := func() (*codestore.Store, string) {
		dir := t.TempDir()
		s, err := codestore.Open(codestore.Config{Dir: dir, Remote: b})
		if err != nil {
			t.Fatal(err)
		}
		return s, dir
	}
	cp, cpDir := open()
	wk, _ := open()
	other, _ := open()
	code, err := cp.Put(ctx, zipOf(t, "bootstrap", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(cpDir, "zips")); err != nil { // the control plane's disk is gone
		t.Fatal(err)
	}
	if wk.Has(code.Sha256) {
		t.Fatal("worker has the code before fetching it")
	}
	dir, err := wk.Dir(ctx, code.Sha256)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "bootstrap")); string(got) != "v1" {
		t.Fatalf("fetched tree: %q", got)
	}
	if _, err := other.Put(ctx, zipOf(t, "bootstrap", "v1")); err != nil { // again: already in the bucket
		t.Fatal(err)
	}

	missing := codestore.Digest([]byte("never uploaded"))
	if _, err := wk.Dir(ctx, missing); !errors.Is(err, codestore.ErrNotFound) {
		t.Fatalf("missing code: %v, want ErrNotFound", err)
	}
	// A zip under another's digest (a Remote that lies) is refused.
	liar, _ := codestore.Open(codestore.Config{Dir: t.TempDir(), Remote: lying{b, zipOf(t, "bootstrap", "evil")}})
	if _, err := liar.Dir(ctx, code.Sha256); err == nil || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("a zip under another's digest: %v", err)
	}
}

// lying answers every Get with the same zip, whatever was asked.
type lying struct {
	*codebucket.Bucket
	zip []byte
}

func (l lying) Get(context.Context, string) ([]byte, error) { return l.zip, nil }

// counted counts the downloads from the bucket under it.
type counted struct {
	*codebucket.Bucket
	gets atomic.Int32
}

func (c *counted) Get(ctx context.Context, h string) ([]byte, error) {
	c.gets.Add(1)
	return c.Bucket.Get(ctx, h)
}

// TestOneDownloadAtOnce: a worker starting many environments of new code
// at once downloads it once.
func TestOneDownloadAtOnce(t *testing.T) {
	ctx := context.Background()
	b := openBucket(t)
	cp, _ := codestore.Open(codestore.Config{Dir: t.TempDir(), Remote: b})
	code, err := cp.Put(ctx, zipOf(t, "bootstrap", string(bytes.Repeat([]byte("x"), 1<<20))))
	if err != nil {
		t.Fatal(err)
	}
	remote := &counted{Bucket: b}
	wk, _ := codestore.Open(codestore.Config{Dir: t.TempDir(), Remote: remote})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := wk.Dir(ctx, code.Sha256); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := remote.gets.Load(); n != 1 {
		t.Fatalf("%d downloads", n)
	}
}

// TestSweepTheBucket: a control plane's Sweep deletes from the bucket the
// zips nothing keeps, past the grace, whichever control plane uploaded
// them; a worker then cannot fetch them, and what is kept still fetches.
func TestSweepTheBucket(t *testing.T) {
	ctx := context.Background()
	b := openBucket(t)
	cp, _ := codestore.Open(codestore.Config{Dir: t.TempDir(), Remote: b})
	other, _ := codestore.Open(codestore.Config{Dir: t.TempDir(), Remote: b})
	kept, err := cp.Put(ctx, zipOf(t, "bootstrap", "kept"))
	if err != nil {
		t.Fatal(err)
	}
	gone, err := other.Put(ctx, zipOf(t, "bootstrap", "gone"))
	if err != nil {
		t.Fatal(err)
	}
	keep := func(sha string) bool { return sha == kept.Sha256 }
	if n, err := cp.Sweep(ctx, keep, time.Now().Add(-time.Hour)); err != nil || n.Blobs != 0 {
		t.Fatalf("Sweep within the grace = %+v, %v", n, err)
	}
	n, err := cp.Sweep(ctx, keep, time.Now().Add(time.Second))
	if err != nil || n.Blobs != 1 || n.Bytes != gone.Size {
		t.Fatalf("Sweep = %+v, %v; want the one zip of %d bytes", n, err, gone.Size)
	}
	wk, _ := codestore.Open(codestore.Config{Dir: t.TempDir(), Remote: b})
	if _, err := wk.Dir(ctx, gone.Sha256); !errors.Is(err, codestore.ErrNotFound) {
		t.Fatalf("swept zip fetched: %v", err)
	}
	if _, err := wk.Dir(ctx, kept.Sha256); err != nil {
		t.Fatalf("kept zip: %v", err)
	}
}
