// Package fntest builds real function packages for tests and benchmarks:
// Go functions with aws-lambda-go, compiled once per machine, and zips.
package fntest

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// Zip is ZipFiles for tests.
func Zip(tb testing.TB, files map[string][]byte) []byte {
	tb.Helper()
	b, err := ZipFiles(files)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

var buildMu sync.Mutex

// BuildGo compiles a Go main package (the source of main.go) into a static
// linux binary for provided.* runtimes. Builds are cached by source under the
// system temp directory, so each program compiles once per machine.
func BuildGo(source string) ([]byte, error) {
	sum := sha256.Sum256([]byte(runtime.Version() + source))
	dir := filepath.Join(os.TempDir(), "kiln-gofn", hex.EncodeToString(sum[:8]))
	bin := filepath.Join(dir, "bootstrap")
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, err := os.ReadFile(bin); err == nil {
		return b, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(source), 0o644); err != nil {
		return nil, err
	}
	// Test binaries of several packages may build the same function at once.
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, filepath.Join(dir, "main.go"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build function: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return nil, err
	}
	return os.ReadFile(bin)
}

// GoBootstrap is BuildGo for tests.
func GoBootstrap(tb testing.TB, source string) []byte {
	tb.Helper()
	b, err := BuildGo(source)
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
func moduleRoot() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("fntest: cannot find Kiln's go.mod from %s (building functions needs Kiln's source tree and Go)", file)
	}
	return root, nil
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

// ReaderGo reads 5% of the file named by the event's "path" in 1 MiB reads
// spread evenly over it, as a handler loading what it needs of a large image.
const ReaderGo = `package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

type event struct {
	Path string ` + "`json:\"path\"`" + `
}

func main() {
	lambda.Start(func(e event) (int, error) {
		f, err := os.Open(e.Path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		buf := make([]byte, 1<<20)
		reads := max(1, int(fi.Size()/20)/len(buf))
		total := 0
		for i := range reads {
			n, _ := f.ReadAt(buf, int64(i)*(fi.Size()/int64(reads)))
			total += n
		}
		return total, nil
	})
}
`
