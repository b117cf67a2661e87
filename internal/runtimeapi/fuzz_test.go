package runtimeapi

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// FuzzRuntimeStream feeds a runtime's side of a Runtime API connection with
// any bytes, while an event waits for it. Whatever it sends, the server
// answers only with well-formed responses, closes the connection when the
// runtime does, delivers at most one outcome, and goes on serving the next
// connection: an honest runtime still gets the event and its result through.
func FuzzRuntimeStream(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := Serve(ln, Config{})
		defer s.Close()
		results, err := s.Invoke(&Event{RequestID: "r-1", DeadlineMs: 1, Payload: []byte(`{"n":1}`)})
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, ln)
		c.Write(stream) // the server may close early on garbage; what it answered is read below
		c.(*net.TCPConn).CloseWrite()
		readResponses(t, c, stream)
		c.Close()
		// The connection is gone on the server's side too before the next
		// one comes, so the event cannot go to a /next of the fuzzed stream.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			s.mu.Lock()
			n := len(s.conns)
			s.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the server kept the fuzzed connection after it closed\n%q", stream)
			}
		}
		id := "r-1"
		select {
		case <-results: // the stream delivered an outcome: the next event must work too
			if results, err = s.Invoke(&Event{RequestID: "r-2", Payload: []byte(`{"n":2}`)}); err != nil {
				t.Fatalf("invoke after an outcome: %v", err)
			}
			id = "r-2"
		default:
		}
		honest(t, s, ln, results, id)
	})
}

func dial(t *testing.T, ln net.Listener) net.Conn {
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readResponses reads what the server answered until it closed the
// connection; every answer must be a well-formed response.
func readResponses(t *testing.T, c net.Conn, stream []byte) {
	br := bufio.NewReader(c)
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return
		} else if err != nil {
			t.Fatalf("server did not close the connection: %v\n%q", err, stream)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("malformed response: %v\n%q", err, stream)
		}
		switch resp.StatusCode {
		case 200, 202, 400, 404, 413:
		default:
			t.Fatalf("status %d\n%q", resp.StatusCode, stream)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("response body: %v\n%q", err, stream)
		}
	}
}

// honest takes event id as a runtime does (asking /next unless the fuzzed
// stream already received it) and posts its result.
func honest(t *testing.T, s *Server, ln net.Listener, results <-chan Outcome, id string) {
	s.mu.Lock()
	delivered := s.current == id
	s.mu.Unlock()
	c := dial(t, ln)
	defer c.Close()
	br := bufio.NewReader(c)
	if !delivered {
		io.WriteString(c, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.Header.Get("Lambda-Runtime-Aws-Request-Id") != id {
			t.Fatalf("/next after a fuzzed connection: %v %v", err, resp)
		}
		io.Copy(io.Discard, resp.Body)
	}
	io.WriteString(c, "POST /2018-06-01/runtime/invocation/"+id+"/response HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\"ok\"")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("result after a fuzzed connection: %v %v", err, resp)
	}
	select {
	case o := <-results:
		if !bytes.Equal(o.Payload, []byte(`"ok"`)) || o.ErrorType != "" {
			t.Fatalf("outcome %+v", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome after a fuzzed connection")
	}
}
