package images_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
)

func TestCollect(t *testing.T) {
	ctx := context.Background()
	f := newStore(t)
	f.ChunkSize = 64 << 10
	base := imagestest.Layer(t, imagestest.File{Name: "base", Body: randomBytes(256<<10, 1)})
	keptImg := imagestest.Image(t, "amd64", v1.Config{}, base, imagestest.Layer(t, imagestest.File{Name: "kept", Body: randomBytes(100<<10, 2)}))
	goneImg := imagestest.Image(t, "amd64", v1.Config{}, base, imagestest.Layer(t, imagestest.File{Name: "gone", Body: randomBytes(100<<10, 3)}))
	kept, err := f.ImportImage(ctx, "111111111111", keptImg, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := f.ImportImage(ctx, "111111111111", goneImg, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	keep := []images.ManifestRef{{Account: "111111111111", Name: kept.ManifestName}}

	// Within the grace period nothing goes.
	if n, err := f.Collect(ctx, keep, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("within the grace: deleted %d, %v", n, err)
	}
	// A kept manifest that does not open stops the collection.
	if _, err := f.Collect(ctx, append(keep, images.ManifestRef{Account: "222222222222", Name: gone.ManifestName}), time.Now().Add(time.Hour)); err == nil {
		t.Fatal("collected with a manifest it could not open")
	}
	if _, err := f.Manifest(ctx, "111111111111", gone.ManifestName); err != nil {
		t.Fatalf("a stopped collection deleted: %v", err)
	}

	n, err := f.Collect(ctx, keep, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 { // gone's manifest and the two chunks of its own file
		t.Fatalf("deleted %d blobs, want 3", n)
	}
	if got := f.read(t, kept.Manifest, "base"); len(got) != 256<<10 {
		t.Fatal("the shared base lost chunks")
	}
	if got := f.read(t, kept.Manifest, "kept"); !bytes.Equal(got, randomBytes(100<<10, 2)) {
		t.Fatal("the kept image lost chunks")
	}
	if _, err := f.Manifest(ctx, "111111111111", gone.ManifestName); err == nil {
		t.Fatal("the unused manifest is still there")
	}
}

// TestPutAgainRestartsGrace: a blob put again (an import reusing it) is as
// new to a sweep as one written now.
func TestPutAgainRestartsGrace(t *testing.T) {
	ctx := context.Background()
	f := newStore(t)
	img := imagestest.Image(t, "amd64", v1.Config{}, imagestest.Layer(t, imagestest.File{Name: "f", Body: []byte("x")}))
	imp, err := f.ImportImage(ctx, "111111111111", img, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	ref := imp.Manifest.Entries[len(imp.Manifest.Entries)-1].Chunks[0]
	p := filepath.Join(f.Root, ref.ID.String()[:2], ref.ID.String())
	old := time.Now().Add(-24 * time.Hour)
	os.Chtimes(p, old, old)
	if _, err := f.ImportImage(ctx, "111111111111", img, "amd64"); err != nil {
		t.Fatal(err)
	}
	// Nothing is kept: only what is older than an hour goes.
	if _, err := f.Collect(ctx, nil, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("a chunk put again an instant ago was collected: %v", err)
	}
}
