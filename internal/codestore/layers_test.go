package codestore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/codestore"
)

// TestLayersMergedInOrder: layers are extracted in order, later files
// replacing earlier ones, directories merged, links kept; the merged tree
// is hard links to the layers' trees and shared by every user of the same
// ordered list.
func TestLayersMergedInOrder(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, codestore.Config{Dir: dir})
	put := func(files ...file) string {
		t.Helper()
		c, err := s.Put(ctx, makeZip(t, files...))
		if err != nil {
			t.Fatal(err)
		}
		return c.Sha256
	}
	lib := put(file{name: "python/lib.py", body: "v1", mode: 0o644}, file{name: "shared.txt", body: "from lib", mode: 0o644},
		file{name: "replaced/inner", body: "dir in lib", mode: 0o644})
	bin := put(file{name: "bin/tool", body: "#!/bin/sh\necho tool\n", mode: 0o755}, file{name: "shared.txt", body: "from bin", mode: 0o644},
		file{name: "replaced", body: "a file in bin", mode: 0o644}, file{name: "python/other.py", body: "x", mode: 0o644})

	merged, err := s.Layers(ctx, []string{lib, bin})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"python/lib.py": "v1", "python/other.py": "x", "shared.txt": "from bin",
		"replaced": "a file in bin", "bin/tool": "#!/bin/sh\necho tool\n"} {
		if b, err := os.ReadFile(filepath.Join(merged, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", name, b, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(merged, "bin/tool")); err != nil || fi.Mode().Perm() != 0o555 {
		t.Errorf("bin/tool: %v %v, want an executable read-only file", fi, err)
	}
	// Hard links, not copies.
	libTree, _ := s.Dir(ctx, lib)
	a, _ := os.Stat(filepath.Join(libTree, "python/lib.py"))
	b, _ := os.Stat(filepath.Join(merged, "python/lib.py"))
	if a.Sys().(*syscall.Stat_t).Ino != b.Sys().(*syscall.Stat_t).Ino {
		t.Error("the merged tree copies the layer's files")
	}
	// The same list is the same directory; another order is another.
	if again, err := s.Layers(ctx, []string{lib, bin}); err != nil || again != merged {
		t.Errorf("same layers: %s %v, want %s", again, err, merged)
	}
	reversed, err := s.Layers(ctx, []string{bin, lib})
	if err != nil || reversed == merged {
		t.Fatalf("other order: %s %v", reversed, err)
	}
	if b, _ := os.ReadFile(filepath.Join(reversed, "shared.txt")); string(b) != "from lib" {
		t.Errorf("reversed shared.txt: %q", b)
	}
	if fi, err := os.Stat(filepath.Join(reversed, "replaced")); err != nil || !fi.IsDir() {
		t.Errorf("reversed: replaced is %v %v, want lib's directory", fi, err)
	}
	// Unzipped size counts file bytes.
	if n, err := s.Unzipped(ctx, lib); err != nil || n != int64(len("v1")+len("from lib")+len("dir in lib")) {
		t.Errorf("Unzipped: %d %v", n, err)
	}
	// Deleting a layer's package drops the merged trees made with it.
	if _, err := s.Sweep(ctx, func(sha string) bool { return sha != bin }, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{merged, reversed} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s survived its layer's deletion: %v", d, err)
		}
	}
	// And a restart empties the cache.
	only, err := s.Layers(ctx, []string{lib})
	if err != nil {
		t.Fatal(err)
	}
	open(t, codestore.Config{Dir: dir})
	if _, err := os.Stat(only); !os.IsNotExist(err) {
		t.Errorf("merged layers survived a restart: %v", err)
	}
	if _, err := s.Layers(ctx, []string{"not a digest"}); err == nil {
		t.Error("a bad digest was accepted")
	}
}

// BenchmarkLayers: merging two layers of 1,000 files each into a
// function's /opt (what a cold start on a worker that has not merged this
// list pays once), and finding the merged tree again (every later start).
func BenchmarkLayers(b *testing.B) {
	ctx := context.Background()
	s := open(b, codestore.Config{Dir: b.TempDir()})
	var shas []string
	for l := range 2 {
		var files []file
		for i := range 1000 {
			files = append(files, file{name: fmt.Sprintf("python/pkg%d/mod%d.py", i%20, i), body: fmt.Sprintf("X = %d\n", l*i), mode: 0o644})
		}
		c, err := s.Put(ctx, makeZip(b, files...))
		if err != nil {
			b.Fatal(err)
		}
		shas = append(shas, c.Sha256)
	}
	b.Run("build", func(b *testing.B) {
		for b.Loop() {
			dir, err := s.Layers(ctx, shas)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(filepath.Dir(dir))
			b.StartTimer()
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Layers(ctx, shas); err != nil {
				b.Fatal(err)
			}
		}
	})
}
