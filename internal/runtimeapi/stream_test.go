package runtimeapi

import (
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a Stream that notes what it got, and when.
type recorder struct {
	mu          sync.Mutex
	contentType string
	begun       int
	chunks      []string
	got         chan string
}

func newRecorder() *recorder { return &recorder{got: make(chan string, 64)} }

func (r *recorder) Begin(ct string) {
	r.mu.Lock()
	r.contentType, r.begun = ct, r.begun+1
	r.mu.Unlock()
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.chunks = append(r.chunks, string(p))
	r.mu.Unlock()
	r.got <- string(p)
	return len(p), nil
}

// next takes the event the runtime holds.
func next(t *testing.T, base string) {
	t.Helper()
	resp, err := http.Get(base + "invocation/next")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// streamPost posts a streamed response whose body the test writes chunk by
// chunk; trailers, when given, are set before the body ends.
func streamPost(t *testing.T, url string, trailer http.Header) (*io.PipeWriter, <-chan *http.Response) {
	return post(t, url, trailer, true)
}

// post posts a body the test writes chunk by chunk, saying it streams or,
// as aws-lambda-go, not.
func post(t *testing.T, url string, trailer http.Header, saysStreaming bool) (*io.PipeWriter, <-chan *http.Response) {
	t.Helper()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	if saysStreaming {
		req.Header.Set("Lambda-Runtime-Function-Response-Mode", "streaming")
	}
	req.Header.Set("Content-Type", "text/event-stream")
	req.Trailer = trailer
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- nil
			return
		}
		resp.Body.Close()
		done <- resp
	}()
	return pw, done
}

func TestStreamedResponseArrivesAsWritten(t *testing.T) {
	for _, says := range []bool{true, false} {
		t.Run(map[bool]string{true: "Node", false: "aws-lambda-go"}[says], func(t *testing.T) { testArrivesAsWritten(t, says) })
	}
}

func testArrivesAsWritten(t *testing.T, saysStreaming bool) {
	s, base, _ := serve(t)
	rec := newRecorder()
	results, err := s.Invoke(&Event{RequestID: "s1", Payload: []byte(`{}`), Stream: rec})
	if err != nil {
		t.Fatal(err)
	}
	next(t, base)
	pw, done := post(t, base+"invocation/s1/response", nil, saysStreaming)
	// Each chunk reaches the Stream before the next is written: nothing is
	// held back until the body ends.
	for _, chunk := range []string{"data: 1\n\n", "data: 2\n\n", "data: 3\n\n"} {
		go pw.Write([]byte(chunk)) // the pipe blocks until the transport reads it
		select {
		case got := <-rec.got:
			if got != chunk {
				t.Fatalf("chunk %q, want %q", got, chunk)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("chunk %q did not arrive while the body was open", chunk)
		}
	}
	select {
	case <-results:
		t.Fatal("outcome delivered before the stream ended")
	default:
	}
	pw.Close()
	o := outcome(t, results)
	if !o.Streamed || o.ErrorType != "" || len(o.Payload) != 0 {
		t.Fatalf("outcome %+v", o)
	}
	if resp := <-done; resp == nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("runtime answered %v", resp)
	}
	if rec.begun != 1 || rec.contentType != "text/event-stream" {
		t.Fatalf("begin %d times, content type %q", rec.begun, rec.contentType)
	}
}

func TestStreamedResponseErrorTrailers(t *testing.T) {
	s, base, _ := serve(t)
	rec := newRecorder()
	results, _ := s.Invoke(&Event{RequestID: "s2", Stream: rec})
	next(t, base)
	trailer := http.Header{"Lambda-Runtime-Function-Error-Type": nil, "Lambda-Runtime-Function-Error-Body": nil}
	pw, done := streamPost(t, base+"invocation/s2/response", trailer)
	pw.Write([]byte("partial"))
	<-rec.got
	trailer.Set("Lambda-Runtime-Function-Error-Type", "Error")
	trailer.Set("Lambda-Runtime-Function-Error-Body", base64.StdEncoding.EncodeToString([]byte(`{"errorType":"Error","errorMessage":"boom"}`)))
	pw.Close()
	o := outcome(t, results)
	if !o.Streamed || o.ErrorType != "Error" || string(o.Payload) != `{"errorType":"Error","errorMessage":"boom"}` {
		t.Fatalf("outcome %+v %s", o, o.Payload)
	}
	<-done
}

func TestStreamedResponseOverTheLimit(t *testing.T) {
	s, base, _ := serve(t)
	rec := newRecorder()
	rec.got = make(chan string, 1<<12)
	results, _ := s.Invoke(&Event{RequestID: "s3", Stream: rec})
	next(t, base)
	pw, done := streamPost(t, base+"invocation/s3/response", nil)
	go func() {
		chunk := []byte(strings.Repeat("x", 1<<20))
		for i := 0; i < 21; i++ {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	o := outcome(t, results)
	if o.ErrorType != "Function.ResponseSizeTooLarge" || !o.Streamed || !strings.Contains(string(o.Payload), "20971520") {
		t.Fatalf("outcome %+v %s", o, o.Payload)
	}
	pw.CloseWithError(io.ErrClosedPipe)
	<-done
	total := 0
	for _, c := range rec.chunks {
		total += len(c)
	}
	if total > MaxStreamed {
		t.Fatalf("%d bytes passed on, over the %d limit", total, MaxStreamed)
	}
}

// A streamed response to an invoke without a Stream (Invoke of a streaming
// function) is read whole, as Lambda buffers it.
func TestStreamedResponseToBufferedInvoke(t *testing.T) {
	s, base, _ := serve(t)
	results, _ := s.Invoke(&Event{RequestID: "s4"})
	next(t, base)
	pw, done := streamPost(t, base+"invocation/s4/response", nil)
	pw.Write([]byte("a"))
	pw.Write([]byte("b"))
	pw.Close()
	if o := outcome(t, results); o.Streamed || string(o.Payload) != "ab" {
		t.Fatalf("outcome %+v", o)
	}
	<-done
}
