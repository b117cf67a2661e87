package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/kilntest"
	"github.com/kiln-dev/kiln/kilntest/fntest"
)

// TestQueuesAndMappings drives Kiln queues with Debian's AWS CLI (sqs.sh)
// and event source mappings from them to a Python function with the CLI
// and boto3 (esm_test.py): bulk messages with a filter, partial batch
// failures, a poison message to the dead-letter queue, FIFO order, and a
// SIGKILL of kiln up mid-stream. The function runs in the process sandbox so
// that it can append what it saw to a file of the test's (the sink survives
// the kill; the Logs API would lose the last lines of a killed kiln up).
// $KILN_ESM_MESSAGES sets the bulk and crash queues' size (default 2,000).
func TestQueuesAndMappings(t *testing.T) {
	requireClients(t)
	if testing.Short() {
		t.Skip("end-to-end test with a real kiln up; skipped with -short")
	}
	n := 2000
	if s := os.Getenv("KILN_ESM_MESSAGES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 10 {
			t.Fatalf("KILN_ESM_MESSAGES=%q: want a number of at least 10", s)
		}
	}
	root := moduleRoot(t)
	here := filepath.Join(root, "e2e")
	dir := t.TempDir()
	if _, err := fntest.BuildKiln(dir); err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(filepath.Join(here, "esm_fn.py"))
	if err != nil {
		t.Fatal(err)
	}
	zip, err := fntest.ZipFiles(map[string][]byte{"app.py": code})
	if err != nil {
		t.Fatal(err)
	}
	zipPath := filepath.Join(dir, "esm.zip")
	if err := os.WriteFile(zipPath, zip, 0o644); err != nil {
		t.Fatal(err)
	}
	sink := filepath.Join(dir, "sink.jsonl")

	addr := kilntest.FreeAddr(t)
	k := &kiln{t: t, bin: filepath.Join(dir, "kiln"), data: filepath.Join(dir, "data"), addr: addr,
		endpoint: "http://" + addr, logPath: filepath.Join(dir, "kiln.log"), args: []string{"--sandbox", "process"}}
	t.Cleanup(func() {
		if err := k.stop(); err != nil {
			t.Error(err)
		}
	})
	k.start()
	var ident struct{ AccountID string }
	b, err := os.ReadFile(filepath.Join(k.data, "identity.json"))
	if err == nil {
		err = json.Unmarshal(b, &ident)
	}
	if err != nil || ident.AccountID == "" {
		t.Fatalf("account of kiln up: %v", err)
	}
	home := filepath.Join(dir, "home")
	os.MkdirAll(home, 0o700)
	env := append(clientEnv(&target{name: "up", endpoints: []string{k.endpoint}, dir: k.data, log: k.log, up: k}, home, nil), "ACCOUNT="+ident.AccountID, "ESM_ZIP="+zipPath, "SINK="+sink,
		"N="+strconv.Itoa(n), "DEADLINE=240")
	script := func(t *testing.T, timeout time.Duration, args ...string) {
		runScript(t, k.log, timeout, env, args[0], args[1:]...)
	}
	sqsSh, esmPy := filepath.Join(here, "sqs.sh"), filepath.Join(here, "esm_test.py")

	t.Run("queue API with the CLI", func(t *testing.T) { script(t, 300*time.Second, "bash", sqsSh, "api") })
	if !t.Run("mappings with the CLI", func(t *testing.T) { script(t, 300*time.Second, "bash", sqsSh, "setup") }) {
		t.FailNow()
	}
	t.Run("processing with boto3", func(t *testing.T) {
		script(t, 120*time.Second, python, esmPy, "send")
		script(t, 300*time.Second, python, esmPy, "verify")
	})
	t.Run("SIGKILL mid-stream", func(t *testing.T) {
		parent := k.t
		k.t = t
		defer func() { k.t = parent }()
		script(t, 120*time.Second, python, esmPy, "crash-send")
		// Kill once the function has seen some of the crash queue, but not all.
		deadline := time.Now().Add(120 * time.Second)
		for {
			b, _ := os.ReadFile(sink)
			seen := strings.Count(string(b), `"crash-`)
			if seen >= n/10 {
				if seen >= n {
					t.Fatalf("all %d crash messages processed before the kill: nothing to check", n)
				}
				t.Logf("SIGKILL of kiln up (pid %d) after %d of %d crash messages", k.cmd.Process.Pid, seen, n)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the function saw %d crash messages within 120s\n%s", seen, k.log())
			}
			time.Sleep(20 * time.Millisecond)
		}
		syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
		<-k.exited
		k.cmd = nil
		k.start()
		script(t, 300*time.Second, python, esmPy, "crash-verify")
	})
}
