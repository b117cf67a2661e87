package runtimeapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/wait"
)

func serve(t *testing.T) (*Server, string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flushes := new(atomic.Int64)
	s := Serve(ln, Config{Flush: func() { flushes.Add(1) }})
	t.Cleanup(s.Close)
	return s, "http://" + ln.Addr().String() + "/2018-06-01/runtime/", flushes
}

func outcome(t *testing.T, ch <-chan Outcome) Outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome")
		return Outcome{}
	}
}

func TestInvokeBeforeAndAfterNext(t *testing.T) {
	s, base, flushes := serve(t)
	// Queued before the runtime asks: delivered at its first /next.
	results, err := s.Invoke(&Event{RequestID: "r1", DeadlineMs: 123, FunctionArn: "arn:f", TraceID: "Root=1", ClientContext: "{\"a\":\n1}", Payload: []byte(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Invoke(&Event{RequestID: "r0"}); err != ErrBusy {
		t.Fatalf("second invoke at once: %v", err)
	}
	resp, err := http.Get(base + "invocation/next")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h := resp.Header
	if string(body) != `{"n":1}` || h.Get("Lambda-Runtime-Aws-Request-Id") != "r1" || h.Get("Lambda-Runtime-Deadline-Ms") != "123" ||
		h.Get("Lambda-Runtime-Invoked-Function-Arn") != "arn:f" || h.Get("Lambda-Runtime-Trace-Id") != "Root=1" ||
		h.Get("Lambda-Runtime-Client-Context") != `{"a":1}` {
		t.Fatalf("event: %v %s", h, body)
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("not ready after the first /next")
	}
	// A result for another request id is refused; the right one delivered,
	// chunked with a trailer as aws-lambda-go sends it.
	resp, _ = http.Post(base+"invocation/zzz/response", "application/json", strings.NewReader(`1`))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("wrong id: %s", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"invocation/r1/response", io.MultiReader(strings.NewReader(`{"ok"`), strings.NewReader(`:true}`)))
	req.Trailer = http.Header{"Lambda-Runtime-Function-Xray-Error-Cause": nil}
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("response: %v %v", resp, err)
	}
	if o := outcome(t, results); string(o.Payload) != `{"ok":true}` || o.ErrorType != "" || flushes.Load() == 0 {
		t.Fatalf("outcome %+v, flushes %d", o, flushes.Load())
	}

	// Waiting in /next first: the invoke writes straight onto that connection.
	got := make(chan *http.Response, 1)
	go func() {
		resp, _ := http.Get(base + "invocation/next")
		got <- resp
	}()
	wait.For(t, "the runtime waits in /next", func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.waiting == nil {
			return errors.New("no /next waiting")
		}
		return nil
	})
	results, _ = s.Invoke(&Event{RequestID: "r2", Payload: bytes.Repeat([]byte("x"), 100<<10)})
	resp = <-got
	body, _ = io.ReadAll(resp.Body)
	if len(body) != 100<<10 || resp.Header.Get("Lambda-Runtime-Aws-Request-Id") != "r2" || s.LastDelivered() != "r2" {
		t.Fatalf("large event: %d bytes", len(body))
	}
	req, _ = http.NewRequest(http.MethodPost, base+"invocation/r2/error", strings.NewReader(`{"errorMessage":"bad","errorType":"ValueError"}`))
	req.Header.Set("Lambda-Runtime-Function-Error-Type", "Runtime.Custom")
	http.DefaultClient.Do(req)
	if o := outcome(t, results); o.ErrorType != "Runtime.Custom" || !json.Valid(o.Payload) {
		t.Fatalf("error outcome %+v", o)
	}

	// The limit is the one Lambda's message names: 6,291,556 bytes pass.
	go http.Get(base + "invocation/next")
	results, _ = s.Invoke(&Event{RequestID: "r6", Payload: []byte("{}")})
	delivered(t, s, "r6")
	resp, _ = http.Post(base+"invocation/r6/response", "application/json", bytes.NewReader(make([]byte, 6291556)))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("6,291,556 bytes: %s", resp.Status)
	}
	if o := outcome(t, results); len(o.Payload) != 6291556 || o.ErrorType != "" {
		t.Fatalf("6,291,556 bytes: outcome of %d bytes, %q", len(o.Payload), o.ErrorType)
	}

	// An oversized response is Lambda's error for the caller and 413 for the runtime.
	go http.Get(base + "invocation/next")
	results, _ = s.Invoke(&Event{RequestID: "r3", Payload: []byte("{}")})
	delivered(t, s, "r3")
	resp, _ = http.Post(base+"invocation/r3/response", "application/json", bytes.NewReader(make([]byte, MaxResponse+1)))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized: %s", resp.Status)
	}
	if o := outcome(t, results); o.ErrorType != "Function.ResponseSizeTooLarge" {
		t.Fatalf("oversized outcome %+v", o)
	}
	resp, _ = http.Get(base + "nowhere")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown path: %s", resp.Status)
	}
}

func TestInitError(t *testing.T) {
	s, base, _ := serve(t)
	resp, err := http.Post(base+"init/error", "application/json", strings.NewReader(`not json`))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatal(resp, err)
	}
	<-s.Ready()
	ie := s.InitError()
	if ie == nil || ie.ErrorType != "Unhandled" || !json.Valid(ie.Payload) {
		t.Fatalf("init error %+v", ie)
	}
}

