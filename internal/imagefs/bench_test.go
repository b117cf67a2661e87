package imagefs_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/imagefs"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
)

// BenchmarkColdStart compares, on one image (a file of KILN_IMAGE_BENCH_MB
// MiB, 64 by default) in the directory store, a start that reads 5% of it:
//
//	lazy:  mount, read 5% through FUSE (chunks fetched on first read)
//	full:  fetch and decrypt every chunk, unpack the file to disk, read 5%
//	warm:  read all of it through FUSE once its chunks are cached (FUSE overhead)
//	disk:  read all of it from the local disk (what warm is compared with)
//
// The store's files are in the page cache: this measures Kiln's own costs,
// not a network.
func BenchmarkColdStart(b *testing.B) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		b.Skip("no /dev/fuse")
	}
	mb := 64
	if s := os.Getenv("KILN_IMAGE_BENCH_MB"); s != "" {
		mb, _ = strconv.Atoi(s)
	}
	size := mb << 20
	data := random(size)
	st := imagestest.NewStore(b)
	imp, err := st.ImportImage(context.Background(), "111111111111",
		imagestest.Image(b, "amd64", v1.Config{}, imagestest.Layer(b, imagestest.File{Name: "big", Body: data})), "amd64")
	if err != nil {
		b.Fatal(err)
	}
	file := imp.Manifest.Entries[len(imp.Manifest.Entries)-1]
	// 5% of the file, in 1 MiB reads (a handler loading whole files)
	// spread evenly over it.
	const readSize = 1 << 20
	reads := max(1, size/20/readSize)
	stride := int64(size / reads)
	touch := func(b *testing.B, r io.ReaderAt) {
		buf := make([]byte, readSize)
		for i := range reads {
			if _, err := r.ReadAt(buf, int64(i)*stride); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
	b.Run("lazy", func(b *testing.B) {
		var fetched int64
		for b.Loop() {
			mnt := b.TempDir()
			fs, err := imagefs.Mount(mnt, imp.Manifest, st.Store, imagefs.Config{ReadAhead: -1})
			if err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(filepath.Join(mnt, "big"))
			if err != nil {
				b.Fatal(err)
			}
			touch(b, f)
			f.Close()
			fetched += fs.Stats.BytesFetched.Load()
			fs.Unmount()
		}
		b.ReportMetric(float64(fetched)/float64(b.N)/(1<<20), "MiB-fetched/op")
	})
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			p := filepath.Join(b.TempDir(), "big")
			if err := unpack(context.Background(), st.Store, file, p); err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			touch(b, f)
			f.Close()
		}
		b.ReportMetric(float64(size)/(1<<20), "MiB-fetched/op")
	})
	b.Run("warm", func(b *testing.B) {
		mnt := b.TempDir()
		fs, err := imagefs.Mount(mnt, imp.Manifest, st.Store, imagefs.Config{CacheChunks: size/chunk.DefaultSize + 1})
		if err != nil {
			b.Fatal(err)
		}
		defer fs.Unmount()
		readAll(b, filepath.Join(mnt, "big")) // fetch every chunk once
		b.SetBytes(int64(size))
		for b.Loop() {
			readAll(b, filepath.Join(mnt, "big"))
		}
	})
	b.Run("disk", func(b *testing.B) {
		p := filepath.Join(b.TempDir(), "big")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(size))
		for b.Loop() {
			readAll(b, p)
		}
	})
}

// readAll reads p with O_DIRECT-free sequential reads, dropping nothing:
// both sides read through the page cache.
func readAll(b *testing.B, p string) {
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		b.Fatal(err)
	}
}

// unpack is what a start without lazy loading does: every chunk fetched,
// checked and decrypted, the file written out whole.
func unpack(ctx context.Context, s *images.Store, e flatten.Entry, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for _, r := range e.Chunks {
		p, err := s.Chunk(ctx, r)
		if err != nil {
			f.Close()
			return err
		}
		if _, err := f.Write(p); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// BenchmarkOpenRead opens a file of a mounted image, reads its first 4 KiB
// (cached) and closes it: what an exec or a library load costs the mount
// once its pages are cached.
func BenchmarkOpenRead(b *testing.B) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		b.Skip("no /dev/fuse")
	}
	st := imagestest.NewStore(b)
	imp, err := st.ImportImage(context.Background(), "111111111111",
		imagestest.Image(b, "amd64", v1.Config{}, imagestest.Layer(b, imagestest.File{Name: "f", Body: random(1 << 20)})), "amd64")
	if err != nil {
		b.Fatal(err)
	}
	mnt := b.TempDir()
	fs, err := imagefs.Mount(mnt, imp.Manifest, st.Store, imagefs.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Unmount()
	buf := make([]byte, 4096)
	for b.Loop() {
		f, err := os.Open(filepath.Join(mnt, "f"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Read(buf); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}
