// Package e2e drives a real `kiln up` process with the clients users have:
// Debian's AWS CLI (/usr/bin/aws) and boto3 (/usr/bin/python3), through the
// credentials and config files Kiln writes into its data directory.
//
//	cli.sh        the AWS CLI: function CRUD, invokes, versions, aliases,
//	              concurrency, error cases, code download
//	boto3_test.py boto3: invokes of Go, Python and Node functions, context,
//	              function errors, paginators, waiters, every error code
//	sqs.sh        the CLI against Kiln queues (SQS's query protocol) and
//	              event source mappings (esm_test.go)
//	esm_test.py   boto3: mappings from queues to esm_fn.py, filters, partial
//	              failures, dead-letter queue, FIFO order, SIGKILL mid-stream
//
// Both need Debian's packages: apt-get install awscli python3-boto3. Without
// them the test is skipped, except when $CI is set, where it fails.
package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

const (
	awsCLI = "/usr/bin/aws"
	python = "/usr/bin/python3"
	node   = "/usr/bin/node"

	// The key pair `kiln up` is started with (KILN_ACCESS_KEY_ID / KILN_SECRET_ACCESS_KEY).
	accessKeyID     = "AKIAKILNE2ETEST00001"
	secretAccessKey = "kilnE2eSecretKey/0123456789+abcdefghijKLM"
	region          = "us-east-1"
)

// moduleRoot is Kiln's source tree, found from this file's location.
func moduleRoot(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate e2e_test.go")
	}
	root := filepath.Dir(filepath.Dir(file))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s: %v", root, err)
	}
	return root
}

// requireClients skips (or, under CI, fails) when Debian's awscli or
// python3-boto3 is missing.
func requireClients(t *testing.T) {
	var missing []string
	if fi, err := os.Stat(awsCLI); err != nil || fi.Mode()&0o111 == 0 {
		missing = append(missing, "awscli ("+awsCLI+")")
	}
	if err := exec.Command(python, "-c", "import boto3, botocore").Run(); err != nil {
		missing = append(missing, "python3-boto3 (import boto3 with "+python+")")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		missing = append(missing, "bash")
	}
	if len(missing) == 0 {
		return
	}
	msg := "missing " + strings.Join(missing, ", ") + "; install them with: apt-get install -y awscli python3-boto3"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI must install them)")
	}
	t.Skip(msg)
}

// kiln is a `kiln up` child process.
type kiln struct {
	t        *testing.T
	bin      string
	data     string
	addr     string
	endpoint string
	logPath  string
	args     []string // more arguments of kiln up
	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
}

// start runs `kiln up` and waits for GET /kiln/health.
func (k *kiln) start() {
	t := k.t
	t.Helper()
	logf, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "\n===== kiln up --data %s --listen %s (%s)\n", k.data, k.addr, time.Now().Format(time.RFC3339))
	cmd := exec.Command(k.bin, append([]string{"up", "--data", k.data, "--listen", k.addr, "--metrics-listen", ""}, k.args...)...)
	cmd.Env = append(os.Environ(), "KILN_ACCESS_KEY_ID="+accessKeyID, "KILN_SECRET_ACCESS_KEY="+secretAccessKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a forced stop also ends the execution
	// environments it started (all descendants of this process).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start kiln: %v", err)
	}
	k.cmd, k.exited = cmd, make(chan struct{})
	go func() {
		k.waitErr = cmd.Wait()
		logf.Close()
		close(k.exited)
	}()
	t.Logf("kiln up started, pid %d, endpoint %s", cmd.Process.Pid, k.endpoint)

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(k.endpoint + "/kiln/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-k.exited:
			t.Fatalf("kiln up exited before it was healthy: %v\n%s", k.waitErr, k.log())
		default:
		}
		if time.Now().After(deadline) {
			k.stop()
			t.Fatalf("kiln up not healthy within 60s (last: %v)\n%s", err, k.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the kiln up started by start: SIGTERM to its PID, then, if it
// has not exited within 20 s, SIGKILL to its process group, and an error
// (a kiln up that ignores SIGTERM fails the test).
func (k *kiln) stop() (err error) {
	if k.cmd == nil {
		return nil
	}
	pid := k.cmd.Process.Pid
	select {
	case <-k.exited:
	default:
		syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-k.exited:
		case <-time.After(time.Minute): // it ends every environment and store first: seconds on a loaded host
			err = fmt.Errorf("kiln up (pid %d) did not exit within a minute of SIGTERM; killed it", pid)
			syscall.Kill(-pid, syscall.SIGKILL)
			<-k.exited
		}
	}
	// Anything of its process group still alive (environments) goes too.
	syscall.Kill(-pid, syscall.SIGKILL)
	k.cmd = nil
	return err
}

func (k *kiln) log() string {
	b, _ := os.ReadFile(k.logPath)
	const max = 12000
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return "----- kiln log (" + k.logPath + ") -----\n" + string(b)
}

// runScript runs one client script with env and fails the test, showing
// its output, unless it exits 0. timeout is what the script needs on a quiet
// machine; the bound is three times that, since every AWS CLI call starts a
// Python interpreter and a loaded host (CI once ran at load average 50)
// slows them all alike. It only stops a hung script: nothing is timed.
func runScript(t *testing.T, log func() string, timeout time.Duration, env []string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// On timeout: the script and whatever it started (its process group).
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Round(100 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %s\n%s\n%s", filepath.Base(name), strings.Join(args, " "), took, out.String(), log())
	}
	if err != nil {
		t.Fatalf("%s %s: %v (after %s)\n%s\n%s", filepath.Base(name), strings.Join(args, " "), err, took, out.String(), log())
	}
	t.Logf("%s %s: ok in %s\n%s", filepath.Base(name), strings.Join(args, " "), took, out.String())
}

// nodeRuntime is the nodejsN.x runtime of /usr/bin/node, or "" without node.
func nodeRuntime() string {
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return ""
	}
	major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(out)), "v"), ".")
	return "nodejs" + major + ".x"
}

