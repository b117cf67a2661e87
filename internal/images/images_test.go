package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
	"github.com/kiln-dev/kiln/internal/keys"
	"github.com/kiln-dev/kiln/internal/registry"
	"github.com/kiln-dev/kiln/internal/tier"
)

type fixture struct{ imagestest.Store }

func newStore(t *testing.T) fixture { return fixture{imagestest.NewStore(t)} }

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

func (f fixture) read(t *testing.T, m *images.Manifest, path string) []byte {
	t.Helper()
	for _, e := range m.Entries {
		if e.Path != path {
			continue
		}
		var out []byte
		for _, r := range e.Chunks {
			p, err := f.Chunk(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p...)
		}
		return out
	}
	t.Fatalf("%s not in the image", path)
	return nil
}

func TestImportFromRegistry(t *testing.T) {
	ctx := context.Background()
	f := newStore(t)
	reg := imagestest.Registry(t)
	img := imagestest.Image(t, "amd64", v1.Config{Entrypoint: []string{"/bootstrap"}, WorkingDir: "/app", Env: []string{"A=1"}},
		imagestest.Layer(t, imagestest.File{Name: "app/data", Body: []byte("lower")}),
		imagestest.Layer(t, imagestest.File{Name: "app/data", Body: []byte("upper")}, imagestest.File{Name: "bootstrap", Body: []byte("#!"), Mode: 0o755}))
	byDigest := imagestest.Push(t, reg+"/fn:v1", img)

	for _, uri := range []string{reg + "/fn:v1", byDigest} {
		imp, err := f.Import(ctx, "111111111111", uri, "x86_64")
		if err != nil {
			t.Fatal(err)
		}
		m, err := f.Manifest(ctx, "111111111111", imp.ManifestName)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		if m.Digest != d.String() || m.Config.WorkingDir != "/app" || m.Config.Entrypoint[0] != "/bootstrap" {
			t.Fatalf("manifest %+v", m)
		}
		if got := f.read(t, m, "app/data"); string(got) != "upper" {
			t.Fatalf("app/data = %q", got)
		}
	}
}

func TestImportErrors(t *testing.T) {
	ctx := context.Background()
	f := newStore(t)
	reg := imagestest.Registry(t)
	imagestest.Push(t, reg+"/arm:v1", imagestest.Image(t, "arm64", v1.Config{}, imagestest.Layer(t)))
	hostile := imagestest.Push(t, reg+"/hostile:v1", imagestest.Image(t, "amd64", v1.Config{},
		imagestest.Layer(t, imagestest.File{Name: "../../../etc/cron.d/x", Body: []byte("* * * * * root sh")})))
	tmpLink := imagestest.Push(t, reg+"/tmplink:v1", imagestest.Image(t, "amd64", v1.Config{},
		imagestest.Layer(t, imagestest.File{Header: &tar.Header{Name: "tmp", Typeflag: tar.TypeSymlink, Linkname: "/etc", Mode: 0o777}})))
	for _, tc := range []struct {
		uri, arch string
		want      error
	}{
		{"not a reference!", "x86_64", images.ErrBadURI},
		{reg + "/missing:v1", "x86_64", images.ErrNotFound},
		{reg + "/arm:nosuchtag", "x86_64", images.ErrNotFound},
		{reg + "/arm:v1", "x86_64", images.ErrArchitecture},
		{reg + "/arm:v1", "mips", images.ErrArchitecture},
		{hostile, "x86_64", flatten.ErrHostile},
		{tmpLink, "x86_64", flatten.ErrHostile},
	} {
		if _, err := f.Import(ctx, "111111111111", tc.uri, tc.arch); !errors.Is(err, tc.want) {
			t.Errorf("Import(%s, %s) = %v, want %v", tc.uri, tc.arch, err, tc.want)
		}
	}
	if _, err := f.Import(ctx, "111111111111", reg+"/arm:v1", "arm64"); err != nil {
		t.Errorf("arm64 image for an arm64 function: %v", err)
	}
}

