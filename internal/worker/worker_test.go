package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/kiln-dev/kiln/internal/runtimes"
	"github.com/kiln-dev/kiln/internal/worker"
)

// TestMain lets this test binary be the agent of the environments its
// tests start (the worker re-executes its own binary as the agent).
func TestMain(m *testing.M) {
	agent.Reexec()
	os.Exit(m.Run())
}

// dirCode serves code from directories prepared by the test.
type dirCode map[string]string

func (d dirCode) Dir(_ context.Context, sha string) (string, error) {
	if p, ok := d[sha]; ok {
		return p, nil
	}
	return "", os.ErrNotExist
}

func newWorker(t testing.TB, opts ...func(*worker.Config)) (*worker.Worker, api.FunctionConfiguration) {
	t.Helper()
	dir := t.TempDir()
	code := filepath.Join(dir, "code")
	os.MkdirAll(code, 0o755)
	if err := os.WriteFile(filepath.Join(code, "bootstrap"), fntest.GoBootstrap(t, fntest.ToolkitGo), 0o755); err != nil {
		t.Fatal(err)
	}
	rt := filepath.Join(dir, "runtimes")
	if err := runtimes.Install(rt); err != nil {
		t.Fatal(err)
	}
	cfg := worker.Config{Region: "us-east-1", RuntimeDir: rt, Code: dirCode{"toolkit": code}}
	for _, o := range opts {
		o(&cfg)
	}
	w := worker.New(cfg)
	t.Cleanup(w.Close)
	fn := api.FunctionConfiguration{FunctionName: "toolkit", Runtime: "provided.al2023", Handler: "bootstrap",
		MemorySize: 128, Timeout: 2, Version: "$LATEST", CodeSha256: "toolkit"}
	return w, fn
}

func run(t *testing.T, w *worker.Worker, envID, payload string) *invoke.Result {
	t.Helper()
	res, err := w.Invoke(context.Background(), envID, &invoke.Invocation{RequestID: "req-" + payload[:min(8, len(payload))],
		FunctionArn: "arn:aws:lambda:us-east-1:123456789012:function:toolkit", Payload: []byte(payload)})
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	return res
}

func TestLifecycle(t *testing.T) {
	w, fn := newWorker(t)
	ctx := context.Background()
	info, err := w.Create(ctx, invoke.EnvSpec{Account: "123456789012", Function: fn})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if info.InitDuration <= 0 {
		t.Errorf("init duration %v", info.InitDuration)
	}
	// The agent's word splits the runtime's start (its exec) from its init.
	if ph := info.Phases; ph.Sandbox <= 0 || ph.Runtime <= 0 || ph.Init <= 0 {
		t.Errorf("cold start phases %+v: want sandbox, runtime and init above 0", ph)
	}

	res := run(t, w, info.ID, `{"hello":"world"}`)
	if string(res.Payload) != `{"hello":"world"}` || res.ErrorType != "" || !res.Reusable {
		t.Fatalf("echo: %+v", res)
	}
	log := string(res.LogTail)
	for _, want := range []string{"START RequestId: req-{\"hello\" Version: $LATEST", "END RequestId:", "REPORT RequestId:", "Init Duration:", "Max Memory Used:"} {
		if !strings.Contains(log, want) {
			t.Errorf("log tail lacks %q:\n%s", want, log)
		}
	}
	if res := run(t, w, info.ID, `{"action":"print","lines":3,"text":"hello log"}`); strings.Count(string(res.LogTail), "hello log\n") != 3 || strings.Contains(string(res.LogTail), "Init Duration") {
		t.Errorf("second invoke log:\n%s", res.LogTail)
	}

	res = run(t, w, info.ID, `{"action":"error","msg":"boom"}`)
	var doc struct{ ErrorMessage, ErrorType string }
	json.Unmarshal(res.Payload, &doc)
	if res.ErrorType == "" || doc.ErrorMessage != "boom" || !res.Reusable {
		t.Errorf("function error: %+v %s", res, res.Payload)
	}

	res = run(t, w, info.ID, `{"action":"sleep","ms":5000}`)
	if res.ErrorType != "Sandbox.Timedout" || res.Reusable || !strings.Contains(string(res.Payload), "Task timed out after 2.00 seconds") {
		t.Errorf("timeout: %+v %s", res, res.Payload)
	}
	if _, err := w.Invoke(ctx, info.ID, &invoke.Invocation{RequestID: "x", Payload: []byte("{}")}); !errors.Is(err, invoke.ErrNoEnv) {
		t.Errorf("invoke after timeout: %v, want ErrNoEnv", err)
	}
	if w.Count() != 0 {
		t.Errorf("environments left: %d", w.Count())
	}
}