// Function code of the Python and Node test functions.
const (
	pythonApp = `import json
import os
import sys


def handler(event, context):
    print("python handler got", json.dumps(event, sort_keys=True))
    cc = context.client_context
    return {
        "event": event,
        "runtime": "python",
        "requestId": context.aws_request_id,
        "functionName": context.function_name,
        "functionVersion": context.function_version,
        "invokedFunctionArn": context.invoked_function_arn,
        "memoryLimitInMB": str(context.memory_limit_in_mb),
        "logGroupName": context.log_group_name,
        "logStreamName": context.log_stream_name,
        "remainingMs": context.get_remaining_time_in_millis(),
        "clientCustom": cc.custom if cc is not None else None,
        "greeting": os.environ.get("GREETING"),
        "python": "%d.%d" % sys.version_info[:2],
    }


def fail(event, context):
    print("about to fail")
    raise ValueError("bad input: %s" % event.get("why", "no reason"))
`
	// index.mjs: an ES module with an async handler.
	nodeESM = `export const handler = async (event, context) => {
  console.log('node esm handler got', JSON.stringify(event));
  return {
    event,
    runtime: 'node-esm',
    requestId: context.awsRequestId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    invokedFunctionArn: context.invokedFunctionArn,
    memoryLimitInMB: String(context.memoryLimitInMB),
    remainingMs: context.getRemainingTimeInMillis(),
    clientCustom: context.clientContext ? context.clientContext.custom : null,
    node: process.version,
  };
};
`
	// index.js: CommonJS, an async handler and a callback handler.
	nodeCJS = `exports.handler = async (event, context) => ({ event, runtime: 'node-async', functionName: context.functionName });

exports.callback = function (event, context, callback) {
  setTimeout(() => callback(null, { event, runtime: 'node-callback', requestId: context.awsRequestId }), 10);
};

exports.callbackError = function (event, context, callback) {
  callback(new TypeError('callback failed: ' + event.why));
};
`
)

// hostileZip has an entry that would escape the code directory.
func hostileZip() ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range []struct{ name, body string }{{"bootstrap", "#!/bin/sh\n"}, {"../evil", "escaped\n"}} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Deflate})
		if err != nil {
			return nil, err
		}
		w.Write([]byte(f.body))
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildZips writes every deployment package into dir and returns their
// paths by env variable name.
func buildZips(t *testing.T, dir string) map[string]string {
	t.Helper()
	type result struct {
		name string
		b    []byte
		err  error
	}
	var wg sync.WaitGroup
	results := make(chan result, 8)
	goZip := func(name, source string) {
		defer wg.Done()
		bin, err := fntest.BuildGo(source)
		if err != nil {
			results <- result{name: name, err: err}
			return
		}
		b, err := fntest.ZipFiles(map[string][]byte{"bootstrap": bin})
		results <- result{name, b, err}
	}
	wg.Add(2)
	go goZip("GO_ZIP", fntest.ToolkitGo)
	// The same change server tests make, so the build cache is shared.
	go goZip("GO_V2_ZIP", strings.Replace(fntest.ToolkitGo, `VERSION = "v1"`, `VERSION = "v2"`, 1))
	wg.Wait()
	close(results)

	zips := map[string][]byte{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("build %s: %v", r.name, r.err)
		}
		zips[r.name] = r.b
	}
	var err error
	add := func(name string, files map[string][]byte) {
		if err == nil {
			zips[name], err = fntest.ZipFiles(files)
		}
	}
	add("PY_ZIP", map[string][]byte{"app.py": []byte(pythonApp)})
	add("NODE_ESM_ZIP", map[string][]byte{"index.mjs": []byte(nodeESM)})
	add("NODE_CJS_ZIP", map[string][]byte{"index.js": []byte(nodeCJS)})
	if err == nil {
		zips["EVIL_ZIP"], err = hostileZip()
	}
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for name, b := range zips {
		p := filepath.Join(dir, strings.ToLower(strings.TrimSuffix(name, "_ZIP"))+".zip")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	return paths
}

// clientEnv is the whole environment of the client scripts: nothing of the
// caller's AWS settings leaks in; credentials and region come from the files
// Kiln wrote.
func clientEnv(tg *target, home string, zips map[string]string) []string {
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + home,
		"LANG=C.UTF-8",
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(tg.dir, "credentials"),
		"AWS_CONFIG_FILE=" + filepath.Join(tg.dir, "config"),
		"AWS_PAGER=",
		"AWS_CLI_AUTO_PROMPT=off",
		"AWS_EC2_METADATA_DISABLED=true",
		"PYTHONDONTWRITEBYTECODE=1",
		"ENDPOINT=" + tg.endpoints[0],
		"KILN_ACCESS_KEY_ID=" + accessKeyID,
		"KILN_REGION=" + region,
		"NODE_RUNTIME=" + nodeRuntime(),
		"AWS=" + awsCLI,
		"PYTHON=" + python,
	}
	for name, p := range zips {
		env = append(env, name+"="+p)
	}
	return env
}
