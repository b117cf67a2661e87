package codestore_test

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/codestore"
)

// file is one entry of a hand-made zip.
type file struct {
	name    string
	body    string
	mode    fs.FileMode // 0: no Unix mode recorded (as zips made on Windows)
	rawMode bool        // use mode even if it is 0
}

func makeZip(t testing.TB, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.name, Method: zip.Deflate}
		if f.mode != 0 || f.rawMode {
			h.SetMode(f.mode)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, f.body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(t testing.TB, cfg codestore.Config) *codestore.Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := codestore.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func TestPutUnpacksWithModes(t *testing.T) {
	ctx := context.Background()
	s := open(t, codestore.Config{})
	z := makeZip(t,
		file{name: "bootstrap", body: "#!/bin/sh\necho hi\n", mode: 0o755},
		file{name: "lib/", mode: fs.ModeDir | 0o755},
		file{name: "lib/data.txt", body: "data", mode: 0o600},
		file{name: "lib/tool", body: "tool", mode: 0o4755}, // setuid is dropped
		file{name: "./deep/er/x.py", body: "print(1)", mode: 0o644},
		file{name: "current", body: "lib/data.txt", mode: fs.ModeSymlink | 0o777},
		file{name: "deep/up", body: "../lib", mode: fs.ModeSymlink | 0o777},
		file{name: "dangling", body: "nowhere/at/all", mode: fs.ModeSymlink | 0o777},
	)
	code, err := s.Put(ctx, z)
	if err != nil {
		t.Fatal(err)
	}
	if code.Sha256 != sha(z) || code.Size != int64(len(z)) {
		t.Fatalf("code = %+v, want sha %s size %d", code, sha(z), len(z))
	}
	dir, err := s.Dir(ctx, code.Sha256)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{
		"bootstrap": 0o555, "lib/data.txt": 0o444, "lib/tool": 0o555, "deep/er/x.py": 0o444,
	} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "current")); string(b) != "data" {
		t.Errorf("symlink current reads %q", b)
	}
	if target, _ := os.Readlink(filepath.Join(dir, "deep/up")); target != "../lib" {
		t.Errorf("deep/up -> %q", target)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "deep/up/data.txt")); string(b) != "data" {
		t.Errorf("deep/up/data.txt reads %q", b)
	}
	f, err := s.Open(ctx, code.Sha256)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, z) {
		t.Fatal("Open does not return the uploaded zip")
	}

	// Idempotent: the same zip again is the same code, stored once.
	again, err := s.Put(ctx, z)
	if err != nil || again != code {
		t.Fatalf("second Put = %+v, %v", again, err)
	}
	if s.TotalSize() != int64(len(z)) {
		t.Fatalf("TotalSize = %d, want %d", s.TotalSize(), len(z))
	}
}

func TestWindowsZipBootstrapIsExecutable(t *testing.T) {
	ctx := context.Background()
	s := open(t, codestore.Config{})
	// No SetMode: the zip records MS-DOS attributes only.
	z := makeZip(t, file{name: "bootstrap", body: "#!/bin/sh\n"}, file{name: "lib/bootstrap", body: "x"}, file{name: "main.py", body: "x"})
	code, err := s.Put(ctx, z)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := s.Dir(ctx, code.Sha256)
	for name, want := range map[string]fs.FileMode{"bootstrap": 0o555, "lib/bootstrap": 0o444, "main.py": 0o444} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
}

func wantInvalid(t *testing.T, err error, message string) {
	t.Helper()
	var e *api.Error
	if !errors.As(err, &e) || e.Type != api.InvalidParameterValue || !strings.Contains(e.Message, message) {
		t.Fatalf("err = %v, want InvalidParameterValueException %q", err, message)
	}
}

const couldNotUnzip = "Could not unzip uploaded file. Please check your file, then try to upload again."