func TestCrashAndBigResponse(t *testing.T) {
	w, fn := newWorker(t)
	ctx := context.Background()
	info, err := w.Create(ctx, invoke.EnvSpec{Function: fn})
	if err != nil {
		t.Fatal(err)
	}
	res := run(t, w, info.ID, `{"action":"big","bytes":7000000}`)
	if res.ErrorType != "Function.ResponseSizeTooLarge" || res.Reusable {
		t.Errorf("big response: %+v %.200s", res, res.Payload)
	}
	if info, err = w.Create(ctx, invoke.EnvSpec{Function: fn}); err != nil {
		t.Fatal(err)
	}
	res = run(t, w, info.ID, `{"action":"exit","code":3}`)
	if res.ErrorType != "Runtime.ExitError" || res.Reusable || !strings.Contains(string(res.Payload), "exit status 3") {
		t.Errorf("exit: %s %s", res.ErrorType, res.Payload)
	}
}

func BenchmarkInvokeWarm(b *testing.B) {
	w, fn := newWorker(b)
	info, err := w.Create(context.Background(), invoke.EnvSpec{Function: fn})
	if err != nil {
		b.Fatal(err)
	}
	inv := &invoke.Invocation{RequestID: "bench", Payload: []byte(`{"a":1}`)}
	for b.Loop() {
		if _, err := w.Invoke(context.Background(), info.ID, inv); err != nil {
			b.Fatal(err)
		}
	}
}

// recordSink keeps every log line it is given.
type recordSink struct {
	mu    sync.Mutex
	lines []string
}

func (r *recordSink) Append(account, group, stream string, lines []logline.Line) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range lines {
		r.lines = append(r.lines, l.Message)
	}
}

// TestLogRateLimit: a function that prints more than its log rate limit
// lets through keeps its invoke, but the lines over the limit are dropped
// and counted, in its REPORT and in LogDropped; the platform lines pass.
func TestLogRateLimit(t *testing.T) {
	const rate, burst, lines = 16 << 10, 64 << 10, 20000
	text := strings.Repeat("x", 99) // 100 bytes a line with its newline
	sink := &recordSink{}
	start := time.Now()
	w, fn := newWorker(t, func(c *worker.Config) { c.Logs, c.LogRate, c.LogBurst = sink, rate, burst })
	info, err := w.Create(context.Background(), invoke.EnvSpec{Account: "123456789012", Function: fn})
	if err != nil {
		t.Fatal(err)
	}
	res := run(t, w, info.ID, fmt.Sprintf(`{"action":"print","lines":%d,"text":%q}`, lines, text))
	elapsed := time.Since(start)
	if string(res.Payload) != `"done"` {
		t.Fatalf("invoke: %+v", res)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	var printed int
	var report string
	for _, l := range sink.lines {
		switch {
		case l == text+"\n":
			printed++
		case strings.HasPrefix(l, "REPORT "):
			report = l
		}
	}
	var dropped int
	if _, after, ok := strings.Cut(report, "Log Lines Dropped: "); ok {
		fmt.Sscanf(after, "%d", &dropped)
	}
	if report == "" || printed+dropped != lines || uint64(dropped) != w.LogDropped() {
		t.Fatalf("%d lines stored, %d dropped (LogDropped %d), of %d printed; REPORT %q", printed, dropped, w.LogDropped(), lines, report)
	}
	// However fast the host, no more than the burst and the rate over the
	// whole run reached the sink.
	if max := burst + rate*elapsed.Seconds(); float64(printed*100) > max {
		t.Fatalf("%d bytes stored in %v, over the limit's %.0f", printed*100, elapsed, max)
	}
	if !strings.Contains(string(res.LogTail), "Log Lines Dropped: ") {
		t.Errorf("the caller's log tail does not say lines were dropped:\n%s", res.LogTail)
	}
}
