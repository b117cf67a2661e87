// Package fntest builds real function packages for tests and benchmarks:
// Go functions with aws-lambda-go, compiled once per machine, and zips.
package fntest

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"testing"
)

// Role is a well-formed execution role ARN for test functions.
const Role = "arn:aws:iam::123456789012:role/kiln-test"

// Zip packs files (name → content) into a zip; names ending in "bootstrap"
// or listed in exec get mode 0755.
func Zip(tb testing.TB, files map[string][]byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := &zip.FileHeader{Name: n, Method: zip.Deflate}
		mode := os.FileMode(0o644)
		if filepath.Base(n) == "bootstrap" {
			mode = 0o755
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			tb.Fatal(err)
		}
		w.Write(files[n])
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

var buildMu sync.Mutex

// GoBootstrap compiles a Go main package (source of main.go) into a static
// linux binary named bootstrap and returns it. Builds are cached by source
// under the system temp directory, so each program compiles once per machine.
func GoBootstrap(tb testing.TB, source string) []byte {
	tb.Helper()
	sum := sha256.Sum256([]byte(runtime.Version() + source))
	dir := filepath.Join(os.TempDir(), "kiln-gofn", hex.EncodeToString(sum[:8]))
	bin := filepath.Join(dir, "bootstrap")
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, err := os.ReadFile(bin); err == nil {
		return b
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(source), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin+".tmp", filepath.Join(dir, "main.go"))
	cmd.Dir = moduleRoot(tb)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build function: %v\n%s", err, out)
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// GoFunctionZip is GoBootstrap packed as a provided.al2023 deployment package.
func GoFunctionZip(tb testing.TB, source string) []byte {
	return Zip(tb, map[string][]byte{"bootstrap": GoBootstrap(tb, source)})
}

// moduleRoot finds the directory of Kiln's go.mod, so function builds
// resolve aws-lambda-go from Kiln's own module requirements.
func moduleRoot(tb testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		tb.Fatalf("fntest: cannot find Kiln's go.mod from %s", file)
	}
	return root
}

// EchoGo is an aws-lambda-go function that returns its event.
const EchoGo = `package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, event json.RawMessage) (json.RawMessage, error) {
		return event, nil
	})
}
`
