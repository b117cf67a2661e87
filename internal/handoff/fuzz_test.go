package handoff_test

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/handoff"
)

// FuzzHead: any request head net/http's server accepts is serialized by
// Head into one that parses back to the same request (method, target, host,
// header values, framing of the body), so the receiving process serves what the
// client sent and its signature still verifies.
func FuzzHead(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil || !serverAccepts(r) {
			return
		}
		head, err := handoff.Head(r)
		if err != nil {
			t.Fatalf("Head: %v\n%q", err, raw)
		}
		back, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("the head does not parse back: %v\n%q\nfrom %q", err, head, raw)
		}
		if back.Method != r.Method || back.RequestURI != r.RequestURI || back.Host != r.Host ||
			back.ContentLength != r.ContentLength && r.ContentLength > 0 || back.Close != r.Close ||
			!slices.Equal(back.TransferEncoding, r.TransferEncoding) {
			t.Fatalf("%q\nparsed back from %q as\n%s %s host %q length %d close %v te %q\nwant\n%s %s host %q length %d close %v te %q",
				raw, head, back.Method, back.RequestURI, back.Host, back.ContentLength, back.Close, back.TransferEncoding,
				r.Method, r.RequestURI, r.Host, r.ContentLength, r.Close, r.TransferEncoding)
		}
		for k, v := range r.Header {
			if k == "Content-Length" || k == "Transfer-Encoding" || k == "Host" {
				continue
			}
			// Values are compared without surrounding whitespace, which HTTP
			// (and SigV4's canonical form) ignores and Header.Write trims.
			if !slices.EqualFunc(back.Header[k], v, func(a, b string) bool { return trim(a) == trim(b) }) {
				t.Fatalf("header %s: %q, want %q\n%q from %q", k, back.Header[k], v, head, raw)
			}
		}
		io.Copy(io.Discard, back.Body)
	})
}

// serverAccepts repeats what net/http's server refuses with 400 after
// parsing a request, before any handler sees it.
func serverAccepts(r *http.Request) bool {
	if r.ProtoAtLeast(1, 1) && len(r.Header["Host"]) == 0 && r.Host == "" || len(r.Header["Host"]) > 1 {
		return false
	}
	// A Host with a byte no host name may hold ("0 " from an obs-folded
	// line): httpguts.ValidHostHeader, "malformed Host header".
	for _, c := range []byte(r.Host) {
		if !validHostByte(c) {
			return false
		}
	}
	for k, vs := range r.Header {
		if !token(k) {
			return false
		}
		for _, v := range vs {
			for _, c := range []byte(v) {
				if c < ' ' && c != '\t' || c == 0x7f {
					return false
				}
			}
		}
	}
	return true
}

func validHostByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) >= 0
}

func trim(s string) string { return strings.Trim(s, " \t\r\n") }

func token(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return s != ""
}