// TestHeaderFlood sends a header that never ends: the server stops reading
// at MaxHeaderBytes, answers 431 and closes, instead of holding it all.
func TestHeaderFlood(t *testing.T) {
	_, base, _ := serve(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(strings.TrimSuffix(base, "/2018-06-01/runtime/"), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	answer := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(c)
		answer <- string(b)
	}()
	io.WriteString(c, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nX-Flood: ")
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	written := 0
	for written < 256<<20 {
		n, err := c.Write(chunk)
		written += n
		if err != nil {
			break
		}
	}
	if written >= 256<<20 {
		t.Fatalf("the server read %d MB of one header", written>>20)
	}
	if got := <-answer; !strings.HasPrefix(got, "HTTP/1.1 431 ") {
		t.Errorf("answer: %.200q", got)
	}
}

// TestMaxConns opens one connection more than the limit: it is served only
// once another closes.
func TestMaxConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, Config{MaxConns: 4})
	t.Cleanup(s.Close)
	ask := func(c net.Conn) {
		if _, err := io.WriteString(c, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	answered := func(c net.Conn, wait time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(wait))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNotFound
	}
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ask(c)
		conns = append(conns, c)
	}
	for i, c := range conns[:4] {
		if !answered(c, 10*time.Second) {
			t.Fatalf("connection %d was not served", i)
		}
	}
	// Served too early only if the limit is not kept; on a slow host this
	// check may pass without the limit, never fail with it.
	if answered(conns[4], 200*time.Millisecond) {
		t.Fatal("a fifth connection was served while four were open")
	}
	conns[0].Close()
	if !answered(conns[4], 10*time.Second) {
		t.Fatal("the fifth connection was not served once one closed")
	}
}

// TestStalledHead: a request whose head stops coming is dropped.
func TestStalledHead(t *testing.T) {
	dropped(t, Config{HeaderTimeout: 50 * time.Millisecond}, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHo")
}

// TestStalledBody: a request whose body stops coming is dropped, and one
// that came whole is answered (its deadlines are skipped).
func TestStalledBody(t *testing.T) {
	const head = "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\n"
	for _, tc := range []struct{ name, req string }{
		{"ContentLength", head + "Content-Length: 10\r\n\r\n{\"a\""},
		{"Chunked", head + "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n"},
		{"ChunkedNoEnd", head + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) { dropped(t, Config{BodyTimeout: 50 * time.Millisecond}, tc.req) })
	}
	t.Run("Whole", func(t *testing.T) {
		// Long enough that the body sent in two parts 10 ms apart comes
		// within it however a loaded host delays the second.
		const bodyTimeout = 500 * time.Millisecond
		c := serveOne(t, Config{BodyTimeout: bodyTimeout})
		const unknown = "POST /2018-06-01/runtime/unknown HTTP/1.1\r\nHost: x\r\n"
		br := bufio.NewReader(c)
		for i, req := range [][]string{
			{unknown + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"},
			{unknown + "Content-Length: 2\r\n\r\n{", "}"}, // in two parts: under a deadline
			{unknown + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"},
			{unknown + "Content-Length: 2\r\n\r\n{}"},
		} {
			// Past the body timeout, the connection idles, as a runtime's
			// between invokes, and is still served.
			time.Sleep(bodyTimeout + 100*time.Millisecond)
			for _, part := range req {
				io.WriteString(c, part)
				time.Sleep(10 * time.Millisecond)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusNotFound {
				t.Fatalf("request %d: %v %v, want 404", i, resp, err)
			}
			io.Copy(io.Discard, resp.Body)
		}
	})
}

func TestChunkedComplete(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"0\r\n\r\n", true},
		{"2\r\n{}\r\n0\r\n\r\n", true},
		{"2\r\n{}\r\na\r\n0123456789\r\n0\r\n\r\nGET /next", true},
		{"A\r\n0123456789\r\n0\r\n\r\n", true},
		{"", false},
		{"0\r\n", false},
		{"0\r\nTrailer: x\r\n\r\n", false}, // trailers: left to the reader
		{"2\r\n{}", false},
		{"2\r\n{}\r\n", false},
		{"2\r\n{}xx0\r\n\r\n", false},
		{"3\r\n{}\r\n0\r\n\r\n", false},
		{"2;ext=1\r\n{}\r\n0\r\n\r\n", false},
		{"2\n{}\r\n0\r\n\r\n", false},
		{"0x2\r\n{}\r\n0\r\n\r\n", false},
		{"ffffffffff\r\nx\r\n", false},
		{" 2\r\n{}\r\n0\r\n\r\n", false},
	} {
		if got := chunkedComplete([]byte(tc.in)); got != tc.want {
			t.Errorf("chunkedComplete(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// serveOne serves a Runtime API with cfg and returns a connection to it,
// with 30 s to read (a generous bound on what the tests wait for).
func serveOne(t *testing.T, cfg Config) net.Conn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, cfg)
	t.Cleanup(s.Close)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	return c
}

// dropped sends req, which stops midway, and wants the connection closed
// without an answer.
func dropped(t *testing.T, cfg Config, req string) {
	t.Helper()
	c := serveOne(t, cfg)
	io.WriteString(c, req)
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a stalled request: %v, want the connection closed", err)
	}
}

// failingListener fails its first Accepts as a process out of descriptors
// would, then accepts for real.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// TestAcceptOutlivesEMFILE: a runtime that once ran out of descriptors still
// reaches its Runtime API afterwards.
func TestAcceptOutlivesEMFILE(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: inner}
	ln.fails.Store(3)
	s := Serve(ln, Config{})
	t.Cleanup(s.Close)
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + inner.Addr().String() + "/nowhere")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// delivered waits until the runtime has received event id.
func delivered(t *testing.T, s *Server, id string) {
	t.Helper()
	wait.For(t, id+" delivered", func() error {
		if got := s.LastDelivered(); got != id {
			return fmt.Errorf("last delivered %q", got)
		}
		return nil
	})
}
