// Package fntest builds real function packages for tests and benchmarks:
// Go functions with aws-lambda-go, compiled once per machine, and zips. It
// links no testing (its helpers take a TB), so kiln-bench uses it too.
package fntest

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Role is a well-formed execution role ARN for test functions.
const Role = "arn:aws:iam::123456789012:role/kiln-test"

// ZipFiles packs files (name → content) into a deployment package; files
// named bootstrap get mode 0755.
func ZipFiles(files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := &zip.FileHeader{Name: n, Method: zip.Deflate}
		h.SetMode(0o644)
		if filepath.Base(n) == "bootstrap" {
			h.SetMode(0o755)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(files[n]); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TB is what the helpers need of a testing.TB: they take it rather than
// testing.TB so that kiln-bench, which builds its functions here, links no
// testing (cmd/kiln-bench's TestLinksNoTesting).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Zip is ZipFiles for tests.
func Zip(tb TB, files map[string][]byte) []byte {
	tb.Helper()
	b, err := ZipFiles(files)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// The functions' own module: aws-lambda-go at Kiln's version
// (TestFunctionModuleInStep), so a build needs the Go toolchain (and the
// module proxy, or a module cache that has it) but not Kiln's source tree.
var (
	//go:embed fn.mod
	fnMod string
	//go:embed fn.sum
	fnSum string
)

var buildMu sync.Mutex

// BuildGo compiles a Go main package (the source of main.go, importing at
// most the standard library, aws-lambda-go and aws-sdk-go-v2's config and
// lambda client, as a function calling Kiln does) into a static linux binary
// for provided.* runtimes. Builds are cached by source under the system
// temp directory, so each program compiles once per machine.
func BuildGo(source string) ([]byte, error) {
	sum := sha256.Sum256([]byte(runtime.Version() + fnMod + fnSum + source))
	dir := filepath.Join(os.TempDir(), "kiln-gofn", hex.EncodeToString(sum[:8]))
	bin := filepath.Join(dir, "bootstrap")
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, err := os.ReadFile(bin); err == nil {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for name, content := range map[string]string{"main.go": source, "go.mod": fnMod, "go.sum": fnSum} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	// Test binaries of several packages may build the same function at once.
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build function: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return nil, err
	}
	return os.ReadFile(bin)
}

// GoBootstrap is BuildGo for tests.
func GoBootstrap(tb TB, source string) []byte {
	tb.Helper()
	b, err := BuildGo(source)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// GoFunctionZip is GoBootstrap packed as a provided.al2023 deployment package.
func GoFunctionZip(tb TB, source string) []byte {
	return Zip(tb, map[string][]byte{"bootstrap": GoBootstrap(tb, source)})
}

// kilnModule is the first line of Kiln's go.mod.
const kilnModule = "module github.com/kiln-dev/kiln\n"

// moduleRoot finds Kiln's source tree from the working directory up (a
// test runs in its package's directory, `go run ./cmd/kiln-bench` in the
// tree), for building Kiln itself.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), kilnModule) {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("fntest: no Kiln source tree at or above %s (building kiln needs it and Go)", wd)
		}
	}
}

// BuildKiln compiles Kiln's own binary (cmd/kiln) into dir and returns its
// path, for tests that run `kiln up` or cluster roles as real processes.
func BuildKiln(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kiln")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/kiln")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/kiln: %w\n%s", err, out)
	}
	return bin, nil
}
