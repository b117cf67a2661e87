package sandbox_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/runtimeapi"
	"github.com/kiln-dev/kiln/internal/server"
	"github.com/kiln-dev/kiln/internal/worker/sandboxtest"
	"golang.org/x/sys/unix"
)

// slowHost is the timeout of functions whose work takes long on a slow
// host (touching hundreds of MB, writing them): the outcome ends the wait.
const slowHost = 300

// openFiles counts this process's descriptors (Kiln's, in these tests).
func openFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestHostileFunctions runs functions that attack the platform through a
// real Kiln on the Linux backend, each one a function of its own. Each gets
// its clear error, a bystander function keeps working, and once the
// hostile function is deleted nothing of its environments is left on the
// host.
func TestHostileFunctions(t *testing.T) {
	rec := sandboxtest.NewRecorder(linux(t))
	s := kilntest.Start(t, server.Config{Sandbox: rec})
	c := kilntest.Lambda(s)
	ctx := context.Background()

	toolkit := fntest.GoFunctionZip(t, fntest.ToolkitGo)
	kilntest.MustCreate(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("bystander"), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: toolkit}})
	bystander := func(t *testing.T) {
		t.Helper()
		out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("bystander"), Payload: []byte(`{"still":"here"}`)})
		if err != nil || out.FunctionError != nil || string(out.Payload) != `{"still":"here"}` {
			t.Fatalf("the bystander function: %v %+v", err, out)
		}
	}
	bystander(t)
	got, err := c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("bystander")})
	if err != nil {
		t.Fatal(err)
	}
	hex, err := codestore.HexOf(aws.ToString(got.Configuration.CodeSha256))
	if err != nil {
		t.Fatal(err)
	}
	bystanderCode := filepath.Join(s.DataDir, "code", "trees", hex)
	kilnAddr := strings.TrimPrefix(s.Endpoint, "http://")
	if u, err := url.Parse(s.Endpoint); err == nil {
		kilnAddr = u.Host
	}
	otherAddr := sandboxtest.HostListener(t)

	probe := fntest.GoFunctionZip(t, sandboxtest.ProbeGo)
	type call struct {
		payload string
		errType string // the invoke's function error type ("" for success)
		log     string
	}
	invoke := func(t *testing.T, fn string, ev map[string]any) call {
		t.Helper()
		b, _ := json.Marshal(ev)
		out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(fn), Payload: b, LogType: types.LogTypeTail})
		if err != nil {
			t.Fatalf("invoke %s %s: %v", fn, b, err)
		}
		log, _ := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
		r := call{payload: string(out.Payload), log: string(log)}
		if out.FunctionError != nil {
			var doc struct{ ErrorType string }
			json.Unmarshal(out.Payload, &doc)
			r.errType = doc.ErrorType
		} else {
			var s string
			if json.Unmarshal(out.Payload, &s) == nil {
				r.payload = s
			}
		}
		return r
	}
	expect := func(t *testing.T, fn string, ev map[string]any, ok func(string) bool, what string) {
		t.Helper()
		r := invoke(t, fn, ev)
		if r.errType != "" || !ok(r.payload) {
			t.Errorf("%v: %q %s, want %s", ev, r.payload, r.errType, what)
		}
	}
	denied := func(s string) bool { return s == "ENOENT" || s == "EACCES" || s == "EPERM" }
	failed := func(s string) bool { return s != "ok" }
	eperm := func(s string) bool { return s == "EPERM" }
	readOnly := func(s string) bool { return s == "EROFS" || s == "EACCES" }

	for _, tc := range []struct {
		name      string
		memory    int32
		timeout   int32
		ephemeral int32
		run       func(t *testing.T, fn string)
	}{
		{"ReadsOtherCodeAndDataDir", 128, 3, 512, func(t *testing.T, fn string) {
			for _, p := range []string{bystanderCode + "/bootstrap", bystanderCode, s.DataDir, filepath.Join(s.DataDir, "identity.json"),
				filepath.Join(s.DataDir, "credentials"), "/root", "/home", "/etc/shadow", "/proc/1/root/etc/shadow"} {
				expect(t, fn, map[string]any{"action": "read", "path": p}, denied, "no access to "+p)
			}
			expect(t, fn, map[string]any{"action": "ls", "path": "/var/task"}, func(s string) bool { return s == "bootstrap" }, "only its own code")
		}},
		{"ForkBomb", 1769, 5, 512, func(t *testing.T, fn string) {
			// Exponential, never cleaned up: the pids limit stops it and the
			// timeout ends the environment with all of it. The shell forks
			// once, to start the bomb, and then becomes sleep: a fork of its
			// own after that could meet the limit (dash exits when a fork
			// fails), and the invoke must run until the timeout.
			r := invoke(t, fn, map[string]any{"action": "exec", "argv": []string{"/bin/sh", "-c", "b() { b | b & }; b & exec sleep 60"}})
			if !strings.Contains(r.payload, "Task timed out after 5.00 seconds") {
				t.Errorf("fork bomb: %s %s", r.errType, r.payload)
			}
		}},
		{"PoliteForkBomb", 1769, slowHost, 512, func(t *testing.T, fn string) {
			// Stopped under the limit, however long a thousand forks take.
			// Either it reports how far it got, or the limit refused its own
			// runtime a thread and the runtime died (Go exits 2 then), as a
			// process that exhausts its pids does.
			r := invoke(t, fn, map[string]any{"action": "forkbomb", "n": 5000})
			var fb struct {
				Started int
				Error   string
			}
			json.Unmarshal([]byte(r.payload), &fb)
			died := r.errType == "Runtime.ExitError" && strings.Contains(r.payload, "exit status 2")
			if !died && (r.errType != "" || fb.Started >= 1024 || fb.Error == "ok") {
				t.Errorf("fork bomb: %+v %s %s", fb, r.errType, r.payload)
			}
		}},
		{"MemoryHog", 128, slowHost, 512, func(t *testing.T, fn string) {
			r := invoke(t, fn, map[string]any{"action": "alloc", "mb": 512})
			if r.errType != "Runtime.OutOfMemory" || !strings.Contains(r.payload, "Runtime exited with error: signal: killed") {
				t.Errorf("512 MB in 128: %s %s", r.errType, r.payload)
			}
			m := regexp.MustCompile(`Max Memory Used: (\d+) MB`).FindStringSubmatch(r.log)
			if m == nil {
				t.Fatalf("no REPORT in the log tail:\n%s", r.log)
			}
			if n, _ := strconv.Atoi(m[1]); n < 100 || n > 130 || !strings.Contains(r.log, "Runtime.OutOfMemory") {
				t.Errorf("REPORT: %s", r.log)
			}
		}},
		{"FillsTmp", 1024, slowHost, 512, func(t *testing.T, fn string) {
			expect(t, fn, map[string]any{"action": "write", "path": "/tmp/fill", "bytes": 600 << 20}, func(s string) bool { return s == "ENOSPC" }, "ENOSPC")
		}},
		{"ConnectsToKilnAndLoopback", 128, 10, 512, func(t *testing.T, fn string) {
			for _, a := range []string{kilnAddr, otherAddr, "127.0.0.1:22", "10.0.0.1:80"} {
				expect(t, fn, map[string]any{"action": "connect", "addr": a}, failed, "no connection to "+a)
			}
		}},
		{"MountPtraceUnshare", 128, 3, 512, func(t *testing.T, fn string) {
			for _, sc := range []string{"mount", "umount", "ptrace", "unshare", "clone_newuser", "setns", "chroot", "bpf", "keyctl"} {
				expect(t, fn, map[string]any{"action": "syscall", "name": sc}, eperm, sc+": EPERM")
			}
		}},
		{"WritesOutsideTmp", 128, 3, 512, func(t *testing.T, fn string) {
			for _, p := range []string{"/var/task/bootstrap", "/var/task/x", "/x", "/etc/passwd", "/usr/bin/x", "/opt/x", "/var/runtime/x"} {
				expect(t, fn, map[string]any{"action": "write", "path": p, "bytes": 1}, readOnly, "EROFS for "+p)
			}
		}},
		{"SleepsPastTimeout", 128, 1, 512, func(t *testing.T, fn string) {
			r := invoke(t, fn, map[string]any{"action": "sleep", "ms": 10000})
			if r.errType != "Sandbox.Timedout" || !strings.Contains(r.payload, "Task timed out after 1.00 seconds") {
				t.Errorf("sleep past the timeout: %s %s", r.errType, r.payload)
			}
		}},
		{"ExitsMidInvoke", 128, 3, 512, func(t *testing.T, fn string) {
			r := invoke(t, fn, map[string]any{"action": "exit", "code": 7})
			if r.errType != "Runtime.ExitError" || !strings.Contains(r.payload, "Runtime exited with error: exit status 7") {
				t.Errorf("exit: %s %s", r.errType, r.payload)
			}
		}},
		{"FloodsRuntimeAPIHeaders", 128, slowHost, 512, func(t *testing.T, fn string) {
			// The Runtime API runs in Kiln's process, outside the
			// function's cgroup: it stops reading at its header limit.
			r := invoke(t, fn, map[string]any{"action": "flood", "mb": 512})
			var got struct {
				Written int
				Answer  string
			}
			json.Unmarshal([]byte(r.payload), &got)
			if r.errType != "" || got.Written >= 64<<20 || !strings.HasPrefix(got.Answer, "HTTP/1.1 431") {
				t.Errorf("a 512 MB header: %s %s", r.errType, r.payload)
			}
		}},
		{"HoldsRuntimeAPIConnections", 128, slowHost, 512, func(t *testing.T, fn string) {
			// Each connection Kiln accepts is a descriptor of Kiln's: at
			// most runtimeapi.DefaultMaxConns of them per environment. The
			// function's own descriptors stop at Lambda's 1,024.
			limits := invoke(t, fn, map[string]any{"action": "readall", "path": "/proc/self/limits"}).payload
			if m := regexp.MustCompile(`Max open files\s+(\d+)\s+(\d+)`).FindStringSubmatch(limits); m == nil || m[1] != "1024" || m[2] != "1024" {
				t.Errorf("the function's descriptor limit: %q", m)
			}
			before := openFiles(t)
			r := invoke(t, fn, map[string]any{"action": "conns", "n": 5000})
			var got struct {
				Opened int
				Error  string
			}
			json.Unmarshal([]byte(r.payload), &got)
			held := openFiles(t) - before
			if r.errType != "" || got.Opened >= 1024 || held > runtimeapi.DefaultMaxConns+16 {
				t.Errorf("connections: %s %s; Kiln holds %d more descriptors", r.errType, r.payload, held)
			}
			t.Logf("the function opened %d connections (%s); Kiln holds %d more descriptors", got.Opened, got.Error, held)
		}},
		{"SocketFamilies", 128, 3, 512, func(t *testing.T, fn string) {
			for family, want := range map[int]string{unix.AF_VSOCK: "EAFNOSUPPORT", unix.AF_PACKET: "EAFNOSUPPORT",
				unix.AF_ALG: "EAFNOSUPPORT", unix.AF_INET: "ok", unix.AF_INET6: "ok", unix.AF_UNIX: "ok"} {
				expect(t, fn, map[string]any{"action": "socket", "n": family}, func(s string) bool { return s == want }, fmt.Sprint("family ", family, ": ", want))
			}
		}},
		{"WidensCPUs", 128, 3, 512, func(t *testing.T, fn string) {
			if runtime.NumCPU() < 2 {
				t.Skip("one CPU")
			}
			expect(t, fn, map[string]any{"action": "widencpus"}, func(s string) bool { _, err := strconv.Atoi(s); return err == nil }, "one CPU")
		}},
		{"ReadsHostFromProc", 128, 3, 512, func(t *testing.T, fn string) {
			mountinfo := invoke(t, fn, map[string]any{"action": "readall", "path": "/proc/self/mountinfo"}).payload
			if strings.Contains(mountinfo, s.DataDir) || strings.Contains(mountinfo, "kiln-sandbox") || !strings.Contains(mountinfo, "/var/task") {
				t.Errorf("mountinfo:\n%s", mountinfo)
			}
			for _, p := range []string{"/proc/cmdline", "/proc/loadavg"} {
				expect(t, fn, map[string]any{"action": "read", "path": p}, func(s string) bool { return s == "EOF" }, p+" masked")
			}
		}},
		{"ErrorTypeNotUTF8", 128, 3, 512, func(t *testing.T, fn string) {
			// The error type is user data: as a metric label (which must
			// be UTF-8) it panicked, and through an Event invoke, outside
			// any recover, that ended Kiln, again at each redelivery.
			if _, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(fn), InvocationType: types.InvocationTypeEvent,
				Payload: []byte(`{"action":"badtype"}`)}); err != nil {
				t.Fatal(err)
			}
			r := invoke(t, fn, map[string]any{"action": "badtype"})
			if !strings.Contains(r.payload, "bad type") {
				t.Errorf("sync: %s %s", r.errType, r.payload)
			}
			series := `kiln_function_errors_total{account="` + s.Identity.AccountID + `",function="` + fn + `",type="other"} 2`
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
				rec := httptest.NewRecorder()
				s.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
				if strings.Contains(rec.Body.String(), series) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %s in /metrics:\n%s", series, rec.Body.String())
				}
			}
		}},
		{"Prints100MB", 1769, slowHost, 512, func(t *testing.T, fn string) {
			r := invoke(t, fn, map[string]any{"action": "print", "mb": 100})
			if r.errType != "" || r.payload != "done" || len(r.log) != 4096 || !strings.Contains(r.log, "REPORT RequestId") {
				t.Errorf("100 MB of logs: %s %.100q, a %d-byte tail", r.errType, r.payload, len(r.log))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn := "hostile-" + strings.ToLower(tc.name)
			kilntest.MustCreate(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String(fn), Runtime: types.RuntimeProvidedal2023,
				Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: probe},
				MemorySize: aws.Int32(tc.memory), Timeout: aws.Int32(tc.timeout),
				EphemeralStorage: &types.EphemeralStorage{Size: aws.Int32(tc.ephemeral)}})
			tc.run(t, fn)
			bystander(t)
			if _, err := c.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String(fn)}); err != nil {
				t.Fatal(err)
			}
			if len(rec.Processes(fn)) == 0 {
				t.Fatal("no environment was recorded")
			}
			sandboxtest.CheckGone(t, rec.Processes(fn), s.DataDir)
		})
	}
}
