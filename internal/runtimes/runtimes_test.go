package runtimes

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// runtimeDir is where TestMain installed the bootstraps.
var runtimeDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kiln-runtimes-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	runtimeDir = filepath.Join(dir, "rt")
	if err := Install(runtimeDir); err != nil {
		fmt.Fprintln(os.Stderr, "Install:", err)
		os.Exit(1)
	}
	code := m.Run()
	makeWritable(dir)
	os.RemoveAll(dir)
	os.Exit(code)
}

func makeWritable(dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
}

// ---------------------------------------------------------------- harness

// invocation is one event the fake Runtime API hands out on /next.
type invocation struct {
	id       string
	event    string
	deadline time.Time         // zero: now + 30 s
	headers  map[string]string // extra Lambda-Runtime-* headers
}

// report is what the runtime posted back.
type report struct {
	kind      string // "response", "error" or "init"
	id        string
	errorType string // Lambda-Runtime-Function-Error-Type header
	body      []byte
}

// errorDoc is the body of an error report.
type errorDoc struct {
	ErrorMessage string   `json:"errorMessage"`
	ErrorType    string   `json:"errorType"`
	RequestID    *string  `json:"requestId"`
	StackTrace   []string `json:"stackTrace"`
}

func (r report) errorDoc(t *testing.T) errorDoc {
	t.Helper()
	var d errorDoc
	if err := json.Unmarshal(r.body, &d); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if d.StackTrace == nil {
		t.Errorf("error body %s has no stackTrace list", r.body)
	}
	return d
}

// fakeAPI is a minimal Lambda Runtime API, standing in for Kiln's agent.
type fakeAPI struct {
	srv     *httptest.Server
	queue   chan invocation
	reports chan report
	stop    chan struct{}
	conns   atomic.Int64 // connections accepted
}

const prefix = "/2018-06-01/runtime"

