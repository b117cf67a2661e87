package sandboxtest

import (
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

var agentMu sync.Mutex

// AgentBinary builds the small agent binary (./internal/sandbox/kiln-agent) for
// tests and benchmarks, once per machine and source: the cache key hashes
// the sources of the agent and what it links of Kiln.
func AgentBinary(tb testing.TB) string {
	tb.Helper()
	p, err := BuildAgent()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// BuildAgent is AgentBinary without a test.
func BuildAgent() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version())
	for _, dir := range []string{"internal/agent", "internal/agentproto", "internal/sandbox/kiln-agent"} {
		files, _ := filepath.Glob(filepath.Join(root, dir, "*.go"))
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
			h.Write(b)
		}
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		b, _ := os.ReadFile(filepath.Join(root, f))
		h.Write(b)
	}
	dir := filepath.Join(os.TempDir(), "kiln-agent-bin", hex.EncodeToString(h.Sum(nil)[:8]))
	bin := filepath.Join(dir, "kiln-agent")
	agentMu.Lock()
	defer agentMu.Unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, "./internal/sandbox/kiln-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build kiln-agent: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}
