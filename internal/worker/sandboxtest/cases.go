package sandboxtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/runtimes"
	"github.com/kiln-dev/kiln/internal/worker"
)

var lifecycleCases = []testCase{
	{"BackgroundPriority", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "toolkit", fntest.ToolkitGo)
		env := h.Create(t, fn)
		procs := h.Processes()
		p := procs[len(procs)-1]
		if _, ok := p.(worker.Prioritizer); !ok {
			t.Skip("the backend has no CPU priority")
		}
		own := hostPriority(t, p)
		h.InvokeBackground(t, env, map[string]any{"hello": "queued"})
		background := hostPriority(t, p)
		h.InvokeBackground(t, env, map[string]any{"hello": "queued"})
		res := h.Invoke(t, env, map[string]any{"hello": "sync"})
		if string(res.Payload) != `{"hello":"sync"}` {
			t.Fatalf("invoke after background ones: %s", res.Payload)
		}
		if again := hostPriority(t, p); background >= own || again != own {
			t.Errorf("priority: own %d, running queued events %d, sync again %d", own, background, again)
		}
	}},
	{"KilnAPI", func(t *testing.T, h *Harness) {
		// The worker serves Kiln's API on a socket inside the environment,
		// named by AWS_ENDPOINT_URL; the environment's credentials are its
		// account's, for its function.
		fn := h.AddGo(t, "probe", ProbeGo)
		env := h.Create(t, fn)
		if got := h.Probe(t, env, map[string]any{"action": "get", "path": "/2015-03-31/functions"}); got != "Kiln API: GET /2015-03-31/functions" {
			t.Errorf("GET $AWS_ENDPOINT_URL/2015-03-31/functions: %q", got)
		}
		for name, want := range map[string]string{"AWS_ACCESS_KEY_ID": "ASIA123456789012", "AWS_SESSION_TOKEN": "session of probe"} {
			if got := h.Probe(t, env, map[string]any{"action": "getenv", "name": name}); got != want {
				t.Errorf("%s=%q; want %q", name, got, want)
			}
		}
	}},
	{"InvokeAndLogs", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "toolkit", fntest.ToolkitGo)
		env := h.Create(t, fn)
		res := h.Invoke(t, env, map[string]any{"hello": "world"})
		if string(res.Payload) != `{"hello":"world"}` || res.ErrorType != "" || !res.Reusable {
			t.Fatalf("echo: %+v %s", res, res.Payload)
		}
		log := string(res.LogTail)
		for _, want := range []string{"START RequestId: ", "END RequestId:", "REPORT RequestId:", "Init Duration:", "Max Memory Used:"} {
			if !strings.Contains(log, want) {
				t.Errorf("log tail lacks %q:\n%s", want, log)
			}
		}
		if m := regexp.MustCompile(`Max Memory Used: (\d+) MB`).FindStringSubmatch(log); m == nil {
			t.Errorf("no memory used in the REPORT line:\n%s", log)
		}
		res = h.Invoke(t, env, map[string]any{"action": "print", "lines": 3, "text": "hello log"})
		if strings.Count(string(res.LogTail), "hello log\n") != 3 || strings.Contains(string(res.LogTail), "Init Duration") {
			t.Errorf("second invoke's log:\n%s", res.LogTail)
		}
		res = h.Invoke(t, env, map[string]any{"action": "error", "msg": "boom"})
		var doc struct{ ErrorMessage, ErrorType string }
		json.Unmarshal(res.Payload, &doc)
		if res.ErrorType == "" || doc.ErrorMessage != "boom" || !res.Reusable {
			t.Errorf("function error: %+v %s", res, res.Payload)
		}
		res = h.Invoke(t, env, map[string]any{"action": "env", "name": "AWS_LAMBDA_FUNCTION_NAME"})
		if string(res.Payload) != `"toolkit"` {
			t.Errorf("environment: %s", res.Payload)
		}
		if err := h.W.Destroy(context.Background(), env); err != nil {
			t.Fatal(err)
		}
	}},
	{"Timeout", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "toolkit", fntest.ToolkitGo)
		fn.Timeout = 1
		env := h.Create(t, fn)
		res := h.Invoke(t, env, map[string]any{"action": "sleep", "ms": 5000})
		if res.ErrorType != "Sandbox.Timedout" || res.Reusable || !strings.Contains(string(res.Payload), "Task timed out after 1.00 seconds") {
			t.Fatalf("timeout: %+v %s", res, res.Payload)
		}
		if !strings.Contains(string(res.LogTail), "Status: timeout") {
			t.Errorf("log tail:\n%s", res.LogTail)
		}
		if _, err := h.W.Invoke(context.Background(), env, &invoke.Invocation{RequestID: "x", Payload: []byte("{}")}); !errors.Is(err, invoke.ErrNoEnv) {
			t.Errorf("invoke after a timeout: %v, want ErrNoEnv", err)
		}
	}},
	{"Crash", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "toolkit", fntest.ToolkitGo)
		env := h.Create(t, fn)
		res := h.Invoke(t, env, map[string]any{"action": "exit", "code": 3})
		if res.ErrorType != "Runtime.ExitError" || res.Reusable || !strings.Contains(string(res.Payload), "Runtime exited with error: exit status 3") {
			t.Fatalf("exit: %s %s", res.ErrorType, res.Payload)
		}
		// The next environment of the function works.
		env = h.Create(t, fn)
		if res := h.Invoke(t, env, map[string]any{"a": 1}); string(res.Payload) != `{"a":1}` {
			t.Fatalf("after a crash: %s", res.Payload)
		}
	}},
	{"AnsweredThenExited", func(t *testing.T, h *Harness) {
		// A runtime that posts its invoke's outcome and exits at once: the
		// outcome was accepted, and it is the invoke's, not the exit. CI
		// once saw the exit win the race (as Runtime.ExitError).
		fn := h.AddGo(t, "probe", ProbeGo)
		for i := range 20 {
			env := h.Create(t, fn)
			res := h.Invoke(t, env, map[string]any{"action": "badtype"})
			if res.ErrorType == "Runtime.ExitError" || !strings.Contains(string(res.Payload), "bad type") {
				t.Fatalf("invoke %d: %q %s", i, res.ErrorType, res.Payload)
			}
		}
	}},
	{"InitFailure", func(t *testing.T, h *Harness) {
		fn := h.AddFiles(t, "badinit", map[string][]byte{"bootstrap": []byte("#!/bin/sh\necho dying during init\nexit 7\n")})
		_, err := h.W.Create(context.Background(), invoke.EnvSpec{Function: fn})
		var ie *invoke.InitError
		if !errors.As(err, &ie) || ie.ErrorType != "Runtime.ExitError" || !strings.Contains(string(ie.Document), "exit status 7") {
			t.Fatalf("init failure: %v", err)
		}
		if !strings.Contains(string(ie.LogTail), "dying during init") {
			t.Errorf("init log tail: %q", ie.LogTail)
		}
		fn = h.AddFiles(t, "noentry", map[string][]byte{"other": []byte("x")})
		if _, err := h.W.Create(context.Background(), invoke.EnvSpec{Function: fn}); !errors.As(err, &ie) || ie.ErrorType != "Runtime.InvalidEntrypoint" {
			t.Fatalf("missing bootstrap: %v", err)
		}
	}},
	{"ConcurrentAndClose", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "toolkit", fntest.ToolkitGo)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				info, err := h.W.Create(context.Background(), invoke.EnvSpec{Function: fn})
				if err != nil {
					errs <- err
					return
				}
				res, err := h.W.Invoke(context.Background(), info.ID, &invoke.Invocation{RequestID: fmt.Sprint("c", i), Payload: []byte(fmt.Sprint(i))})
				if err != nil || string(res.Payload) != fmt.Sprint(i) {
					errs <- fmt.Errorf("invoke %d: %v %+v", i, err, res)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := h.W.Count(); n != 8 {
			t.Errorf("%d environments, want 8", n)
		}
		// CheckNothingLeft closes the worker with them all.
	}},
	{"ManagedRuntimes", func(t *testing.T, h *Harness) {
		ran := 0
		for _, r := range interpreted {
			if _, err := runtimes.Lookup(r.runtime); err != nil {
				continue
			}
			ran++
			fn := h.AddFiles(t, r.runtime, map[string][]byte{r.file: []byte(r.code)})
			fn.Runtime, fn.Handler, fn.MemorySize, fn.Timeout = r.runtime, r.handler, 512, 10
			env := h.Create(t, fn)
			res := h.Invoke(t, env, map[string]any{"k": "v"})
			var got struct {
				Echo   map[string]string
				Random int
				Certs  bool
				Fn     string
			}
			if err := json.Unmarshal(res.Payload, &got); err != nil || res.ErrorType != "" || got.Echo["k"] != "v" || got.Random != 8 || !got.Certs || got.Fn != r.runtime {
				t.Errorf("%s: %s %s\n%s", r.runtime, res.ErrorType, res.Payload, res.LogTail)
			}
			// Lambda reports the runtime's resident memory, file pages
			// (Node's own binary, shared with every other environment)
			// included: ~40 MB for Node here, where the cgroup is
			// charged ~10.
			if m := regexp.MustCompile(`Max Memory Used: (\d+) MB`).FindStringSubmatch(string(res.LogTail)); m == nil {
				t.Errorf("%s: no Max Memory Used in\n%s", r.runtime, res.LogTail)
			} else if used, _ := strconv.Atoi(m[1]); strings.HasPrefix(r.runtime, "nodejs") && used < 30 {
				t.Errorf("%s: Max Memory Used: %d MB, want the runtime's resident memory (30 MB or more)", r.runtime, used)
			}
		}
		if ran == 0 {
			t.Skip("no managed runtime on this host")
		}
	}},
	{"Extensions", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "toolkit", fntest.ToolkitGo)
		ext := fntest.GoBootstrap(t, ExtensionGo)
		h.SetExtensions(t, "toolkit", map[string][]byte{"ext-a": ext, "ext-b": ext})
		env := h.Create(t, fn)
		h.Logs.WaitFor(t, "EXT ext-a REGISTERED toolkit true")
		h.Logs.WaitFor(t, "EXT ext-b REGISTERED toolkit true")
		for i := range 3 {
			res := h.Invoke(t, env, map[string]any{"n": i})
			if string(res.Payload) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("invoke with extensions: %s %s", res.ErrorType, res.Payload)
			}
		}
		res := h.Invoke(t, env, map[string]any{"action": "context"})
		var got struct{ RequestID string }
		json.Unmarshal(res.Payload, &got)
		h.Logs.WaitFor(t, "EXT ext-a INVOKE "+got.RequestID+" true true")
		h.Logs.WaitFor(t, "EXT ext-b INVOKE "+got.RequestID+" true true")
		if err := h.W.Destroy(context.Background(), env); err != nil {
			t.Fatal(err)
		}
		h.Logs.WaitFor(t, "EXT ext-a SHUTDOWN spindown")
		h.Logs.WaitFor(t, "EXT ext-b SHUTDOWN spindown")

		// An extension's init error fails init with its type; one that
		// exits before registering fails it with Extension.Crash.
		for name, want := range map[string]string{"failing-initerror": "Extension.TestFailure", "failing-crash": "Extension.Crash"} {
			fn := h.AddGo(t, name, fntest.ToolkitGo)
			h.SetExtensions(t, name, map[string][]byte{name: ext})
			_, err := h.W.Create(context.Background(), invoke.EnvSpec{Function: fn})
			var ie *invoke.InitError
			if !errors.As(err, &ie) || ie.ErrorType != want {
				t.Errorf("%s: %v, want an init error %s", name, err, want)
			}
		}
	}},
}