func newFakeAPI(t testing.TB) *fakeAPI {
	a := &fakeAPI{
		queue:   make(chan invocation, 16),
		reports: make(chan report, 16),
		stop:    make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/invocation/next", func(w http.ResponseWriter, r *http.Request) {
		var inv invocation
		select {
		case inv = <-a.queue:
		case <-a.stop:
			panic(http.ErrAbortHandler) // drop the connection: "Kiln went away"
		case <-r.Context().Done():
			return
		}
		if inv.deadline.IsZero() {
			inv.deadline = time.Now().Add(30 * time.Second)
		}
		h := w.Header()
		h.Set("Lambda-Runtime-Aws-Request-Id", inv.id)
		h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(inv.deadline.UnixMilli(), 10))
		h.Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:kiln-test-fn")
		h.Set("Lambda-Runtime-Trace-Id", "Root=1-65a1b2c3-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0")
		for k, v := range inv.headers {
			h.Set(k, v)
		}
		h.Set("Content-Type", "application/json")
		io.WriteString(w, inv.event)
	})
	post := func(kind string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			a.reports <- report{kind: kind, id: r.PathValue("id"), errorType: r.Header.Get("Lambda-Runtime-Function-Error-Type"), body: body}
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"status":"OK"}`)
		}
	}
	mux.HandleFunc("POST "+prefix+"/invocation/{id}/response", post("response"))
	mux.HandleFunc("POST "+prefix+"/invocation/{id}/error", post("error"))
	mux.HandleFunc("POST "+prefix+"/init/error", post("init"))
	a.srv = httptest.NewUnstartedServer(mux) // listens on 127.0.0.1:0
	a.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			a.conns.Add(1)
		}
	}
	a.srv.Start()
	t.Cleanup(func() {
		a.goAway()
		a.srv.Close()
	})
	return a
}

// goAway stops accepting connections and drops the pending /next.
func (a *fakeAPI) goAway() {
	select {
	case <-a.stop:
	default:
		a.srv.Listener.Close()
		close(a.stop)
	}
}

// proc is one runtime process under test.
type proc struct {
	t        testing.TB
	api      *fakeAPI
	taskRoot string
	cmd      *exec.Cmd
	stdout   string // file that receives the process's stdout
	stderr   string
	exited   chan struct{}
	waitErr  error
}

var requestSeq atomic.Int64

// testTimeout bounds waiting for a runtime: generous, as a Python or Node
// interpreter starting on a loaded host can take seconds.
const testTimeout = time.Minute

// startRuntime writes files into a new task root and starts the runtime for
// rtName with _HANDLER=handler. It skips the test if the interpreter is missing.
func startRuntime(t testing.TB, rtName string, files map[string]string, handler string) *proc {
	t.Helper()
	rt, err := Lookup(rtName)
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("%s: %v", rtName, err)
	} else if err != nil {
		t.Fatal(err)
	}
	taskRoot := t.TempDir()
	for name, content := range files {
		p := filepath.Join(taskRoot, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	api := newFakeAPI(t)
	argv := rt.Command(runtimeDir, taskRoot)
	out := t.TempDir()
	p := &proc{t: t, api: api, taskRoot: taskRoot, stdout: filepath.Join(out, "stdout"), stderr: filepath.Join(out, "stderr"), exited: make(chan struct{})}
	// Files rather than pipes: what the runtime wrote is visible the moment
	// its write returns, so the tests can check it was flushed before a post.
	stdout, err := os.Create(p.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(p.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = "/"
	p.cmd.Stdout = stdout
	p.cmd.Stderr = stderr
	p.cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"TZ=:UTC",
		"AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(api.srv.URL, "http://"),
		"_HANDLER=" + handler,
		"LAMBDA_TASK_ROOT=" + taskRoot,
		"AWS_LAMBDA_FUNCTION_NAME=kiln-test-fn",
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/kiln-test-fn",
		"AWS_LAMBDA_LOG_STREAM_NAME=2024/01/01/[$LATEST]0123456789abcdef",
		"AWS_REGION=us-east-1",
		"AWS_EXECUTION_ENV=" + rt.ExecutionEnv,
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("runtime stdout:\n%s\nruntime stderr:\n%s", p.output(), readFile(p.stderr))
		}
	})
	return p
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// output is everything the runtime has written to stdout so far.
func (p *proc) output() string { return readFile(p.stdout) }

// next waits for the runtime's next report.
func (p *proc) next() report {
	p.t.Helper()
	select {
	case r := <-p.api.reports:
		return r
	case <-p.exited:
		// A report may have raced with the exit.
		select {
		case r := <-p.api.reports:
			return r
		default:
		}
		p.t.Fatalf("runtime exited (%v) without reporting", p.waitErr)
	case <-time.After(testTimeout):
		p.t.Fatal("timed out waiting for the runtime to report")
	}
	return report{}
}

// invoke hands the runtime one event and returns what it reported.
func (p *proc) invoke(inv invocation) report {
	p.t.Helper()
	if inv.id == "" {
		inv.id = fmt.Sprintf("8f1a2b3c-0000-4000-8000-%012d", requestSeq.Add(1))
	}
	if inv.event == "" {
		inv.event = "{}"
	}
	p.api.queue <- inv
	r := p.next()
	if r.kind != "init" && r.id != inv.id {
		p.t.Fatalf("report for %q, want %q", r.id, inv.id)
	}
	return r
}

// waitExit waits for the runtime to exit and returns its exit code.
func (p *proc) waitExit() int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(testTimeout):
		p.t.Fatal("runtime did not exit")
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr != nil {
		p.t.Fatal(p.waitErr)
	}
	return 0
}

func wantResponse(t *testing.T, r report, want string) {
	t.Helper()
	if r.kind != "response" {
		t.Fatalf("got %s report %s (%s), want response %s", r.kind, r.body, r.errorType, want)
	}
	if !jsonEqual(r.body, []byte(want)) {
		t.Fatalf("response %s, want %s", r.body, want)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// wantError checks an invocation or init error report.
func wantError(t *testing.T, r report, kind, errorType, message string) errorDoc {
	t.Helper()
	if r.kind != kind {
		t.Fatalf("got %s report %s, want %s", r.kind, r.body, kind)
	}
	if r.errorType != errorType {
		t.Errorf("Lambda-Runtime-Function-Error-Type %q, want %q", r.errorType, errorType)
	}
	d := r.errorDoc(t)
	if d.ErrorType != errorType {
		t.Errorf("errorType %q, want %q", d.ErrorType, errorType)
	}
	if message != "" && d.ErrorMessage != message {
		t.Errorf("errorMessage %q, want %q", d.ErrorMessage, message)
	}
	if kind == "error" && (d.RequestID == nil || *d.RequestID != r.id) {
		t.Errorf("requestId %v, want %q", d.RequestID, r.id)
	}
	return d
}

// Client context and Cognito identity as the Runtime API passes them.
const (
	clientContextJSON = `{"client":{"installation_id":"inst-1","app_title":"Kiln App","app_version_name":"1.0","app_version_code":"1","app_package_name":"dev.kiln"},"custom":{"tenant":"t-42"},"env":{"platform":"test"}}`
	cognitoJSON       = `{"cognitoIdentityId":"us-east-1:abc","cognitoIdentityPoolId":"us-east-1:pool"}`
)

func contextInvocation() invocation {
	return invocation{
		deadline: time.Now().Add(30 * time.Second),
		headers: map[string]string{
			"Lambda-Runtime-Client-Context":   clientContextJSON,
			"Lambda-Runtime-Cognito-Identity": cognitoJSON,
		},
	}
}

// checkContext checks a context handler's answer; both languages' handlers
// return the same keys.
func checkContext(t *testing.T, p *proc, r report, memory any) {
	t.Helper()
	if r.kind != "response" {
		t.Fatalf("got %s report %s", r.kind, r.body)
	}
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"function_name":    "kiln-test-fn",
		"function_version": "$LATEST",
		"arn":              "arn:aws:lambda:us-east-1:000000000000:function:kiln-test-fn",
		"memory":           memory,
		"request_id":       r.id,
		"log_group":        "/aws/lambda/kiln-test-fn",
		"log_stream":       "2024/01/01/[$LATEST]0123456789abcdef",
		"identity_id":      "us-east-1:abc",
		"identity_pool":    "us-east-1:pool",
		"client_app_title": "Kiln App",
		"client_custom":    map[string]any{"tenant": "t-42"},
		"client_env":       map[string]any{"platform": "test"},
		"trace":            "Root=1-65a1b2c3-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0",
		"cwd":              p.taskRoot,
	}
	for k, w := range want {
		if g := got[k]; fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("%s = %#v, want %#v", k, g, w)
		}
	}
	remaining, ok := got["remaining"].(float64)
	// Set before the interpreter has started: on a loaded host its start
	// takes seconds of the 30, so the bounds only tell milliseconds apart.
	if !ok || remaining <= 1000 || remaining > 30000 {
		t.Errorf("remaining time %v ms, want in (1000, 30000] for a deadline 30 s away", got["remaining"])
	}
}

// ---------------------------------------------------------------- Go API

func TestInstall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "runtimes")
	t.Cleanup(func() { makeWritable(dir) })
	for i := 0; i < 2; i++ { // idempotent
		if err := Install(dir); err != nil {
			t.Fatalf("Install #%d: %v", i+1, err)
		}
	}
	for _, name := range []string{"python/bootstrap.py", "node/bootstrap.js"} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o444 {
			t.Errorf("%s mode %v, want 0444", name, fi.Mode().Perm())
		}
		want, _ := files.ReadFile(name)
		if got := readFile(p); got != string(want) {
			t.Errorf("%s content differs from the embedded file", name)
		}
		di, err := os.Stat(filepath.Dir(p))
		if err != nil {
			t.Fatal(err)
		}
		if di.Mode().Perm() != 0o555 {
			t.Errorf("%s mode %v, want 0555", filepath.Dir(name), di.Mode().Perm())
		}
	}
	// A stale file is replaced.
	stale := filepath.Join(dir, "python", "bootstrap.py")
	os.Chmod(filepath.Dir(stale), 0o755)
	os.Chmod(stale, 0o644)
	os.WriteFile(stale, []byte("old"), 0o644)
	if err := Install(dir); err != nil {
		t.Fatal(err)
	}
	if want, _ := files.ReadFile("python/bootstrap.py"); readFile(stale) != string(want) {
		t.Error("stale bootstrap.py not replaced")
	}
}

func TestLookupAndCommand(t *testing.T) {
	for _, name := range []string{"provided", "provided.al2", "provided.al2023"} {
		rt, err := Lookup(name)
		if err != nil || rt.Name != name || rt.ExecutionEnv != "" {
			t.Errorf("Lookup(%q) = %+v, %v", name, rt, err)
		}
		if got := rt.Command("/rt", "/var/task"); strings.Join(got, " ") != "/var/task/bootstrap" {
			t.Errorf("%s Command = %q", name, got)
		}
	}
	for _, name := range []string{"python3.99", "nodejs99.x", "go1.x", "java21", "bogus", "python3.", "nodejs.x"} {
		if _, err := Lookup(name); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Lookup(%q) error %v, want ErrUnsupported", name, err)
		}
	}
	if _, err := os.Stat("/usr/bin/python3.11"); err == nil {
		rt, err := Lookup("python3.11")
		if err != nil || rt.ExecutionEnv != "AWS_Lambda_python3.11" {
			t.Errorf("Lookup(python3.11) = %+v, %v", rt, err)
		}
		want := "/usr/bin/python3.11 /rt/python/bootstrap.py"
		if got := strings.Join(rt.Command("/rt", "/var/task"), " "); got != want {
			t.Errorf("python Command = %q, want %q", got, want)
		}
	}
	if major := nodeVersion(); major > 0 {
		name := fmt.Sprintf("nodejs%d.x", major)
		rt, err := Lookup(name)
		if err != nil || rt.ExecutionEnv != "AWS_Lambda_"+name {
			t.Errorf("Lookup(%s) = %+v, %v", name, rt, err)
		}
		want := "/usr/bin/node /rt/node/bootstrap.js"
		if got := strings.Join(rt.Command("/rt", "/var/task"), " "); got != want {
			t.Errorf("node Command = %q, want %q", got, want)
		}
		other := fmt.Sprintf("nodejs%d.x", major+2)
		if _, err := Lookup(other); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Lookup(%s) error %v, want ErrUnsupported", other, err)
		}
	}
}

func TestKnown(t *testing.T) {
	for name, want := range map[string]bool{
		"python3.8": true, "python3.11": true, "python3.14": true, "python3.7": false, "python3.15": false, "python3.011": false,
		"nodejs16.x": true, "nodejs20.x": true, "nodejs24.x": true, "nodejs14.x": false, "nodejs21.x": false, "nodejs26.x": false,
		"provided": true, "provided.al2": true, "provided.al2023": true,
		"java21": true, "java8.al2": true, "dotnet8": true, "ruby3.3": true,
		"go1.x": false, "python": false, "": false, "Python3.11": false, "nodejs20": false,
	} {
		if got := Known(name); got != want {
			t.Errorf("Known(%q) = %v, want %v", name, got, want)
		}
	}
}

// ---------------------------------------------------------------- Python

const pyRuntime = "python3.11"

func TestPython(t *testing.T) {
	const app = `import json
