package images_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
	"github.com/kiln-dev/kiln/internal/tier"
)

// TestPlan is the collection's decision: what is in use stays whatever its
// age, the rest goes once older than the grace, and a blob whose write
// time is unknown stays.
func TestPlan(t *testing.T) {
	now := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	name := func(s string) string { return tier.Name([]byte(s)) }
	id := func(s string) chunk.ID { id, _ := chunk.ParseID(name(s)); return id }
	manifest := func(chunks ...string) *images.Manifest {
		e := flatten.Entry{Path: "f", Type: flatten.File}
		for _, c := range chunks {
			e.Chunks = append(e.Chunks, chunk.Ref{ID: id(c)})
		}
		return &images.Manifest{Entries: []flatten.Entry{{Path: "d", Type: flatten.Dir}, e}}
	}
	blob := func(s string, age time.Duration) tier.Blob {
		return tier.Blob{Name: name(s), Size: int64(len(s)), Written: now.Add(-age)}
	}
	// Two functions' images sharing a base chunk.
	both := map[string]*images.Manifest{name("m1"): manifest("base", "one"), name("m2"): manifest("base", "two")}
	first := map[string]*images.Manifest{name("m1"): manifest("base", "one")}
	stored := []tier.Blob{blob("m1", 2*time.Hour), blob("m2", 2*time.Hour), blob("base", 3*time.Hour),
		blob("one", 2*time.Hour), blob("two", 2*time.Hour)}
	for _, tc := range []struct {
		name  string
		inUse map[string]*images.Manifest
		blobs []tier.Blob
		grace time.Duration
		want  []string
	}{
		{"all in use", both, stored, time.Hour, nil},
		{"the second function deleted", first, stored, time.Hour, []string{"m2", "two"}},
		{"nothing in use", nil, stored, time.Hour, []string{"m1", "m2", "base", "one", "two"}},
		{"within the grace", first, stored, 4 * time.Hour, nil},
		{"grace reached exactly", first, stored, 2 * time.Hour, nil},
		{"grace zero", first, []tier.Blob{blob("two", time.Nanosecond), blob("now", 0)}, 0, []string{"two"}},
		{"an import's chunks before its manifest", first, append(stored[:len(stored):len(stored)], blob("new", time.Minute)), time.Hour, []string{"m2", "two"}},
		{"write time unknown", nil, []tier.Blob{{Name: name("x"), Size: 1}}, 0, nil},
		{"not a blob name", nil, []tier.Blob{{Name: "tmp", Written: now.Add(-48 * time.Hour)}}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, b := range images.Plan(tc.inUse, tc.blobs, now, tc.grace) {
				got = append(got, b.Name)
			}
			var want []string
			for _, w := range tc.want {
				want = append(want, name(w))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Plan deletes %v, want %v", got, want)
			}
		})
	}
}

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
	if n, err := f.Collect(ctx, keep, time.Now(), time.Hour); err != nil || n.Blobs != 0 {
		t.Fatalf("within the grace: deleted %d, %v", n, err)
	}
	// A kept manifest that does not open stops the collection.
	if _, err := f.Collect(ctx, append(keep, images.ManifestRef{Account: "222222222222", Name: gone.ManifestName}), time.Now().Add(time.Hour), 0); err == nil {
		t.Fatal("collected with a manifest it could not open")
	}
	if _, err := f.Manifest(ctx, "111111111111", gone.ManifestName); err != nil {
		t.Fatalf("a stopped collection deleted: %v", err)
	}

	n, err := f.Collect(ctx, keep, time.Now().Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	if n.Blobs != 3 || n.Bytes < 100<<10 { // gone's manifest and the two chunks of its own file
		t.Fatalf("deleted %+v, want 3 blobs", n)
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
	if _, err := f.Collect(ctx, nil, time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("a chunk put again an instant ago was collected: %v", err)
	}
}
