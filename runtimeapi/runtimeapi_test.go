package runtimeapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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
	time.Sleep(50 * time.Millisecond)
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

	// An oversized response is Lambda's error for the caller and 413 for the runtime.
	go http.Get(base + "invocation/next")
	results, _ = s.Invoke(&Event{RequestID: "r3", Payload: []byte("{}")})
	time.Sleep(50 * time.Millisecond)
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
