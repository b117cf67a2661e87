package imagefs_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/imagefs"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
)

func mountedAt(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestMounterSharesAndUnmountsUnused: environments of one image share one
// mount, which stays while any of them holds it and goes once none has for
// Grace; the next environment mounts it again.
func TestMounterSharesAndUnmountsUnused(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	ctx := context.Background()
	st := imagestest.NewStore(t)
	imp, err := st.ImportImage(ctx, "111111111111", imagestest.Image(t, "amd64", v1.Config{WorkingDir: "/w"},
		imagestest.Layer(t, imagestest.File{Name: "f", Body: []byte("content")})), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	mt := &imagefs.Mounter{Store: st.Store, Dir: t.TempDir(), Grace: 20 * time.Millisecond}
	defer mt.Close()
	dir1, cfg, release1, err := mt.Mount(ctx, "111111111111", imp.ManifestName)
	if err != nil || cfg.WorkingDir != "/w" {
		t.Fatal(err, cfg)
	}
	dir2, _, release2, err := mt.Mount(ctx, "111111111111", imp.ManifestName)
	if err != nil || dir2 != dir1 || mt.Mounted() != 1 {
		t.Fatalf("second environment: %s vs %s, %d mounts, %v", dir2, dir1, mt.Mounted(), err)
	}
	for _, mp := range []string{"dev", "proc", "tmp"} {
		if fi, err := os.Stat(filepath.Join(dir1, mp)); err != nil || !fi.IsDir() {
			t.Errorf("mount point %s: %v", mp, err)
		}
	}
	release1()
	release1()                         // twice is once
	time.Sleep(100 * time.Millisecond) // five times Grace: still held by the second
	if !mountedAt(dir1) {
		t.Fatal("unmounted while an environment held it")
	}
	release2()
	for deadline := time.Now().Add(30 * time.Second); mountedAt(dir1) || mt.Mounted() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an unused image stayed mounted")
		}
	}
	dir3, _, release3, err := mt.Mount(ctx, "111111111111", imp.ManifestName)
	if err != nil {
		t.Fatal(err)
	}
	defer release3()
	if b, err := os.ReadFile(filepath.Join(dir3, "f")); err != nil || string(b) != "content" {
		t.Fatalf("remounted: %q, %v", b, err)
	}
	if _, _, _, err := mt.Mount(ctx, "222222222222", imp.ManifestName); err == nil {
		t.Fatal("another account mounted the image")
	}
}

// TestMounterSharesChunksAcrossImages: two images sharing a base file,
// mounted by one worker, and the entrypoint prefetched at mount: the
// shared file's chunks are fetched (hashed, decrypted) once for both.
func TestMounterSharesChunksAcrossImages(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	ctx := context.Background()
	st := imagestest.NewStore(t)
	base := bytes.Repeat([]byte("base layer "), 200_000) // 2.2 MB: five chunks
	baseLayer := imagestest.Layer(t, imagestest.File{Name: "opt/base", Body: base}, imagestest.File{Name: "bin/app", Body: []byte("app"), Mode: 0o755})
	var names []string
	for _, own := range []string{"one", "two"} {
		imp, err := st.ImportImage(ctx, "111111111111", imagestest.Image(t, "amd64", v1.Config{Entrypoint: []string{"/bin/app"}}, baseLayer,
			imagestest.Layer(t, imagestest.File{Name: "own", Body: []byte(own)})), "amd64")
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, imp.ManifestName)
	}
	mt := &imagefs.Mounter{Store: st.Store, Dir: t.TempDir()}
	defer mt.Close()
	read := func(manifest string) {
		dir, _, release, err := mt.Mount(ctx, "111111111111", manifest)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if b, err := os.ReadFile(filepath.Join(dir, "opt/base")); err != nil || !bytes.Equal(b, base) {
			t.Fatalf("read %d bytes, %v", len(b), err)
		}
	}
	read(names[0])
	first := mt.BytesFetched()
	if first < int64(len(base)) {
		t.Fatalf("the first image fetched %d bytes, its base file is %d", first, len(base))
	}
	read(names[1])
	// The second mount fetched its entrypoint's chunk (the same: shared)
	// and nothing of the base.
	if more := mt.BytesFetched() - first; more != 0 {
		t.Fatalf("the second image fetched %d more bytes; its base's chunks were cached", more)
	}
}
