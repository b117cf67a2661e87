package imagefs_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/imagefs"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
)

// workingSetImage imports, for each account, an image of a one-chunk
// entrypoint and a data file of twelve chunks whose chunk i is all byte i.
func workingSetImage(t *testing.T, accounts ...string) (*images.Store, []string) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	var data []byte
	for i := range 12 {
		data = append(data, bytes.Repeat([]byte{byte(i)}, chunk.DefaultSize)...)
	}
	st := imagestest.NewStore(t)
	var names []string
	for _, acct := range accounts {
		imp, err := st.ImportImage(context.Background(), acct, imagestest.Image(t, "amd64", v1.Config{Entrypoint: []string{"/bin/app"}},
			imagestest.Layer(t, imagestest.File{Name: "bin/app", Body: []byte("app"), Mode: 0o755}, imagestest.File{Name: "data", Body: data})), "amd64")
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, imp.ManifestName)
	}
	return st.Store, names
}

// start mounts manifest for account on mt and reads the given chunks of
// /data, as an environment's start would; the mount is gone when it returns.
func start(t *testing.T, mt *imagefs.Mounter, account, manifest string, chunks ...int) {
	t.Helper()
	dir, _, release, err := mt.Mount(context.Background(), account, manifest)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for _, i := range chunks {
		if _, err := f.ReadAt(buf, int64(i)*chunk.DefaultSize+1000); err != nil || buf[0] != byte(i) {
			t.Fatalf("chunk %d read %d: %v", i, buf[0], err)
		}
	}
	f.Close()
	release()
	if err := mt.Close(); err != nil {
		t.Fatal(err)
	}
}

// fetchedAfterMount mounts manifest on a fresh mounter (nothing cached)
// with sets, reads nothing, and returns the chunks the mount fetched by
// itself once its prefetch is over.
func fetchedAfterMount(t *testing.T, st *images.Store, sets *imagefs.WorkingSets, cfg imagefs.Config, account, manifest string, want int64) int64 {
	t.Helper()
	mt := &imagefs.Mounter{Store: st, Dir: t.TempDir(), Sets: sets, Config: cfg}
	defer mt.Close()
	_, _, release, err := mt.Mount(context.Background(), account, manifest)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	chunks := func() int64 { return mt.BytesFetched() / chunk.DefaultSize }
	for deadline := time.Now().Add(30 * time.Second); chunks() < want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // anything more it was going to fetch
	return chunks()
}

// TestWorkingSetPrefetched: the chunks a start read are fetched by the
// image's next fresh mount on the worker before anything reads them (with
// its entrypoint: its one chunk is "app", counted as none of the data's
// full ones), and nothing else of the image is.
func TestWorkingSetPrefetched(t *testing.T) {
	st, names := workingSetImage(t, "111111111111")
	sets := &imagefs.WorkingSets{}
	if n := fetchedAfterMount(t, st, sets, imagefs.Config{}, "111111111111", names[0], 0); n != 0 {
		t.Fatalf("a mount with no working set fetched %d data chunks", n)
	}
	start(t, &imagefs.Mounter{Store: st, Dir: t.TempDir(), Sets: sets}, "111111111111", names[0], 7, 2, 9)
	if n := fetchedAfterMount(t, st, sets, imagefs.Config{}, "111111111111", names[0], 3); n != 3 {
		t.Fatalf("the next mount fetched %d data chunks, want the 3 the start read", n)
	}
}

// TestWorkingSetBounded: a start that reads the whole image (as a hostile
// one may) records no more than half the chunk cache, and the next mount
// prefetches no more than that.
func TestWorkingSetBounded(t *testing.T) {
	st, names := workingSetImage(t, "111111111111")
	sets := &imagefs.WorkingSets{}
	cfg := imagefs.Config{CacheChunks: 8}
	start(t, &imagefs.Mounter{Store: st, Dir: t.TempDir(), Sets: sets, Config: cfg}, "111111111111", names[0], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
	if n := fetchedAfterMount(t, st, sets, cfg, "111111111111", names[0], 4); n != 4 {
		t.Fatalf("the next mount fetched %d data chunks, want 4 (half the cache of 8)", n)
	}
}

// TestWorkingSetPerAccount: a working set is the account's: another
// account's mount of the same image (same digest) prefetches none of it.
func TestWorkingSetPerAccount(t *testing.T) {
	st, names := workingSetImage(t, "111111111111", "222222222222", "111111111111")
	sets := &imagefs.WorkingSets{}
	start(t, &imagefs.Mounter{Store: st, Dir: t.TempDir(), Sets: sets}, "111111111111", names[0], 1, 2, 3)
	if n := fetchedAfterMount(t, st, sets, imagefs.Config{}, "222222222222", names[1], 0); n != 0 {
		t.Fatalf("another account's mount fetched %d data chunks", n)
	}
	// The same image imported again by the account (another manifest, the
	// same digest) starts from the set.
	if names[2] == names[0] {
		t.Fatal("the second import has the first's manifest")
	}
	if n := fetchedAfterMount(t, st, sets, imagefs.Config{}, "111111111111", names[2], 3); n != 3 {
		t.Fatalf("the account's next mount fetched %d data chunks, want 3", n)
	}
}