func TestHostileZips(t *testing.T) {
	sym := fs.ModeSymlink | 0o777
	cases := map[string][]byte{
		"dot-dot":                makeZip(t, file{name: "../evil", body: "x", mode: 0o644}),
		"dot-dot inside":         makeZip(t, file{name: "a/../../evil", body: "x", mode: 0o644}),
		"absolute":               makeZip(t, file{name: "/etc/evil", body: "x", mode: 0o644}),
		"drive letter":           makeZip(t, file{name: "C:/evil", body: "x", mode: 0o644}),
		"backslash":              makeZip(t, file{name: `..\evil`, body: "x", mode: 0o644}),
		"empty component":        makeZip(t, file{name: "a//b", body: "x", mode: 0o644}),
		"duplicate":              makeZip(t, file{name: "a", body: "1", mode: 0o644}, file{name: "a", body: "2", mode: 0o644}),
		"duplicate after clean":  makeZip(t, file{name: "a/b", body: "1", mode: 0o644}, file{name: "./a/b", body: "2", mode: 0o644}),
		"file then dir":          makeZip(t, file{name: "a", body: "1", mode: 0o644}, file{name: "a/b", body: "2", mode: 0o644}),
		"write through symlink":  makeZip(t, file{name: "l", body: "sub", mode: sym}, file{name: "l/x", body: "2", mode: 0o644}),
		"symlink absolute":       makeZip(t, file{name: "l", body: "/etc/passwd", mode: sym}),
		"symlink out":            makeZip(t, file{name: "a/l", body: "../../etc", mode: sym}),
		"symlink via symlink":    makeZip(t, file{name: "d/up", body: "..", mode: sym}, file{name: "esc", body: "d/up/..", mode: sym}),
		"symlink loop":           makeZip(t, file{name: "a", body: "b", mode: sym}, file{name: "b", body: "a", mode: sym}),
		"symlink empty":          makeZip(t, file{name: "l", body: "", mode: sym}),
		"device":                 makeZip(t, file{name: "dev", body: "", mode: fs.ModeDevice | 0o644}),
		"char device":            makeZip(t, file{name: "tty", body: "", mode: fs.ModeDevice | fs.ModeCharDevice | 0o644}),
		"named pipe":             makeZip(t, file{name: "fifo", body: "", mode: fs.ModeNamedPipe | 0o644}),
		"socket":                 makeZip(t, file{name: "sock", body: "", mode: fs.ModeSocket | 0o644}),
		"directory with content": raw(t, &zip.FileHeader{Name: "d/", Method: zip.Store, CRC32: crc32.ChecksumIEEE([]byte("data")), UncompressedSize64: 4, CompressedSize64: 4}),
		"name past PATH_MAX":     makeZip(t, file{name: strings.Repeat(strings.Repeat("d", 200)+"/", 20) + "f", body: "x", mode: 0o644}), // found by FuzzPut
		"not a zip":              []byte("this is not a zip file"),
		"empty":                  {},
		"bad checksum":           raw(t, &zip.FileHeader{Name: "f", Method: zip.Store, CRC32: 12345, UncompressedSize64: 4, CompressedSize64: 4}),
		"encrypted":              raw(t, &zip.FileHeader{Name: "f", Method: zip.Store, Flags: 0x1, CRC32: crc32.ChecksumIEEE([]byte("data")), UncompressedSize64: 4, CompressedSize64: 4}),
	}
	for name, z := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, codestore.Config{Dir: dir})
			_, err := s.Put(context.Background(), z)
			wantInvalid(t, err, couldNotUnzip)
			if _, err := s.Check(context.Background(), z); err == nil {
				t.Fatal("Check accepted what Put refused")
			}
			assertNothingStored(t, dir)
		})
	}
}

// assertNothingStored checks that a refused Put left nothing behind.
func assertNothingStored(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"zips", "trees", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Fatalf("%s holds %d entries after a refused Put", sub, len(ents))
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil")); err == nil {
		t.Fatal("a file escaped the store")
	}
}

// raw makes a zip of one entry holding "data" as is, whatever h says.
func raw(t *testing.T, h *zip.FileHeader) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(h)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("data"))
	zw.Close()
	return buf.Bytes()
}

// zeros deflates n zero bytes.
func zeros(t testing.TB, n int64) []byte {
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestSpeed)
	chunk := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(chunk)) {
		fw.Write(chunk[:min(left, int64(len(chunk)))])
	}
	fw.Close()
	return buf.Bytes()
}

func TestZipBombs(t *testing.T) {
	const size = 300 << 20
	compressed := zeros(t, size)
	crc := crc32.ChecksumIEEE(make([]byte, 0)) // wrong on purpose for the lying one; never reached
	bomb := func(declared uint64) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		h := &zip.FileHeader{Name: "zeros", Method: zip.Deflate, CRC32: crc,
			UncompressedSize64: declared, CompressedSize64: uint64(len(compressed))}
		h.SetMode(0o644)
		w, err := zw.CreateRaw(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(compressed)
		zw.Close()
		return buf.Bytes()
	}
	cases := []struct {
		name, message string
		zip           []byte
	}{
		// Headers tell the truth: refused from the central directory alone.
		{"honest", "Unzipped size must be smaller than 262144000 bytes", bomb(size)},
		// Headers lie: decompression stops where the declared size ends.
		{"lying", couldNotUnzip, bomb(1000)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.zip) > 2<<20 {
				t.Fatalf("bomb is %d bytes zipped; want a small one", len(tc.zip))
			}
			dir := t.TempDir()
			s := open(t, codestore.Config{Dir: dir})
			start := time.Now()
			_, err := s.Put(context.Background(), tc.zip)
			wantInvalid(t, err, tc.message)
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("refusing the bomb took %v", d)
			}
			assertNothingStored(t, dir)
		})
	}

	// Many honest entries whose sum is too large.
	t.Run("sum of entries", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, codestore.Config{Dir: dir, MaxUnzipped: 1000})
		var files []file
		for i := range 5 {
			files = append(files, file{name: "f" + string(rune('a'+i)), body: strings.Repeat("x", 300), mode: 0o644})
		}
		_, err := s.Put(context.Background(), makeZip(t, files...))
		wantInvalid(t, err, "Unzipped size must be smaller than 1000 bytes")
		assertNothingStored(t, dir)
	})
}

