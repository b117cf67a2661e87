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

// TestStreamMappings drives Kiln streams with Debian's AWS CLI (`aws
// kinesis`, streams.sh) and boto3 (streams_test.py), and stream event
// source mappings from them to a Python function: per-key order under
// ParallelizationFactor 5, a poison record isolated by bisect and sent to
// the failure queue after its retries, records past MaximumRecordAgeInSeconds
// sent there unprocessed (they age a real minute meanwhile, while the other
// checks run), and a SIGKILL of kiln up mid-stream: it resumes from the
// checkpoints with no record lost and again only records of the batches in
// flight. The function runs in the process sandbox so that it can append
// what it saw to a file of the test's, which survives the kill.
func TestStreamMappings(t *testing.T) {
	requireClients(t)
	if testing.Short() {
		t.Skip("end-to-end test with a real kiln up; skipped with -short")
	}
	const n = 1000
	here := filepath.Join(moduleRoot(t), "e2e")
	dir := t.TempDir()
	if _, err := fntest.BuildKiln(dir); err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile(filepath.Join(here, "streams_fn.py"))
	if err != nil {
		t.Fatal(err)
	}
	zip, err := fntest.ZipFiles(map[string][]byte{"app.py": code})
	if err != nil {
		t.Fatal(err)
	}
	zipPath := filepath.Join(dir, "streams.zip")
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
	env := append(clientEnv(&target{name: "up", endpoints: []string{k.endpoint}, dir: k.data, log: k.log, up: k}, home, nil),
		"ACCOUNT="+ident.AccountID, "FN_ZIP="+zipPath, "SINK="+sink, "N="+strconv.Itoa(n), "DEADLINE=120")
	script := func(t *testing.T, timeout time.Duration, args ...string) {
		runScript(t, k.log, timeout, env, args[0], args[1:]...)
	}
	cli, py := filepath.Join(here, "streams.sh"), filepath.Join(here, "streams_test.py")

	if !t.Run("streams and mappings with the CLI", func(t *testing.T) {
		script(t, 60*time.Second, "bash", cli, "streams")
		script(t, 60*time.Second, python, py, "put-aged") // mapped once a minute has passed
		script(t, 120*time.Second, "bash", cli, "setup")
	}) {
		t.FailNow()
	}
	t.Run("order under ParallelizationFactor 5", func(t *testing.T) { script(t, 150*time.Second, python, py, "order") })
	t.Run("poison isolated by bisect", func(t *testing.T) { script(t, 150*time.Second, python, py, "poison") })
	t.Run("SIGKILL mid-stream", func(t *testing.T) {
		parent := k.t
		k.t = t
		defer func() { k.t = parent }()
		script(t, 120*time.Second, python, py, "crash-put")
		deadline := time.Now().Add(120 * time.Second)
		for {
			b, _ := os.ReadFile(sink)
			seen := strings.Count(string(b), `"stream": "crash"`)
			if seen >= n/10 {
				if seen >= n {
					t.Fatalf("all %d crash records processed before the kill: nothing to check", n)
				}
				t.Logf("SIGKILL of kiln up (pid %d) after %d of %d crash records", k.cmd.Process.Pid, seen, n)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the function saw %d crash records within 120s\n%s", seen, k.log())
			}
			time.Sleep(10 * time.Millisecond)
		}
		syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
		<-k.exited
		k.cmd = nil
		k.start()
		script(t, 150*time.Second, python, py, "crash-verify")
	})
	t.Run("records past the maximum age", func(t *testing.T) { script(t, 150*time.Second, python, py, "aged") })
}
