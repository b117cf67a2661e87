// Package sandboxtest is the conformance suite of Kiln's isolation backends
// (worker.Sandbox): the same execution-environment lifecycle through a real
// worker.Worker and real aws-lambda-go functions for every backend, and for
// the backends that claim isolation, the checks that a function cannot see
// the host or other functions, reach the network, write outside /tmp,
// exceed its limits or make forbidden system calls. After every case it
// checks that nothing of the environment is left on the host.
//
//	func TestConformance(t *testing.T) {
//		sandboxtest.Run(t, func(t *testing.T) worker.Sandbox { return mybackend{} }, sandboxtest.Isolated())
//	}
package sandboxtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/kiln-dev/kiln/internal/runtimes"
	"github.com/kiln-dev/kiln/internal/worker"
)

// Option configures Run.
type Option func(*options)

type options struct {
	isolated bool
	skip     map[string]bool
}

// Isolated says the backend claims isolation: Run adds the isolation checks.
func Isolated() Option { return func(o *options) { o.isolated = true } }

// Skip leaves cases out by name, e.g. "Isolation/Memory" where the host
// gives the backend no memory controller.
func Skip(names ...string) Option {
	return func(o *options) {
		for _, n := range names {
			o.skip[n] = true
		}
	}
}

// Run runs the suite; newSandbox gives the backend for each case.
func Run(t *testing.T, newSandbox func(t *testing.T) worker.Sandbox, opts ...Option) {
	o := options{skip: map[string]bool{}}
	for _, opt := range opts {
		opt(&o)
	}
	for _, c := range lifecycleCases {
		if o.skip[c.name] {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			h := NewHarness(t, newSandbox(t))
			c.run(t, h)
			h.CheckNothingLeft(t)
		})
	}
	if !o.isolated {
		return
	}
	for _, c := range isolationCases {
		if o.skip["Isolation/"+c.name] {
			continue
		}
		t.Run("Isolation/"+c.name, func(t *testing.T) {
			h := NewHarness(t, newSandbox(t))
			c.run(t, h)
			h.CheckNothingLeft(t)
		})
	}
}

type testCase struct {
	name string
	run  func(t *testing.T, h *Harness)
}

// Harness is a worker on a backend with the suite's functions, recording
// every environment the backend starts.
type Harness struct {
	W    *worker.Worker
	Logs *LogSink
	rec  *Recorder
	code map[string]string // sha → code directory
	dir  string
}

// NewHarness makes a worker on sb; it is closed when the test ends.
func NewHarness(t testing.TB, sb worker.Sandbox) *Harness {
	t.Helper()
	h := &Harness{Logs: &LogSink{}, code: map[string]string{}, dir: t.TempDir()}
	h.rec = NewRecorder(sb)
	rt := filepath.Join(h.dir, "runtimes")
	if err := runtimes.Install(rt); err != nil {
		t.Fatal(err)
	}
	h.W = worker.New(worker.Config{Region: "us-east-1", RuntimeDir: rt, Code: h, Sandbox: h.rec, Logs: h.Logs,
		API: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "Kiln API: %s %s", r.Method, r.URL.Path)
		}),
		Credentials: func(account, function string) []string {
			return []string{"AWS_ACCESS_KEY_ID=ASIA" + account, "AWS_SESSION_TOKEN=session of " + function}
		}})
	t.Cleanup(h.W.Close)
	return h
}

// Dir gives the code directory of a function (worker.CodeSource).
func (h *Harness) Dir(_ context.Context, sha string) (string, error) {
	if d, ok := h.code[sha]; ok {
		return d, nil
	}
	return "", os.ErrNotExist
}

// AddGo builds an aws-lambda-go function and returns its configuration:
// provided.al2023, 128 MB, 3 s, /tmp 512 MB.
func (h *Harness) AddGo(t testing.TB, name, source string) api.FunctionConfiguration {
	t.Helper()
	return h.AddFiles(t, name, map[string][]byte{"bootstrap": fntest.GoBootstrap(t, source)})
}

