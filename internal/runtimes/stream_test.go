package runtimes

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/runtimeapi"
)

// chunks is a runtimeapi.Stream that keeps what it got.
type chunks struct {
	mu          sync.Mutex
	contentType string
	data        []string
}

func (c *chunks) Begin(ct string) { c.mu.Lock(); c.contentType = ct; c.mu.Unlock() }
func (c *chunks) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.data = append(c.data, string(p))
	c.mu.Unlock()
	return len(p), nil
}

// Kiln's Node runtime streams a streamifyResponse handler's writes to
// Kiln's own Runtime API server (not a stand-in): chunks as written, the
// content type, HttpResponseStream's prelude, an error after the stream
// began as trailers, and a plain Invoke of a streaming handler read whole.
func TestNodeStreaming(t *testing.T) {
	rt := nodeRuntime(t)
	const app = `
export const stream = awslambda.streamifyResponse(async (event, responseStream, context) => {
  if (event.http) {
    responseStream = awslambda.HttpResponseStream.from(responseStream, { statusCode: 418, headers: { 'x-a': 'b' } });
  } else {
    responseStream.setContentType('text/csv');
  }
  for (const part of ['a,', 'b,', 'c']) {
    responseStream.write(part);
    await new Promise((r) => setTimeout(r, 20));
  }
  if (event.fail) throw new TypeError('broke after three parts');
  responseStream.end();
});
`
	taskRoot := t.TempDir()
	if err := os.WriteFile(filepath.Join(taskRoot, "app.mjs"), []byte(app), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := runtimeapi.Serve(ln, runtimeapi.Config{})
	defer api.Close()
	l, _ := Lookup(rt)
	argv := l.Command(runtimeDir, taskRoot)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(), "_HANDLER=app.stream", "LAMBDA_TASK_ROOT=" + taskRoot}
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	select {
	case <-api.Ready():
	case <-time.After(30 * time.Second):
		t.Fatalf("runtime never asked for an event\n%s", stderr.String())
	}
	run := func(id, event string, st runtimeapi.Stream) runtimeapi.Outcome {
		t.Helper()
		ev := &runtimeapi.Event{RequestID: id, DeadlineMs: time.Now().Add(time.Minute).UnixMilli(), FunctionArn: "arn:aws:lambda:us-east-1:1:function:f",
			Payload: []byte(event)}
		if st != nil {
			ev.Stream = st
		}
		results, err := api.Invoke(ev)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case o := <-results:
			return o
		case <-time.After(30 * time.Second):
			t.Fatalf("no outcome for %s\n%s", id, stderr.String())
			return runtimeapi.Outcome{}
		}
	}

	c := &chunks{}
	o := run("r1", `{}`, c)
	if !o.Streamed || o.ErrorType != "" || c.contentType != "text/csv" || strings.Join(c.data, "") != "a,b,c" || len(c.data) < 2 {
		t.Fatalf("outcome %+v, content type %q, chunks %q", o, c.contentType, c.data)
	}

	c = &chunks{}
	o = run("r2", `{"http":true}`, c)
	want := `{"statusCode":418,"headers":{"x-a":"b"}}` + strings.Repeat("\x00", 8) + "a,b,c"
	if !o.Streamed || c.contentType != "application/vnd.awslambda.http-integration-response" || strings.Join(c.data, "") != want {
		t.Fatalf("prelude: %+v %q %q", o, c.contentType, strings.Join(c.data, ""))
	}

	c = &chunks{}
	o = run("r3", `{"fail":true}`, c)
	if !o.Streamed || o.ErrorType != "TypeError" || !strings.Contains(string(o.Payload), "broke after three parts") || strings.Join(c.data, "") != "a,b,c" {
		t.Fatalf("mid-stream error: %+v %s %q", o, o.Payload, c.data)
	}

	o = run("r4", `{}`, nil) // a plain Invoke: Lambda buffers the stream
	if o.Streamed || o.ErrorType != "" || string(o.Payload) != "a,b,c" {
		t.Fatalf("buffered: %+v %q", o, o.Payload)
	}
}