// TestDedup imports two images sharing a base layer (8 MiB; set
// KILN_IMAGE_DEDUP_MB for more) and measures the store: the base's chunks are
// stored once within an account's scope, and again for another account.
func TestDedup(t *testing.T) {
	ctx := context.Background()
	mb := 8
	if s := os.Getenv("KILN_IMAGE_DEDUP_MB"); s != "" {
		mb, _ = strconv.Atoi(s)
	}
	f := newStore(t)
	base := imagestest.Layer(t, imagestest.File{Name: "usr/lib/base.so", Body: randomBytes(mb<<20, 1)})
	one := imagestest.Image(t, "amd64", v1.Config{}, base, imagestest.Layer(t, imagestest.File{Name: "app/one", Body: randomBytes(100<<10, 2)}))
	two := imagestest.Image(t, "amd64", v1.Config{}, base, imagestest.Layer(t, imagestest.File{Name: "app/two", Body: randomBytes(100<<10, 3)}))
	size := func() int64 {
		n, err := f.Dir.Size()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := f.ImportImage(ctx, "111111111111", one, "amd64"); err != nil {
		t.Fatal(err)
	}
	afterOne := size()
	if _, err := f.ImportImage(ctx, "111111111111", two, "amd64"); err != nil {
		t.Fatal(err)
	}
	afterTwo := size()
	if _, err := f.ImportImage(ctx, "222222222222", two, "amd64"); err != nil {
		t.Fatal(err)
	}
	otherAccount := size()
	baseBytes := int64(mb << 20)
	t.Logf("store after image one %d B, after two %d B (+%d), after two in another account %d B (+%d)",
		afterOne, afterTwo, afterTwo-afterOne, otherAccount, otherAccount-afterTwo)
	if afterOne < baseBytes {
		t.Fatalf("image one stored %d B, less than its base layer", afterOne)
	}
	if grew := afterTwo - afterOne; grew > baseBytes/4 {
		t.Fatalf("second image sharing the base grew the store by %d B; the base was stored again", grew)
	}
	if grew := otherAccount - afterTwo; grew < baseBytes {
		t.Fatalf("another account's import grew the store by %d B: it shared chunks across scopes", grew)
	}
}

func TestTamperedChunkAndForeignManifest(t *testing.T) {
	ctx := context.Background()
	f := newStore(t)
	secret := []byte("the handler's secret")
	img := imagestest.Image(t, "amd64", v1.Config{}, imagestest.Layer(t, imagestest.File{Name: "secret", Body: secret}))
	imp, err := f.ImportImage(ctx, "111111111111", img, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Manifest(ctx, "222222222222", imp.ManifestName); !errors.Is(err, keys.ErrDenied) {
		t.Fatalf("another account opened the manifest: %v", err)
	}
	m, err := f.Manifest(ctx, "111111111111", imp.ManifestName)
	if err != nil {
		t.Fatal(err)
	}
	ref := m.Entries[len(m.Entries)-1].Chunks[0]
	if got := f.read(t, m, "secret"); !bytes.Equal(got, secret) {
		t.Fatalf("secret = %q", got)
	}
	p := filepath.Join(f.Root, ref.ID.String()[:2], ref.ID.String())
	ct, _ := os.ReadFile(p)
	ct[0] ^= 0x80
	if err := os.WriteFile(p, ct, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Chunk(ctx, ref); !errors.Is(err, tier.ErrCorrupt) || got != nil {
		t.Fatalf("tampered chunk: %q, %v", got, err)
	}
	// Another valid chunk put in its place is refused too.
	_, ct2 := chunk.Seal([]byte("x"), []byte("other"))
	if err := os.WriteFile(p, ct2, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Chunk(ctx, ref); !errors.Is(err, tier.ErrCorrupt) {
		t.Fatalf("swapped chunk: %v", err)
	}
}

// TestImportFromKilnRegistry: an ImageUri naming Kiln's own registry is read
// from it as the calling account; another account's repository is not found.
func TestImportFromKilnRegistry(t *testing.T) {
	ctx := context.Background()
	f := newStore(t)
	reg, err := registry.Open(t.TempDir(), auth.NewKeyring(auth.Credential{AccessKeyID: "AKID", SecretAccessKey: "s", Account: "111111111111"}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	f.Local, f.LocalHosts = reg, []string{host}
	img := imagestest.Image(t, "amd64", v1.Config{}, imagestest.Layer(t, imagestest.File{Name: "f", Body: []byte("from kiln")}))
	ref, _ := name.ParseReference(host + "/app:v1")
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "AKID", Password: "s"})); err != nil {
		t.Fatal(err)
	}
	imp, err := f.Import(ctx, "111111111111", host+"/app:v1", "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.read(t, imp.Manifest, "f"); string(got) != "from kiln" {
		t.Fatalf("f = %q", got)
	}
	if _, err := f.Import(ctx, "222222222222", host+"/app:v1", "x86_64"); !errors.Is(err, images.ErrNotFound) {
		t.Fatalf("another account imported it: %v", err)
	}
}

// TestSharedScope: accounts in one scope (Store.Scope) share the chunks of
// equal content; their manifests stay their own.
func TestSharedScope(t *testing.T) {
	ctx := context.Background()
	f := newStore(t)
	f.Scope = func(string) string { return "org/one" }
	img := imagestest.Image(t, "amd64", v1.Config{}, imagestest.Layer(t, imagestest.File{Name: "base", Body: randomBytes(2<<20, 9)}))
	a, err := f.ImportImage(ctx, "111111111111", img, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := f.Dir.Size()
	b, err := f.ImportImage(ctx, "222222222222", img, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	after, _ := f.Dir.Size()
	if grew := after - before; grew > 64<<10 {
		t.Fatalf("the second account in the scope grew the store by %d B", grew)
	}
	if a.ManifestName == b.ManifestName {
		t.Fatal("two accounts share a manifest")
	}
	if _, err := f.Manifest(ctx, "111111111111", b.ManifestName); !errors.Is(err, keys.ErrDenied) {
		t.Fatalf("an account of the scope opened another's manifest: %v", err)
	}
}
