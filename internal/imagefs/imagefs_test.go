package imagefs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/internal/imagefs"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
)

const chunkSize = 64 << 10

type mounted struct {
	fs    *imagefs.FS
	dir   string
	store string // the authoritative store's directory
	m     *images.Manifest
}

// mount imports an image built from files and mounts it; the test needs
// /dev/fuse and root, and is skipped without them.
func mount(t *testing.T, cfg imagefs.Config, files ...imagestest.File) mounted {
	t.Helper()
	imagestest.RequireFUSE(t, false)
	ctx := context.Background()
	st := imagestest.NewStore(t)
	s := st.Store
	s.ChunkSize = chunkSize
	imp, err := s.ImportImage(ctx, "111111111111", imagestest.Image(t, "amd64", v1.Config{}, imagestest.Layer(t, files...)), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	f, err := imagefs.Mount(mnt, imp.Manifest, s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mounted{f, mnt, st.Root, imp.Manifest}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{7}).Read(b)
	return b
}

func hdr(h tar.Header) imagestest.File { return imagestest.File{Header: &h} }

func TestPresentsTheImage(t *testing.T) {
	big := random(10*chunkSize + 123)
	m := mount(t, imagefs.Config{},
		imagestest.File{Name: "bin/tool", Body: []byte("#!/bin/sh\n"), Mode: 0o4755},
		hdr(tar.Header{Name: "home/app/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000}),
		imagestest.File{Name: "home/app/big", Body: big},
		hdr(tar.Header{Name: "home/app/big2", Typeflag: tar.TypeLink, Linkname: "home/app/big"}),
		hdr(tar.Header{Name: "etc/passwd-link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd", Mode: 0o777}),
		hdr(tar.Header{Name: "x", Typeflag: tar.TypeReg, Mode: 0o600, PAXRecords: map[string]string{"SCHILY.xattr.user.note": "hi"}}),
		imagestest.File{Name: "empty", Body: nil},
	)
	got, err := os.ReadFile(filepath.Join(m.dir, "home/app/big"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big: %d bytes, %v", len(got), err)
	}
	// Reads at offsets across chunk boundaries.
	f, err := os.Open(filepath.Join(m.dir, "home/app/big2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, chunkSize - 3, 3*chunkSize + 1, int64(len(big)) - 5} {
		buf := make([]byte, chunkSize+10)
		n, _ := f.ReadAt(buf, off)
		if want := big[off:min(off+int64(len(buf)), int64(len(big)))]; !bytes.Equal(buf[:n], want) {
			t.Errorf("ReadAt %d: %d bytes differ", off, n)
		}
	}
	var st, st2 syscall.Stat_t
	syscall.Lstat(filepath.Join(m.dir, "home/app/big"), &st)
	syscall.Lstat(filepath.Join(m.dir, "home/app/big2"), &st2)
	if st.Ino != st2.Ino || st.Nlink != 2 || st.Size != int64(len(big)) {
		t.Errorf("hard links: ino %d/%d nlink %d size %d", st.Ino, st2.Ino, st.Nlink, st.Size)
	}
	syscall.Lstat(filepath.Join(m.dir, "home/app"), &st)
	if st.Mode&0o7777 != 0o750 || st.Uid != 1000 || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Errorf("home/app: mode %o uid %d", st.Mode, st.Uid)
	}
	syscall.Lstat(filepath.Join(m.dir, "bin/tool"), &st)
	if st.Mode&0o7777 != 0o755 {
		t.Errorf("bin/tool mode %o: setuid not stripped", st.Mode&0o7777)
	}
	if target, err := os.Readlink(filepath.Join(m.dir, "etc/passwd-link")); err != nil || target != "/etc/passwd" {
		t.Errorf("symlink: %q, %v", target, err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(filepath.Join(m.dir, "x"), "user.note", buf); err != nil || string(buf[:n]) != "hi" {
		t.Errorf("xattr: %q, %v", buf[:n], err)
	}
	if b, err := os.ReadFile(filepath.Join(m.dir, "empty")); err != nil || len(b) != 0 {
		t.Errorf("empty: %q, %v", b, err)
	}
	ents, err := os.ReadDir(m.dir)
	if err != nil || len(ents) != 5 {
		t.Errorf("root lists %v, %v", ents, err)
	}
	for _, op := range []func() error{
		func() error { return os.WriteFile(filepath.Join(m.dir, "new"), nil, 0o644) },
		func() error { _, err := os.OpenFile(filepath.Join(m.dir, "x"), os.O_WRONLY, 0); return err },
		func() error { return os.Remove(filepath.Join(m.dir, "x")) },
		func() error { return os.Mkdir(filepath.Join(m.dir, "d"), 0o755) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write: %v, want EROFS", err)
		}
	}
}

// TestLazy: mounting fetches nothing; reading the start of a file fetches
// its first chunks only; reading it all fetches each chunk once.
func TestLazy(t *testing.T) {
	big := random(32 * chunkSize)
	m := mount(t, imagefs.Config{ReadAhead: 2}, imagestest.File{Name: "big", Body: big})
	if n := m.fs.Stats.ChunksFetched.Load(); n != 0 {
		t.Fatalf("mount fetched %d chunks", n)
	}
	f, err := os.Open(filepath.Join(m.dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.Read(b); err != nil || b[0] != big[0] {
		t.Fatal(err)
	}
	if n := m.fs.Stats.ChunksFetched.Load(); n == 0 || n > 16 {
		t.Fatalf("a 1-byte read fetched %d of 32 chunks", n)
	}
	all, err := os.ReadFile(filepath.Join(m.dir, "big"))
	if err != nil || !bytes.Equal(all, big) {
		t.Fatal("content differs", err)
	}
	if n := m.fs.Stats.ChunksFetched.Load(); n != 32 {
		t.Fatalf("reading all fetched %d chunks, want 32", n)
	}
}

// TestTamperedChunkIsNotServed: a read of a chunk changed in the store fails
// with EIO rather than return its bytes.
func TestTamperedChunkIsNotServed(t *testing.T) {
	m := mount(t, imagefs.Config{ReadAhead: -1}, imagestest.File{Name: "f", Body: []byte("genuine")})
	ref := m.m.Entries[len(m.m.Entries)-1].Chunks[0]
	p := filepath.Join(m.store, ref.ID.String()[:2], ref.ID.String())
	ct, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	ct[1] ^= 1
	os.WriteFile(p, ct, 0o600)
	if b, err := os.ReadFile(filepath.Join(m.dir, "f")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read %q, %v; want EIO", b, err)
	}
}

// TestPagesKeptAcrossOpens: a file read once is read again, through a new
// open, from the kernel's page cache (contents never change), not fetched
// again, though the chunk cache holds one chunk: opens do not reach the
// file system (no_open) and keep the pages.
func TestPagesKeptAcrossOpens(t *testing.T) {
	body := random(4 * chunkSize)
	m := mount(t, imagefs.Config{CacheChunks: 1, ReadAhead: -1}, imagestest.File{Name: "f", Body: body})
	var first int64
	for i := range 3 {
		if b, err := os.ReadFile(filepath.Join(m.dir, "f")); err != nil || !bytes.Equal(b, body) {
			t.Fatalf("read %d bytes: %v", len(b), err)
		}
		if i == 0 {
			first = m.fs.Stats.ChunksFetched.Load()
		}
	}
	if n := m.fs.Stats.ChunksFetched.Load(); n != first {
		t.Fatalf("reading the file again fetched %d chunks more", n-first)
	}
}

// TestReadNotSplit: a 1 MiB read() of pages not cached reaches the file
// system as one request (two: it is not page-aligned), not as the kernel's
// default 128 KiB read-ahead windows one after another, which fetched the
// read's chunks one at a time.
func TestReadNotSplit(t *testing.T) {
	big := random(4 << 20)
	m := mount(t, imagefs.Config{ReadAhead: -1}, imagestest.File{Name: "big", Body: big})
	f, err := os.Open(filepath.Join(m.dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const off = 700<<10 + 123
	buf := make([]byte, 1<<20)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, big[off:off+len(buf)]) {
		t.Fatal("read the wrong bytes")
	}
	if n := m.fs.Stats.Reads.Load(); n > 2 {
		t.Fatalf("a 1 MiB read came as %d requests", n)
	}
}
