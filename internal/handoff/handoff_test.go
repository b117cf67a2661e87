package handoff_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/handoff"
)

// side serves the requests meant for it (X-Side) and hands the others
// over, answering with its name and the hash of the body it read.
func side(t *testing.T, name string, e *handoff.Endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if want := r.Header.Get("X-Side"); want != name {
			if err := e.Pass(w, r); err != nil {
				t.Errorf("%s: pass to %s: %v", name, want, err)
			}
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("%s: body: %v", name, err)
		}
		sum := sha256.Sum256(b)
		io.WriteString(w, name+":"+r.URL.RawQuery+":"+hex.EncodeToString(sum[:]))
	})
}

// TestRequestsMoveBetweenProcesses drives one keep-alive connection whose
// requests alternate between two servers joined by a handoff socket, with
// bodies of every framing; each must be answered by its server, whole,
// and the connection must survive every move.
func TestRequestsMoveBetweenProcesses(t *testing.T) {
	fa, fb, err := handoff.Pair()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	notes := make(chan byte, 1)
	ea, err := handoff.Open(fa, ln.Addr(), func(b byte) { notes <- b })
	if err != nil {
		t.Fatal(err)
	}
	eb, err := handoff.Open(fb, ln.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &http.Server{Handler: side(t, "a", ea), MaxHeaderBytes: handoff.MaxHead}
	b := &http.Server{Handler: side(t, "b", eb), MaxHeaderBytes: handoff.MaxHead}
	go a.Serve(ln)
	go a.Serve(ea) // connections handed back
	go b.Serve(eb)
	t.Cleanup(func() { a.Close(); b.Close(); ea.Close(); eb.Close() })

	big := make([]byte, 300<<10) // larger than any socket message: stays in the TCP stream
	rand.Read(big)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	conns := 0
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			conns++
		}
	}}
	for i, c := range []struct {
		side    string
		body    []byte
		chunked bool
	}{
		{"a", []byte("first"), false},
		{"b", []byte("to b"), false},
		{"b", big, false},
		{"a", big, true},
		{"b", nil, false},
		{"b", big[:70000], true},
		{"a", []byte(strings.Repeat("x", 5000)), false},
		{"b", []byte("last"), false},
	} {
		var body io.Reader = bytes.NewReader(c.body)
		if c.chunked {
			body = io.MultiReader(body) // unknown length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/x?n="+string(rune('0'+i)), body)
		req.Header.Set("X-Side", c.side)
		req.Header.Add("X-Multi", "1")
		req.Header.Add("X-Multi", "2")
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		sum := sha256.Sum256(c.body)
		if want := c.side + ":n=" + string(rune('0'+i)) + ":" + hex.EncodeToString(sum[:]); string(got) != want {
			t.Fatalf("request %d: got %q, want %q", i, got, want)
		}
	}
	if conns != 1 {
		t.Errorf("%d connections opened, want 1 kept through every handoff", conns)
	}
	if err := eb.Note('q'); err != nil {
		t.Fatal(err)
	}
	if b := <-notes; b != 'q' { // a note arrives as a note, not as a connection
		t.Errorf("note %q", b)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/after-note", nil)
	req.Header.Set("X-Side", "a")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("after a note: %v", err)
	}
	resp.Body.Close()
}

// TestHeadKeepsWhatSignaturesCover checks the head a receiver parses back:
// method, target, host, repeated headers and framing.
func TestHeadKeepsWhatSignaturesCover(t *testing.T) {
	raw := "POST /2015-03-31/functions/f%3A1/invocations?Qualifier=%24LATEST HTTP/1.1\r\n" +
		"Host: kiln.example:9000\r\nX-Amz-Date: 20261125T000000Z\r\nX-Multi: 1\r\nX-Multi: 2\r\n" +
		"Content-Length: 4\r\nX-Amz-Invocation-Type: Event\r\n\r\nbody"
	r, err := http.ReadRequest(bufioReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	r.RequestURI = "/2015-03-31/functions/f%3A1/invocations?Qualifier=%24LATEST"
	head, err := handoff.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := http.ReadRequest(bufioReader(string(head) + "body"))
	if err != nil {
		t.Fatal(err)
	}
	if back.Method != r.Method || back.RequestURI != r.RequestURI || back.Host != r.Host || back.ContentLength != 4 {
		t.Errorf("head parsed back as %s %s host %s length %d", back.Method, back.RequestURI, back.Host, back.ContentLength)
	}
	for k, v := range r.Header {
		if strings.Join(back.Header[k], ",") != strings.Join(v, ",") {
			t.Errorf("header %s: %q, want %q", k, back.Header[k], v)
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