func TestZippedTooLarge(t *testing.T) {
	dir := t.TempDir()
	s := open(t, codestore.Config{Dir: dir, MaxZipped: 100})
	_, err := s.Put(context.Background(), makeZip(t, file{name: "f", body: strings.Repeat("random-ish text ", 50), mode: 0o644}, file{name: "g", body: "more", mode: 0o644}))
	// Lambda answers an oversized direct upload 413, as for the request.
	var e *api.Error
	if !errors.As(err, &e) || e.Type != api.RequestEntityTooLarge || e.Status != 413 || !strings.Contains(e.Message, "exceeds the maximum of 100 bytes") {
		t.Fatalf("err = %v, want RequestEntityTooLargeException", err)
	}
	assertNothingStored(t, dir)
}

func TestConcurrentPutsOfOneZip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, codestore.Config{Dir: dir})
	z := makeZip(t, file{name: "bootstrap", body: strings.Repeat("binary", 10000), mode: 0o755}, file{name: "a/b/c", body: "c", mode: 0o644})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if _, err := s.Put(ctx, z); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s.TotalSize() != int64(len(z)) {
		t.Fatalf("TotalSize = %d, want %d", s.TotalSize(), len(z))
	}
	for sub, want := range map[string]int{"zips": 1, "trees": 1, "tmp": 0} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		if len(ents) != want {
			t.Errorf("%s holds %d entries, want %d", sub, len(ents), want)
		}
	}
}

func TestReopenLazyUnpackDeleteSweep(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, codestore.Config{Dir: dir})
	z1 := makeZip(t, file{name: "bootstrap", body: "one", mode: 0o755})
	z2 := makeZip(t, file{name: "bootstrap", body: "two", mode: 0o755})
	c1, err := s.Put(ctx, z1)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.Put(ctx, z2)
	if err != nil {
		t.Fatal(err)
	}

	// A new Store on the same directory knows what is stored.
	s = open(t, codestore.Config{Dir: dir})
	if !s.Has(c1.Sha256) || !s.Has(c2.Sha256) || s.TotalSize() != c1.Size+c2.Size {
		t.Fatalf("after reopen: has %v %v, total %d", s.Has(c1.Sha256), s.Has(c2.Sha256), s.TotalSize())
	}

	// A missing tree is unpacked again from the zip.
	d1, _ := s.Dir(ctx, c1.Sha256)
	filepath.WalkDir(d1, func(p string, d fs.DirEntry, err error) error { os.Chmod(p, 0o755); return nil })
	if err := os.RemoveAll(d1); err != nil {
		t.Fatal(err)
	}
	d1again, err := s.Dir(ctx, c1.Sha256)
	if err != nil || d1again != d1 {
		t.Fatalf("Dir after removal = %q, %v", d1again, err)
	}
	if b, _ := os.ReadFile(filepath.Join(d1, "bootstrap")); string(b) != "one" {
		t.Fatalf("re-unpacked bootstrap = %q", b)
	}

	// Unknown code.
	unknown := sha([]byte("nothing"))
	if _, err := s.Dir(ctx, unknown); !errors.Is(err, codestore.ErrNotFound) {
		t.Fatalf("Dir(unknown) = %v", err)
	}
	if _, err := s.Open(ctx, "not base64!"); !errors.Is(err, codestore.ErrNotFound) {
		t.Fatalf("Open(malformed) = %v", err)
	}

	// Sweep keeps what is referenced and what is recent.
	n, err := s.Sweep(ctx, func(sha string) bool { return sha == c2.Sha256 }, time.Now().Add(-time.Hour))
	if err != nil || n.Blobs != 0 {
		t.Fatalf("Sweep with grace = %+v, %v", n, err)
	}
	n, err = s.Sweep(ctx, func(sha string) bool { return sha == c2.Sha256 }, time.Now().Add(time.Second))
	if err != nil || n.Blobs != 1 || n.Bytes != c1.Size {
		t.Fatalf("Sweep = %+v, %v", n, err)
	}
	if s.Has(c1.Sha256) || !s.Has(c2.Sha256) || s.TotalSize() != c2.Size {
		t.Fatalf("after sweep: has %v %v, total %d", s.Has(c1.Sha256), s.Has(c2.Sha256), s.TotalSize())
	}
	if _, err := os.Stat(d1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("tree of swept code still there: %v", err)
	}
	if err := s.Delete(ctx, c2.Sha256); err != nil {
		t.Fatal(err)
	}
	if s.TotalSize() != 0 || s.Has(c2.Sha256) {
		t.Fatal("Delete left the code")
	}
}

func TestCheckKeepsNothing(t *testing.T) {
	dir := t.TempDir()
	s := open(t, codestore.Config{Dir: dir})
	z := makeZip(t, file{name: "bootstrap", body: "x", mode: 0o755})
	code, err := s.Check(context.Background(), z)
	if err != nil || code.Sha256 != sha(z) {
		t.Fatalf("Check = %+v, %v", code, err)
	}
	assertNothingStored(t, dir)
}