// interpreted are the managed runtimes of the host, with a handler each
// that uses what such runtimes commonly need (threads, /tmp, /dev/urandom,
// TLS certificates).
var interpreted = []struct {
	runtime, handler, file, code string
}{
	{"python3.11", "app.handler", "app.py", `import os, threading, ssl, json

def handler(event, context):
    with open("/tmp/x", "w") as f:
        f.write("ok")
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    ctx = ssl.create_default_context()
    return {"echo": event, "random": len(os.urandom(8)), "certs": ctx.cert_store_stats()["x509_ca"] > 0,
            "fn": context.function_name}
`},
	{"nodejs20.x", "index.handler", "index.js", `const fs = require('fs'); const crypto = require('crypto'); const tls = require('tls');
exports.handler = async (event, context) => {
  fs.writeFileSync('/tmp/x', 'ok');
  return { echo: event, random: crypto.randomBytes(8).length, certs: tls.rootCertificates.length > 0, fn: context.functionName };
};
`},
}

// slowHostTimeout is the timeout of functions whose work takes long on a
// slow host (touching hundreds of MB): the test waits for their outcome,
// which comes when the work ends, not for the timeout.
const slowHostTimeout = 300

var isolationCases = []testCase{
	{"Filesystem", func(t *testing.T, h *Harness) {
		other := h.AddGo(t, "toolkit", fntest.ToolkitGo)
		_ = other
		secret := filepath.Join(h.dir, "secret.txt")
		os.WriteFile(secret, []byte("host secret"), 0o644)
		fn := h.AddGo(t, "probe", ProbeGo)
		env := h.Create(t, fn)
		root := strings.Fields(h.Probe(t, env, map[string]any{"action": "ls", "path": "/"}))
		allowed := map[string]bool{"bin": true, "sbin": true, "lib": true, "lib32": true, "lib64": true, "libx32": true,
			"usr": true, "etc": true, "var": true, "opt": true, "tmp": true, "proc": true, "dev": true}
		for _, e := range root {
			if !allowed[e] {
				t.Errorf("/ has %q (all: %v)", e, root)
			}
		}
		for _, p := range []string{secret, h.CodeDir("toolkit") + "/bootstrap", h.dir, "/root", "/home", "/etc/shadow",
			"/run", "/sys/kernel", "/var/lib", "/proc/1/environ", "/proc/1/mem"} {
			if got := h.Probe(t, env, map[string]any{"action": "read", "path": p}); got != "ENOENT" && got != "EACCES" && got != "EPERM" {
				t.Errorf("read %s: %.80q, want it hidden", p, got)
			}
		}
		if got := h.Probe(t, env, map[string]any{"action": "ls", "path": "/var/task"}); got != "bootstrap" {
			t.Errorf("/var/task: %q", got)
		}
		if got := h.Probe(t, env, map[string]any{"action": "ls", "path": "/var/runtime"}); !strings.Contains(got, "python") {
			t.Errorf("/var/runtime: %q", got)
		}
		if got := h.Probe(t, env, map[string]any{"action": "read", "path": "/etc/passwd"}); !strings.Contains(got, "sbx_user1051") || strings.Count(got, "\n") > 3 {
			t.Errorf("/etc/passwd is not the sandbox's: %q", got)
		}
		if got := h.Probe(t, env, map[string]any{"action": "ls", "path": "/proc"}); len(strings.Fields(got)) > 200 || strings.Contains(" "+got+" ", " "+strconv.Itoa(os.Getpid())+" ") {
			t.Errorf("/proc shows host processes: %.200s", got)
		}
		// /proc tells nothing of the host: no host path in mountinfo (the
		// root of each mount within its file system), no kernel command
		// line, no load, no names of the worker's cgroups.
		mountinfo := h.Probe(t, env, map[string]any{"action": "readall", "path": "/proc/self/mountinfo"})
		for _, line := range strings.Split(strings.TrimSpace(mountinfo), "\n") {
			if f := strings.Fields(line); len(f) < 5 || strings.Contains(line, h.dir) || strings.Contains(f[3], "kiln") {
				t.Errorf("mountinfo shows a host path: %s", line)
			}
		}
		for _, p := range []string{"/proc/cmdline", "/proc/loadavg", "/proc/keys", "/proc/timer_list"} {
			if got := h.Probe(t, env, map[string]any{"action": "read", "path": p}); got != "EOF" && got != "ENOENT" {
				t.Errorf("%s: %.200q, want it masked", p, got)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(h.Probe(t, env, map[string]any{"action": "readall", "path": "/proc/self/cgroup"})), "\n") {
			if !strings.HasSuffix(line, ":/") {
				t.Errorf("/proc/self/cgroup shows the worker's cgroups: %s", line)
			}
		}
		if got := h.Probe(t, env, map[string]any{"action": "write", "path": "/proc/sys/kernel/hostname", "bytes": 1}); got != "EROFS" && got != "EACCES" {
			t.Errorf("write /proc/sys: %s, want EROFS", got)
		}
		if got := h.Probe(t, env, map[string]any{"action": "read", "path": "/dev/urandom"}); len(got) < 100 {
			t.Errorf("/dev/urandom: %q", got)
		}
		if got := h.Probe(t, env, map[string]any{"action": "write", "path": "/dev/null", "bytes": 10}); got != "ok" && got != "EINVAL" {
			t.Errorf("write /dev/null: %s", got) // fsync of /dev/null is EINVAL
		}
	}},
	{"ReadOnly", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "probe", ProbeGo)
		env := h.Create(t, fn)
		for _, p := range []string{"/var/task/x", "/x", "/etc/x", "/usr/x", "/var/runtime/x", "/opt/x", "/dev/x"} {
			if got := h.Probe(t, env, map[string]any{"action": "write", "path": p, "bytes": 1}); got != "EROFS" && got != "EACCES" {
				t.Errorf("write %s: %s, want EROFS", p, got)
			}
		}
		if got := h.Probe(t, env, map[string]any{"action": "write", "path": "/tmp/x", "bytes": 1 << 20}); got != "ok" {
			t.Errorf("write /tmp/x: %s", got)
		}
	}},
	{"TmpSize", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "probe", ProbeGo)
		fn.MemorySize = 1024 // /tmp is memory: more than its size, so that it fills first
		fn.Timeout = slowHostTimeout
		fn.EphemeralStorage = &api.EphemeralStorage{Size: 512}
		env := h.Create(t, fn)
		if got := h.Probe(t, env, map[string]any{"action": "write", "path": "/tmp/big", "bytes": 600 << 20}); got != "ENOSPC" {
			t.Errorf("600 MB into a 512 MB /tmp: %s, want ENOSPC", got)
		}
		if got := h.Probe(t, env, map[string]any{"action": "write", "path": "/tmp/small", "bytes": 100 << 20}); got != "ok" {
			t.Errorf("100 MB after: %s", got)
		}
	}},
	{"Identity", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "probe", ProbeGo)
		env := h.Create(t, fn)
		var id struct {
			UID, GID, Pid    int
			Hostname, UIDMap string
			CapEff           string
		}
		if err := json.Unmarshal([]byte(h.Probe(t, env, map[string]any{"action": "id"})), &id); err != nil {
			t.Fatal(err)
		}
		host, _ := os.Hostname()
		f := strings.Fields(id.UIDMap)
		if id.UID != 993 || id.GID != 990 || id.CapEff != "0000000000000000" || id.Pid > 50 || len(f) != 3 || f[0] != "0" || f[1] == "0" || (id.Hostname == host && host != "localhost") {
			t.Errorf("identity in the sandbox: %+v (host name %q)", id, host)
		}
		// PID 1 is the agent, of another uid: out of the function's reach.
		if got := h.Probe(t, env, map[string]any{"action": "kill", "code": 1}); got != "EPERM" {
			t.Errorf("SIGTERM to PID 1: %s, want EPERM", got)
		}
	}},
	{"Network", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "probe", ProbeGo)
		env := h.Create(t, fn)
		addr := HostListener(t)
		for _, a := range []string{addr, "10.0.0.1:80", "8.8.8.8:53"} {
			if got := h.Probe(t, env, map[string]any{"action": "connect", "addr": a}); got == "ok" {
				t.Errorf("connect %s from the sandbox succeeded", a)
			}
		}
		// Loopback inside works (the Runtime API is there).
		if got := h.Probe(t, env, map[string]any{"action": "getenv", "name": "AWS_LAMBDA_RUNTIME_API"}); got != "127.0.0.1:9001" {
			t.Errorf("AWS_LAMBDA_RUNTIME_API=%s", got)
		} else if got := h.Probe(t, env, map[string]any{"action": "connect", "addr": got}); got != "ok" {
			t.Errorf("connect to the Runtime API: %s", got)
		}
	}},
	{"Syscalls", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "probe", ProbeGo)
		env := h.Create(t, fn)
		for _, sc := range []string{"mount", "umount", "unshare", "clone_newuser", "ptrace", "setns", "bpf", "keyctl",
			"chroot", "reboot", "kexec", "init_module", "perf_event_open", "userfaultfd"} {
			if got := h.Probe(t, env, map[string]any{"action": "syscall", "name": sc}); got != "EPERM" {
				t.Errorf("%s: %s, want EPERM", sc, got)
			}
		}
	}},
	{"Memory", func(t *testing.T, h *Harness) {
		// The kernel ends it when it reaches its limit, however long the
		// page faults up to there take (seconds on a slow virtual
		// machine): a generous timeout, which the outcome ends long before.
		fn := h.AddGo(t, "probe", ProbeGo)
		fn.Timeout = slowHostTimeout
		env := h.Create(t, fn)
		res := h.Invoke(t, env, map[string]any{"action": "alloc", "mb": 400})
		if res.ErrorType != "Runtime.OutOfMemory" || res.Reusable || !strings.Contains(string(res.Payload), "signal: killed") {
			t.Fatalf("400 MB in a 128 MB function: %s %s", res.ErrorType, res.Payload)
		}
		m := regexp.MustCompile(`Max Memory Used: (\d+) MB`).FindStringSubmatch(string(res.LogTail))
		if m == nil {
			t.Fatalf("REPORT:\n%s", res.LogTail)
		}
		if used, _ := strconv.Atoi(m[1]); used < 100 || used > 130 {
			t.Errorf("Max Memory Used: %d MB, want about 128:\n%s", used, res.LogTail)
		}
		env = h.Create(t, fn)
		if got := h.Probe(t, env, map[string]any{"action": "alloc", "mb": 50}); got != "ok" {
			t.Errorf("50 MB: %s", got)
		}
	}},
	{"CPUShare", func(t *testing.T, h *Harness) {
		// An environment runs on the CPUs its memory buys (one per 1,769 MB),
		// and sees them as its CPU count; one that buys them all is not
		// pinned. Asking for every CPU with sched_setaffinity does not widen
		// its share.
		host := runtime.NumCPU()
		if host < 2 {
			t.Skip("one CPU: nothing to share")
		}
		probe := h.AddGo(t, "probe", ProbeGo)
		count := func(list string) int {
			n := 0
			for _, r := range strings.Split(list, ",") {
				lo, hi, _ := strings.Cut(r, "-")
				a, err := strconv.Atoi(lo)
				if err != nil {
					t.Fatalf("CPU list %q", list)
				}
				b := a
				if hi != "" {
					b, _ = strconv.Atoi(hi)
				}
				n += b - a + 1
			}
			return n
		}
		cpus := func(memMB int) (n, widened int) {
			fn := probe
			fn.MemorySize = memMB
			env := h.Create(t, fn)
			out := h.Probe(t, env, map[string]any{"action": "read", "path": "/proc/self/status"})
			m := regexp.MustCompile(`Cpus_allowed_list:\s*(\S+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("/proc/self/status:\n%s", out)
			}
			return count(m[1]), count(h.Probe(t, env, map[string]any{"action": "widencpus"}))
		}
		for _, c := range []struct{ memMB, want int }{{1769, 1}, {128, 1}, {10240, host}} {
			if n, widened := cpus(c.memMB); n != c.want || widened != c.want {
				t.Errorf("%d MB runs on %d CPUs, %d after asking for all; want %d", c.memMB, n, widened, c.want)
			}
		}
	}},
	{"Pids", func(t *testing.T, h *Harness) {
		fn := h.AddGo(t, "probe", ProbeGo)
		fn.MemorySize = 1769 // a whole CPU, so that a thousand execs are quick
		fn.Timeout = slowHostTimeout
		env := h.Create(t, fn)
		var got struct {
			Started int
			Error   string
		}
		json.Unmarshal([]byte(h.Probe(t, env, map[string]any{"action": "forkbomb", "n": 5000})), &got)
		if got.Started >= 1024 || got.Error == "ok" {
			t.Errorf("fork bomb: %+v, want it stopped under 1024 processes", got)
		}
		if got := h.Probe(t, env, map[string]any{"action": "sleep", "ms": 1}); got != "slept" {
			t.Errorf("after the fork bomb: %s", got)
		}
	}},
}

// hostPriority is the environment's CPU priority as the host sees it
// (higher runs first): its cgroup's CPU weight when it has a cgroup, else
// the negated nice value of its first process.
func hostPriority(t *testing.T, p worker.Process) int {
	t.Helper()
	f, ok := p.(Footprinter)
	if !ok {
		t.Fatal("the backend's processes do not tell their host footprint")
	}
	pids, paths, _ := f.HostFootprint()
	for _, dir := range paths {
		for _, name := range []string{"cpu.shares", "cpu.weight"} {
			if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				n, err := strconv.Atoi(string(bytes.TrimSpace(b)))
				if err != nil {
					t.Fatalf("%s/%s: %q", dir, name, b)
				}
				return n
			}
		}
	}
	if len(pids) == 0 {
		t.Fatal("no host footprint")
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's closing parenthesis; nice is field 19.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	nice, err := strconv.Atoi(fields[16])
	if err != nil {
		t.Fatalf("nice in %q: %v", stat, err)
	}
	return -nice
}
