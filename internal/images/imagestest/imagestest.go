// Package imagestest builds container images in tests and serves them from
// go-containerregistry's in-process registry.
package imagestest

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/keys"
	"github.com/kiln-dev/kiln/internal/tier"
)

// File is one entry of a layer: a regular file unless Header says otherwise.
type File struct {
	Name   string
	Body   []byte
	Mode   int64 // 0644 when zero
	Header *tar.Header
}

// Layer returns an uncompressed-tar layer of files, in order.
func Layer(t testing.TB, files ...File) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.Header
		if h == nil {
			h = &tar.Header{Name: f.Name, Typeflag: tar.TypeReg, Mode: f.Mode, Size: int64(len(f.Body))}
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.Body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Image stacks layers for linux/arch with cfg as the image's config.
func Image(t testing.TB, arch string, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", arch, cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// Registry starts an in-process OCI registry on a 127.0.0.1 port and returns
// its host:port; it stops with the test.
func Registry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// Push pushes img as ref (host/repo:tag) and returns ref by digest.
func Push(t testing.TB, ref string, img v1.Image) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return r.Context().Digest(d.String()).String()
}

// Store is an images.Store on real parts, in temporary directories: a key
// service and a directory store (Dir, whose files live under Root).
type Store struct {
	*images.Store
	Dir  *tier.Dir
	Root string
}

// NewStore makes a Store for the test.
func NewStore(t testing.TB) Store {
	t.Helper()
	ks, err := keys.Open(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dir, err := tier.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	return Store{&images.Store{Keys: ks, Tiers: &tier.Tiers{Store: dir}}, dir, root}
}

// HostFiles are the regular files and symbolic links under the host's
// directory dir (absolute), as layer entries at the same paths, leaving out
// every path for which skip is true (and what is under it).
func HostFiles(t testing.TB, dir string, skip func(path string) bool) []File {
	t.Helper()
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if skip != nil && skip(p) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			files = append(files, File{Header: &tar.Header{Name: p[1:], Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}})
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files = append(files, File{Name: p[1:], Body: b, Mode: int64(info.Mode().Perm())})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// HostFile is the host's file at path (symbolic links followed) as a
// layer entry at the same path.
func HostFile(t testing.TB, path string) File {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return File{Name: path[1:], Body: b, Mode: int64(info.Mode().Perm())}
}

// RequireFUSE skips a test that mounts images where it cannot: without
// root (the Linux sandbox, when root is true) or without /dev/fuse.
func RequireFUSE(t testing.TB, root bool) {
	t.Helper()
	if root && os.Geteuid() != 0 {
		t.Skip("image functions need the Linux sandbox and FUSE: run as root")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	f.Close()
}