import os
import sys

calls = 0

def handler(event, context):
    return {"hello": event.get("name"), "n": len(event)}

def none(event, context):
    return None

def echo(event, context):
    return event

def fail(event, context):
    raise ValueError("bad thing: " + str(event.get("why")))

def unserializable(event, context):
    return {1, 2}

def count(event, context):
    global calls
    calls += 1
    return {"calls": calls, "pid": os.getpid()}

def ctx(event, context):
    cc = context.client_context
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "request_id": context.aws_request_id,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "identity_id": context.identity.cognito_identity_id,
        "identity_pool": context.identity.cognito_identity_pool_id,
        "client_app_title": cc.client.app_title if cc else None,
        "client_custom": cc.custom if cc else None,
        "client_env": cc.env if cc else None,
        "remaining": context.get_remaining_time_in_millis(),
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "cwd": os.getcwd(),
        "path0": sys.path[0],
    }
`
	files := map[string]string{
		"app.py":             app,
		"pkg/__init__.py":    "",
		"pkg/mod.py":         "def fn(event, context):\n    return 'dotted'\n",
		"broken.py":          "def handler(event, context)\n    return 1\n",
		"raises_at_init.py":  "raise RuntimeError('config missing')\n",
		"needs_missing.py":   "import definitely_not_installed_kiln\n",
		"logs.py":            pyLogs,
		"partial.py":         "def handler(event, context):\n    print('partial', end='')\n    return 1\n",
		"late_logging.py":    "def handler(event, context):\n    import logging\n    logging.getLogger().warning('late %d', 7)\n    return 1\n",
		"not_callable.py":    "handler = 42\n",
		"decimal_result.py":  "from decimal import Decimal\ndef handler(event, context):\n    return {'a': Decimal('1.5'), 'b': Decimal('2')}\n",
		"handlers/nested.py": "def go(event, context):\n    return 'nested'\n",
	}

	t.Run("Success", func(t *testing.T) {
		cases := []struct{ handler, event, want string }{
			{"app.handler", `{"name":"kiln"}`, `{"hello":"kiln","n":1}`},
			{"app.none", `{}`, `null`},
			{"app.echo", `[1,"two",{"three":3.5},null,true]`, `[1,"two",{"three":3.5},null,true]`},
			{"app.echo", `"just a string"`, `"just a string"`},
			{"pkg.mod.fn", `{}`, `"dotted"`},
			{"handlers/nested.go", `{}`, `"nested"`},
			{"decimal_result.handler", `{}`, `{"a":1.5,"b":2}`},
		}
		for _, c := range cases {
			t.Run(c.handler, func(t *testing.T) {
				p := startRuntime(t, pyRuntime, files, c.handler)
				wantResponse(t, p.invoke(invocation{event: c.event}), c.want)
			})
		}
	})

	t.Run("Error", func(t *testing.T) {
		p := startRuntime(t, pyRuntime, files, "app.fail")
		r := p.invoke(invocation{event: `{"why":"testing"}`})
		d := wantError(t, r, "error", "ValueError", "bad thing: testing")
		if len(d.StackTrace) == 0 {
			t.Fatal("empty stackTrace")
		}
		frame := fmt.Sprintf("  File %q, line 17, in fail\n    raise ValueError(", filepath.Join(p.taskRoot, "app.py"))
		if !strings.HasPrefix(d.StackTrace[len(d.StackTrace)-1], frame) {
			t.Errorf("last frame %q, want prefix %q", d.StackTrace[len(d.StackTrace)-1], frame)
		}
		for _, f := range d.StackTrace {
			if strings.Contains(f, "bootstrap.py") {
				t.Errorf("runtime frame in stackTrace: %q", f)
			}
		}
		if !strings.Contains(p.output(), "[ERROR] ValueError: bad thing: testing\nTraceback (most recent call last):\n") {
			t.Errorf("error not logged; stdout:\n%s", p.output())
		}
		// The process survives a handler error.
		wantError(t, p.invoke(invocation{event: `{"why":"again"}`}), "error", "ValueError", "bad thing: again")
	})

	t.Run("MarshalError", func(t *testing.T) {
		p := startRuntime(t, pyRuntime, files, "app.unserializable")
		d := wantError(t, p.invoke(invocation{}), "error", "Runtime.MarshalError", "")
		if !strings.HasPrefix(d.ErrorMessage, "Unable to marshal response: ") {
			t.Errorf("errorMessage %q", d.ErrorMessage)
		}
	})

	t.Run("InitErrors", func(t *testing.T) {
		cases := []struct{ handler, errorType, message string }{
			{"nomod.handler", "Runtime.ImportModuleError", "Unable to import module 'nomod': No module named 'nomod'"},
			{"needs_missing.handler", "Runtime.ImportModuleError", "Unable to import module 'needs_missing': No module named 'definitely_not_installed_kiln'"},
			{"app.nope", "Runtime.HandlerNotFound", "Handler 'nope' missing on module 'app'"},
			{"not_callable.handler", "Runtime.HandlerNotFound", "Handler 'handler' on module 'not_callable' is not callable"},
			{"broken.handler", "Runtime.UserCodeSyntaxError", ""},
			{"raises_at_init.handler", "RuntimeError", "config missing"},
			{"nodot", "Runtime.MalformedHandlerName", ""},
		}
		for _, c := range cases {
			t.Run(c.handler, func(t *testing.T) {
				p := startRuntime(t, pyRuntime, files, c.handler)
				wantError(t, p.next(), "init", c.errorType, c.message)
				if code := p.waitExit(); code == 0 {
					t.Error("runtime exited 0 after an init error")
				}
			})
		}
	})

	t.Run("Context", func(t *testing.T) {
		p := startRuntime(t, pyRuntime, files, "app.ctx")
		checkContext(t, p, p.invoke(contextInvocation()), 256)
		// Without client context: None; the identity object is still there.
		r := p.invoke(invocation{})
		var got map[string]any
		json.Unmarshal(r.body, &got)
		if got["client_custom"] != nil || got["client_app_title"] != nil || got["identity_id"] != nil {
			t.Errorf("second invoke without client context: %s", r.body)
		}
		if got["path0"] != p.taskRoot {
			t.Errorf("sys.path[0] = %v, want the task root", got["path0"])
		}
	})

	t.Run("WarmReuse", func(t *testing.T) {
		p := startRuntime(t, pyRuntime, files, "app.count")
		pid := p.cmd.Process.Pid
		for i := 1; i <= 5; i++ {
			wantResponse(t, p.invoke(invocation{}), fmt.Sprintf(`{"calls":%d,"pid":%d}`, i, pid))
		}
		if n := p.api.conns.Load(); n != 1 {
			t.Errorf("runtime opened %d connections to the Runtime API, want 1 kept alive", n)
		}
	})

	t.Run("Logging", func(t *testing.T) {
		p := startRuntime(t, pyRuntime, files, "logs.handler")
		r := p.invoke(invocation{})
		wantResponse(t, r, `"ok"`)
		out := p.output() // read at report time: everything was flushed before the post
		ts := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`
		for _, re := range []string{
			`(?m)^\[INFO\]\t` + ts + `\t\tloaded$`,
			`(?m)^\[INFO\]\t` + ts + `\t` + r.id + `\thello world$`,
			`(?m)^\[WARNING\]\t` + ts + `\t` + r.id + `\tcareful$`,
			`(?m)^printed line$`,
			`(?m)^custom ` + r.id + ` custom format$`,
			`partial without newline$`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("stdout does not match %q:\n%s", re, out)
			}
		}
		if strings.Contains(out, "not shown") {
			t.Errorf("DEBUG record logged at INFO level:\n%s", out)
		}
	})

	t.Run("LoggingImportedLate", func(t *testing.T) {
		p := startRuntime(t, pyRuntime, files, "late_logging.handler")
		r := p.invoke(invocation{})
		wantResponse(t, r, `1`)
		if re := `(?m)^\[WARNING\]\t\S+\t` + r.id + `\tlate 7$`; !regexp.MustCompile(re).MatchString(p.output()) {
			t.Errorf("stdout does not match %q:\n%s", re, p.output())
		}
	})

	t.Run("FlushBeforePost", func(t *testing.T) {
		p := startRuntime(t, pyRuntime, files, "partial.handler")
		for i := 0; i < 3; i++ {
			wantResponse(t, p.invoke(invocation{}), `1`)
			if got, want := p.output(), strings.Repeat("partial", i+1); got != want {
				t.Fatalf("stdout at report time %q, want %q", got, want)
			}
		}
	})

	t.Run("APIGone", func(t *testing.T) {
		p := startRuntime(t, pyRuntime, files, "app.none")
		wantResponse(t, p.invoke(invocation{}), `null`)
		p.api.goAway()
		if code := p.waitExit(); code == 0 {
			t.Error("runtime exited 0 after losing the Runtime API")
		}
	})
}