// AddFiles adds a function whose code is files (bootstrap is made executable).
func (h *Harness) AddFiles(t testing.TB, name string, files map[string][]byte) api.FunctionConfiguration {
	t.Helper()
	dir := filepath.Join(h.dir, "code", name)
	for n, b := range files {
		mode := os.FileMode(0o444)
		if filepath.Base(n) == "bootstrap" {
			mode = 0o555
		}
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	h.code[name] = dir
	return api.FunctionConfiguration{FunctionName: name, Runtime: "provided.al2023", Handler: "bootstrap",
		MemorySize: 128, Timeout: 3, Version: "$LATEST", CodeSha256: name,
		EphemeralStorage: &api.EphemeralStorage{Size: 512}}
}

// CodeDir is the host directory of a function's code.
func (h *Harness) CodeDir(name string) string { return h.code[name] }

// SetExtensions gives a function /opt/extensions with the given executables.
func (h *Harness) SetExtensions(t testing.TB, function string, exts map[string][]byte) {
	t.Helper()
	opt := filepath.Join(h.dir, "opt", function)
	if err := os.MkdirAll(filepath.Join(opt, "extensions"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range exts {
		if err := os.WriteFile(filepath.Join(opt, "extensions", name), b, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	h.rec.mu.Lock()
	h.rec.opt[h.code[function]] = opt
	h.rec.mu.Unlock()
}

// Create makes an environment or fails the test.
func (h *Harness) Create(t testing.TB, fn api.FunctionConfiguration) string {
	t.Helper()
	info, err := h.W.Create(context.Background(), invoke.EnvSpec{Account: "123456789012", Function: fn})
	if err != nil {
		var ie *invoke.InitError
		if errors.As(err, &ie) {
			t.Fatalf("create %s: %v: %s\n%s", fn.FunctionName, err, ie.Document, ie.LogTail)
		}
		t.Fatalf("create %s: %v", fn.FunctionName, err)
	}
	return info.ID
}

var reqSeq struct {
	sync.Mutex
	n int
}

// Invoke runs one invocation with a fresh request id.
func (h *Harness) Invoke(t testing.TB, envID string, payload any) *invoke.Result {
	t.Helper()
	return h.invoke(t, envID, payload, false)
}

// InvokeBackground is Invoke of a queued (asynchronous) event.
func (h *Harness) InvokeBackground(t testing.TB, envID string, payload any) *invoke.Result {
	t.Helper()
	return h.invoke(t, envID, payload, true)
}

func (h *Harness) invoke(t testing.TB, envID string, payload any, background bool) *invoke.Result {
	t.Helper()
	b, ok := payload.([]byte)
	if !ok {
		b, _ = json.Marshal(payload)
	}
	reqSeq.Lock()
	reqSeq.n++
	id := fmt.Sprintf("req-%d-%d", os.Getpid(), reqSeq.n)
	reqSeq.Unlock()
	res, err := h.W.Invoke(context.Background(), envID, &invoke.Invocation{RequestID: id,
		FunctionArn: "arn:aws:lambda:us-east-1:123456789012:function:f", Payload: b, Background: background})
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	return res
}

// Probe runs one probe action in a fresh environment of fn and returns its
// answer (JSON-decoded into out when out is not nil, else as a string).
func (h *Harness) Probe(t testing.TB, envID string, ev map[string]any) string {
	t.Helper()
	res := h.Invoke(t, envID, ev)
	if res.ErrorType != "" {
		t.Fatalf("probe %v: %s %s\n%s", ev, res.ErrorType, res.Payload, res.LogTail)
	}
	var s string
	if json.Unmarshal(res.Payload, &s) == nil {
		return s
	}
	return string(res.Payload)
}

// Processes are the environments the backend started so far.
func (h *Harness) Processes() []worker.Process { return h.rec.Processes("") }

// Footprinter is implemented by Processes that can tell what they hold on
// the host: pids, paths (cgroup directories, ...) and namespaces
// ("net:[4026532...]").
type Footprinter interface {
	HostFootprint() (pids []int, paths []string, namespaces []string)
}

// CheckNothingLeft closes the worker and checks that no process, path,
// namespace or mount of any environment the backend started remains.
func (h *Harness) CheckNothingLeft(t testing.TB) {
	t.Helper()
	h.W.Close()
	CheckGone(t, h.Processes(), h.dir)
}

// CheckGone waits until nothing of the environments procs is left on the
// host: no process, path (cgroup directories, ...) or namespace they
// reported (see Footprinter), and no mount whose line in the host's
// mountinfo contains one of mountMarkers. It fails the test if something
// stays for 20 s.
func CheckGone(t testing.TB, procs []worker.Process, mountMarkers ...string) {
	t.Helper()
	var pids []int
	var paths []string
	var envNS [][]string // each environment's namespaces
	for _, p := range procs {
		if f, ok := p.(Footprinter); ok {
			a, b, c := f.HostFootprint()
			pids, paths = append(pids, a...), append(paths, b...)
			if len(c) > 0 {
				envNS = append(envNS, c)
			}
		}
	}
	left := func() []string {
		var out []string
		for _, pid := range pids {
			if alive(pid) {
				out = append(out, "process "+strconv.Itoa(pid))
			}
		}
		for _, p := range paths {
			if _, err := os.Lstat(p); err == nil {
				out = append(out, "path "+p)
			}
		}
		// A namespace lives while a process is in it (or a descriptor or
		// bind mount holds it; the backend keeps none). A process of the
		// environment is in every one of its namespaces: one that shares
		// only some has namespaces created since, which the kernel numbered
		// like the freed ones (it reuses the lowest free numbers).
		if len(envNS) > 0 {
			for _, held := range processNamespaces() {
				for _, nss := range envNS {
					if containsAll(held, nss) {
						out = append(out, "namespaces "+strings.Join(nss, " "))
					}
				}
			}
		}
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mi), "\n") {
			for _, m := range mountMarkers {
				if m != "" && strings.Contains(line, m) {
					out = append(out, "mount "+line)
				}
			}
		}
		return out
	}
	// Not a timing condition: environments end asynchronously (a graceful
	// shutdown has up to 2 s); this waits until they did or clearly won't.
	deadline := time.Now().Add(20 * time.Second)
	for {
		l := left()
		if len(l) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind on the host: %v", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive: the pid exists (a zombie not yet reaped counts as left behind).
func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// processNamespaces lists, for every process, the namespaces it is in.
func processNamespaces() []map[string]bool {
	var out []map[string]bool
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		held := map[string]bool{}
		for _, ns := range []string{"user", "pid", "mnt", "net", "ipc", "uts"} {
			if l, err := os.Readlink("/proc/" + e.Name() + "/ns/" + ns); err == nil {
				held[l] = true
			}
		}
		out = append(out, held)
	}
	return out
}

func containsAll(set map[string]bool, items []string) bool {
	for _, it := range items {
		if !set[it] {
			return false
		}
	}
	return true
}

// Recorder wraps a backend: it records the environments it starts, with
// the function each runs, and can give functions an /opt directory.
type Recorder struct {
	worker.Sandbox
	mu    sync.Mutex
	procs []recorded
	opt   map[string]string // code directory → /opt directory
}

type recorded struct {
	function string
	p        worker.Process
}

// NewRecorder wraps sb.
func NewRecorder(sb worker.Sandbox) *Recorder {
	return &Recorder{Sandbox: sb, opt: map[string]string{}}
}

func (r *Recorder) Start(ctx context.Context, spec worker.SandboxSpec) (worker.Process, error) {
	r.mu.Lock()
	if d := r.opt[spec.CodeDir]; d != "" {
		spec.OptDir = d
	}
	r.mu.Unlock()
	p, err := r.Sandbox.Start(ctx, spec)
	if err == nil {
		var fn string
		for _, kv := range spec.Env {
			if v, ok := strings.CutPrefix(kv, "AWS_LAMBDA_FUNCTION_NAME="); ok {
				fn = v
			}
		}
		r.mu.Lock()
		r.procs = append(r.procs, recorded{fn, p})
		r.mu.Unlock()
	}
	return p, err
}

// Close passes the worker's Close on to the backend.
func (r *Recorder) Close() error {
	if c, ok := r.Sandbox.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Processes are the environments started for function ("" for all).
func (r *Recorder) Processes(function string) []worker.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []worker.Process
	for _, p := range r.procs {
		if function == "" || p.function == function {
			out = append(out, p.p)
		}
	}
	return out
}

// LogSink keeps every log line of every environment.
type LogSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *LogSink) Append(account, group, stream string, lines []logline.Line) {
	s.mu.Lock()
	for _, l := range lines {
		s.lines = append(s.lines, l.Message)
	}
	s.mu.Unlock()
}

// WaitFor waits until a line containing want was logged (the environment
// writes it asynchronously) and fails the test if none comes in 10 s.
func (s *LogSink) WaitFor(t testing.TB, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		for _, l := range s.lines {
			if strings.Contains(l, want) {
				s.mu.Unlock()
				return
			}
		}
		n := len(s.lines)
		s.mu.Unlock()
		if time.Now().After(deadline) {
			s.mu.Lock()
			tail := s.lines[max(0, n-20):]
			s.mu.Unlock()
			t.Fatalf("no log line with %q; last lines:\n%s", want, strings.Join(tail, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// HostListener is a TCP listener on the host's loopback, to try to reach.
func HostListener(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}
