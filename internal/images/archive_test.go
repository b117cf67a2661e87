package images_test

import (
	"archive/tar"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
)

// tarDir writes the files under dir into the tar file out.
func tarDir(t *testing.T, dir, out string, extra ...*tar.Header) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if err := tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	for _, h := range extra {
		if err == nil {
			err = tw.WriteHeader(h)
		}
	}
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestImportArchives(t *testing.T) {
	ctx := context.Background()
	f := newStore(t)
	archives := t.TempDir()
	f.Archives, f.Scratch = archives, t.TempDir()
	img := func(body string) v1.Image {
		return imagestest.Image(t, "amd64", v1.Config{Cmd: []string{"h"}}, imagestest.Layer(t, imagestest.File{Name: "f", Body: []byte(body)}))
	}
	// docker save: two tags in one tarball.
	tagA, _ := name.NewTag("example/app:a")
	tagB, _ := name.NewTag("example/app:b")
	if err := tarball.MultiRefWriteToFile(filepath.Join(archives, "saved.tar"), map[name.Reference]v1.Image{tagA: img("A"), tagB: img("B")}); err != nil {
		t.Fatal(err)
	}
	// An OCI layout with two tagged images, as a tar, with hostile extras
	// that must not be written out.
	lp, err := layout.Write(filepath.Join(t.TempDir(), "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for tag, body := range map[string]string{"v1": "one", "v2": "two"} {
		if err := lp.AppendImage(img(body), layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
			t.Fatal(err)
		}
	}
	tarDir(t, string(lp), filepath.Join(archives, "layout.tar"),
		&tar.Header{Name: "blobs/sha256/../../../../escaped", Typeflag: tar.TypeReg, Mode: 0o644},
		&tar.Header{Name: "index.json.link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})
	os.Symlink("/etc/passwd", filepath.Join(archives, "outside.tar"))

	for _, tc := range []struct{ uri, want string }{
		{"docker-archive:saved.tar:example/app:a", "A"},
		{"docker-archive:saved.tar:example/app:b", "B"},
		{"oci-archive:layout.tar:v1", "one"},
		{"oci-archive:layout.tar:v2", "two"},
	} {
		imp, err := f.Import(ctx, "111111111111", tc.uri, "x86_64")
		if err != nil {
			t.Fatalf("%s: %v", tc.uri, err)
		}
		if got := f.read(t, imp.Manifest, "f"); string(got) != tc.want {
			t.Errorf("%s: f = %q, want %q", tc.uri, got, tc.want)
		}
		if !strings.HasSuffix(imp.ResolvedURI, "@"+imp.Manifest.Digest) {
			t.Errorf("%s: resolved %s", tc.uri, imp.ResolvedURI)
		}
	}
	for _, tc := range []struct {
		uri  string
		want error
	}{
		{"docker-archive:../../etc/passwd", images.ErrBadURI},
		{"docker-archive:/etc/passwd", images.ErrBadURI},
		{"docker-archive:missing.tar", images.ErrNotFound},
		{"docker-archive:outside.tar", images.ErrNotFound}, // a link out of the directory
		{"docker-archive:saved.tar", images.ErrNotFound},   // two images: a tag must choose
		{"oci-archive:layout.tar", images.ErrNotFound},     // likewise
		{"oci-archive:layout.tar:v9", images.ErrNotFound},
		{"oci-archive:saved.tar", images.ErrNotFound}, // not a layout
	} {
		if _, err := f.Import(ctx, "111111111111", tc.uri, "x86_64"); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.uri, err, tc.want)
		}
	}
	scratch, _ := os.ReadDir(f.Scratch)
	if len(scratch) != 0 {
		t.Errorf("scratch left behind: %v", scratch)
	}
	filepath.WalkDir(filepath.Dir(archives), func(p string, d fs.DirEntry, _ error) error {
		if d != nil && d.Name() == "escaped" {
			t.Errorf("a tar entry escaped to %s", p)
		}
		return nil
	})
	f.Archives = ""
	if _, err := f.Import(ctx, "111111111111", "docker-archive:saved.tar:example/app:a", "x86_64"); !errors.Is(err, images.ErrBadURI) {
		t.Errorf("without an archives directory: %v", err)
	}
}