const pyLogs = `import logging

logger = logging.getLogger()
logger.setLevel(logging.INFO)
logger.info("loaded")

class Custom(logging.Formatter):
    pass

custom = logging.getLogger("custom")
custom.propagate = False
h = logging.StreamHandler(__import__("sys").stdout)
h.setFormatter(Custom("custom %(aws_request_id)s %(message)s"))
h.addFilter(logging.getLogger().handlers[0].filters[0])
custom.addHandler(h)

def handler(event, context):
    logger.info("hello %s", "world")
    logger.debug("not shown")
    logging.getLogger("child").warning("careful")
    custom.warning("custom format")
    print("printed line")
    print("partial without newline", end="")
    return "ok"
`

// ---------------------------------------------------------------- Node

func nodeRuntime(t *testing.T) string {
	major := nodeVersion()
	if major == 0 {
		t.Skip("no usable /usr/bin/node")
	}
	return fmt.Sprintf("nodejs%d.x", major)
}

func TestNode(t *testing.T) {
	rt := nodeRuntime(t)
	const app = `'use strict';
let calls = 0;
exports.handler = async (event, context) => ({ hello: event.name, n: Object.keys(event).length });
exports.none = async () => undefined;
exports.echo = async (event) => event;
exports.fail = async (event) => { throw new Error('bad thing: ' + event.why); };
exports.typeError = async () => { null.x; };
exports.throwString = async () => { throw 'just a string'; };
exports.syncThrow = (event) => { throw new RangeError('sync'); };
exports.callback = (event, context, callback) => { setTimeout(() => callback(null, { via: 'callback', got: event.v }), 5); };
exports.callbackError = (event, context, callback) => { callback(new TypeError('callback failed')); };
exports.callbackStringError = (event, context, callback) => { callback('plain'); };
exports.succeed = (event, context) => { context.succeed({ via: 'succeed' }); };
exports.syncReturn = (event) => ({ ignored: true });
exports.circular = async () => { const o = {}; o.self = o; return o; };
exports.nested = { deeper: { fn: async () => 'nested' } };
exports.count = async () => ({ calls: ++calls, pid: process.pid });
exports.ctx = async (event, context) => ({
  function_name: context.functionName,
  function_version: context.functionVersion,
  arn: context.invokedFunctionArn,
  memory: context.memoryLimitInMB,
  request_id: context.awsRequestId,
  log_group: context.logGroupName,
  log_stream: context.logStreamName,
  identity_id: context.identity && context.identity.cognitoIdentityId,
  identity_pool: context.identity && context.identity.cognitoIdentityPoolId,
  client_app_title: context.clientContext ? context.clientContext.client.app_title : null,
  client_custom: context.clientContext ? context.clientContext.custom : null,
  client_env: context.clientContext ? context.clientContext.env : null,
  remaining: context.getRemainingTimeInMillis(),
  trace: process.env._X_AMZN_TRACE_ID,
  cwd: process.cwd(),
  waits: context.callbackWaitsForEmptyEventLoop,
});
exports.waits = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = event.waits;
  setTimeout(() => console.log('timer fired'), event.timer);
  callback(null, 'done');
};
exports.unhandled = async () => { Promise.reject(new Error('floating')); await new Promise((r) => setTimeout(r, 50)); return 'late'; };
exports.uncaught = async () => { setTimeout(() => { throw new Error('escaped'); }, 1); return new Promise(() => {}); };
`
	files := map[string]string{
		"app.js":                        app,
		"esm.mjs":                       "export const handler = async (event) => ({ esm: true, v: event.v });\nexport default { other: async () => 'default export' };\n",
		"cjs.cjs":                       "module.exports = { handler: async () => 'cjs' };\n",
		"plain.js":                      "module.exports.handler = function (event, context, callback) { callback(null, 'plain'); };\n",
		"esmpkg/package.json":           `{"type": "module"}`,
		"esmpkg/index.js":               "import { helper } from './helper.js';\nexport async function handler() { return helper(); }\n",
		"esmpkg/helper.js":              "export const helper = () => 'esm via package.json';\n",
		"tla.mjs":                       "const value = await new Promise((r) => setTimeout(() => r('top-level await'), 5));\nexport const handler = async () => value;\n",
		"broken.js":                     "exports.handler = async () => { return 1 +; };\n",
		"broken.mjs":                    "export const handler = async () => { ) };\n",
		"throwsAtInit.js":               "throw new Error('config missing');\n",
		"needsMissing.js":               "require('definitely-not-installed-kiln');\nexports.handler = async () => 1;\n",
		"notFunction.js":                "exports.handler = 42;\n",
		"logs.js":                       nodeLogs,
		"src/handlers/deep.js":          "exports.run = async () => require('lib/shared').value;\n",
		"lib/shared.js":                 "exports.value = 'resolved via task root';\n",
		"node_modules/dep/index.js":     "module.exports = () => 'from node_modules';\n",
		"node_modules/dep/package.json": `{"name":"dep","main":"index.js"}`,
		"usesDep.js":                    "const dep = require('dep');\nexports.handler = async () => dep();\n",
	}

	t.Run("Success", func(t *testing.T) {
		cases := []struct{ handler, event, want string }{
			{"app.handler", `{"name":"kiln"}`, `{"hello":"kiln","n":1}`},
			{"app.none", `{}`, `null`},
			{"app.echo", `[1,"two",{"three":3.5},null,true]`, `[1,"two",{"three":3.5},null,true]`},
			{"app.callback", `{"v":7}`, `{"via":"callback","got":7}`},
			{"app.succeed", `{}`, `{"via":"succeed"}`},
			{"app.syncReturn", `{}`, `null`},
			{"app.nested.deeper.fn", `{}`, `"nested"`},
			{"esm.handler", `{"v":1}`, `{"esm":true,"v":1}`},
			{"esm.default.other", `{}`, `"default export"`},
			{"cjs.handler", `{}`, `"cjs"`},
			{"plain.handler", `{}`, `"plain"`},
			{"esmpkg/index.handler", `{}`, `"esm via package.json"`},
			{"tla.handler", `{}`, `"top-level await"`},
			{"src/handlers/deep.run", `{}`, `"resolved via task root"`},
			{"usesDep.handler", `{}`, `"from node_modules"`},
		}
		for _, c := range cases {
			t.Run(c.handler, func(t *testing.T) {
				p := startRuntime(t, rt, files, c.handler)
				wantResponse(t, p.invoke(invocation{event: c.event}), c.want)
			})
		}
	})

	t.Run("Errors", func(t *testing.T) {
		cases := []struct {
			handler, errorType, message string
			wantStack                   bool
		}{
			{"app.fail", "Error", "bad thing: undefined", true},
			{"app.typeError", "TypeError", "Cannot read properties of null (reading 'x')", true},
			{"app.syncThrow", "RangeError", "sync", true},
			{"app.callbackError", "TypeError", "callback failed", true},
			{"app.callbackStringError", "string", "plain", false},
			{"app.throwString", "string", "just a string", false},
			{"app.circular", "Runtime.MarshalError", "", false},
		}
		for _, c := range cases {
			t.Run(c.handler, func(t *testing.T) {
				p := startRuntime(t, rt, files, c.handler)
				d := wantError(t, p.invoke(invocation{}), "error", c.errorType, c.message)
				if c.wantStack {
					if len(d.StackTrace) == 0 {
						t.Fatal("empty stackTrace")
					}
					if !strings.HasPrefix(strings.TrimSpace(d.StackTrace[0]), "at ") {
						t.Errorf("stackTrace[0] = %q, want a frame line", d.StackTrace[0])
					}
					if !strings.Contains(strings.Join(d.StackTrace, "\n"), filepath.Join(p.taskRoot, "app.js")) {
						t.Errorf("stackTrace does not mention app.js: %q", d.StackTrace)
					}
				}
				// The process survives a handler error.
				wantError(t, p.invoke(invocation{}), "error", c.errorType, c.message)
			})
		}
	})

	t.Run("InitErrors", func(t *testing.T) {
		cases := []struct{ handler, errorType, message string }{
			{"nomod.handler", "Runtime.ImportModuleError", "Error: Cannot find module 'nomod'"},
			{"needsMissing.handler", "Runtime.ImportModuleError", ""},
			{"app.nope", "Runtime.HandlerNotFound", "app.nope is undefined or not exported"},
			{"notFunction.handler", "Runtime.HandlerNotFound", "notFunction.handler is not a function"},
			{"broken.handler", "Runtime.UserCodeSyntaxError", ""},
			{"throwsAtInit.handler", "Error", "config missing"},
			{"nodot", "Runtime.MalformedHandlerName", ""},
		}
		for _, c := range cases {
			t.Run(c.handler, func(t *testing.T) {
				p := startRuntime(t, rt, files, c.handler)
				d := wantError(t, p.next(), "init", c.errorType, c.message)
				if c.errorType == "Runtime.UserCodeSyntaxError" && !strings.HasPrefix(d.ErrorMessage, "SyntaxError: ") {
					t.Errorf("errorMessage %q", d.ErrorMessage)
				}
				if code := p.waitExit(); code == 0 {
					t.Error("runtime exited 0 after an init error")
				}
			})
		}
	})

	t.Run("ESMSyntaxError", func(t *testing.T) {
		p := startRuntime(t, rt, map[string]string{"broken.mjs": files["broken.mjs"]}, "broken.handler")
		wantError(t, p.next(), "init", "Runtime.UserCodeSyntaxError", "")
	})

	t.Run("Context", func(t *testing.T) {
		p := startRuntime(t, rt, files, "app.ctx")
		r := p.invoke(contextInvocation())
		checkContext(t, p, r, "256")
		if !strings.Contains(string(r.body), `"waits":true`) {
			t.Errorf("callbackWaitsForEmptyEventLoop not true by default: %s", r.body)
		}
		r = p.invoke(invocation{})
		var got map[string]any
		json.Unmarshal(r.body, &got)
		if got["client_custom"] != nil || got["identity_id"] != nil {
			t.Errorf("second invoke without client context: %s", r.body)
		}
	})

	t.Run("WarmReuse", func(t *testing.T) {
		p := startRuntime(t, rt, files, "app.count")
		pid := p.cmd.Process.Pid
		for i := 1; i <= 5; i++ {
			wantResponse(t, p.invoke(invocation{}), fmt.Sprintf(`{"calls":%d,"pid":%d}`, i, pid))
		}
		if n := p.api.conns.Load(); n != 1 {
			t.Errorf("runtime opened %d connections to the Runtime API, want 1 kept alive", n)
		}
	})

	t.Run("CallbackWaitsForEmptyEventLoop", func(t *testing.T) {
		p := startRuntime(t, rt, files, "app.waits")
		// Waiting (the default): the timer has fired before the result is posted.
		wantResponse(t, p.invoke(invocation{event: `{"waits":true,"timer":50}`}), `"done"`)
		if !strings.Contains(p.output(), "timer fired") {
			t.Errorf("result posted before the event loop drained:\n%s", p.output())
		}
		// Not waiting: posted at once, the timer is still pending.
		wantResponse(t, p.invoke(invocation{event: `{"waits":false,"timer":5000}`}), `"done"`)
		if n := strings.Count(p.output(), "timer fired"); n != 1 {
			t.Errorf("%d timer lines, want 1:\n%s", n, p.output())
		}
	})

	t.Run("UncaughtException", func(t *testing.T) {
		p := startRuntime(t, rt, files, "app.uncaught")
		wantError(t, p.invoke(invocation{}), "error", "Error", "escaped")
		if code := p.waitExit(); code != 129 {
			t.Errorf("exit code %d, want 129", code)
		}
	})

	t.Run("UnhandledRejection", func(t *testing.T) {
		p := startRuntime(t, rt, files, "app.unhandled")
		wantError(t, p.invoke(invocation{}), "error", "Runtime.UnhandledPromiseRejection", "Error: floating")
		if code := p.waitExit(); code != 128 {
			t.Errorf("exit code %d, want 128", code)
		}
	})

	t.Run("Logging", func(t *testing.T) {
		p := startRuntime(t, rt, files, "logs.handler")
		r := p.invoke(invocation{})
		wantResponse(t, r, `"ok"`)
		out := p.output()
		ts := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`
		for _, re := range []string{
			`(?m)^` + ts + `\tundefined\tINFO\tloaded$`,
			`(?m)^` + ts + `\t` + r.id + `\tINFO\thello { a: 1 }$`,
			`(?m)^` + ts + `\t` + r.id + `\tINFO\tinfo 2$`,
			`(?m)^` + ts + `\t` + r.id + `\tWARN\twarned$`,
			`(?m)^` + ts + `\t` + r.id + `\tERROR\terrored$`,
			`(?m)^` + ts + `\t` + r.id + `\tDEBUG\tdebugged$`,
			`(?m)^` + ts + `\t` + r.id + `\tINFO\tmulti\rline$`,
			`(?m)^raw stdout$`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("stdout does not match %q:\n%q", re, out)
			}
		}
	})

	t.Run("APIGone", func(t *testing.T) {
		p := startRuntime(t, rt, files, "app.none")
		wantResponse(t, p.invoke(invocation{}), `null`)
		p.api.goAway()
		if code := p.waitExit(); code == 0 {
			t.Error("runtime exited 0 after losing the Runtime API")
		}
	})
}

const nodeLogs = `console.log('loaded');
exports.handler = async () => {
  console.log('hello', { a: 1 });
  console.info('info %d', 2);
  console.warn('warned');
  console.error('errored');
  console.debug('debugged');
  console.log('multi\nline');
  process.stdout.write('raw stdout\n');
  return 'ok';
};
`

// ---------------------------------------------------------------- benchmarks

var benchHandlers = map[string]map[string]string{
	"python": {"app.py": "def handler(event, context):\n    return {'ok': True}\n"},
	"node":   {"app.mjs": "export const handler = async () => ({ ok: true });\n"},
}

func benchRuntime(b *testing.B, lang string) string {
	if lang == "python" {
		return pyRuntime
	}
	major := nodeVersion()
	if major == 0 {
		b.Skip("no usable /usr/bin/node")
	}
	return fmt.Sprintf("nodejs%d.x", major)
}

// BenchmarkWarmInvoke measures one invocation round trip through a warm
// runtime: /next answered, handler called, response posted.
func BenchmarkWarmInvoke(b *testing.B) {
	for _, lang := range []string{"python", "node"} {
		b.Run(lang, func(b *testing.B) {
			p := startRuntime(b, benchRuntime(b, lang), benchHandlers[lang], "app.handler")
			p.invoke(invocation{})
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.invoke(invocation{id: strconv.Itoa(i)})
			}
		})
	}
}

// BenchmarkColdStart measures process start to the first response.
func BenchmarkColdStart(b *testing.B) {
	for _, lang := range []string{"python", "node"} {
		b.Run(lang, func(b *testing.B) {
			rt := benchRuntime(b, lang)
			for i := 0; i < b.N; i++ {
				p := startRuntime(b, rt, benchHandlers[lang], "app.handler")
				p.invoke(invocation{})
				b.StopTimer()
				p.cmd.Process.Kill()
				<-p.exited
				b.StartTimer()
			}
		})
	}
}
