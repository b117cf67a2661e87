package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/kiln-dev/kiln/internal/api"
)

// FuzzVerify signs a request as an AWS SDK client does, sends it through
// the wire format and net/http's parser as a server receives it, and checks
// the canonicalisation on both sides agrees: the request verifies, and the
// same request with its body, its path or its signature changed does not.
// Requests the client library or net/http themselves refuse are skipped.
func FuzzVerify(f *testing.F) {
	k := NewKeyring(testCred)
	f.Fuzz(func(t *testing.T, method, path, query, name, value string, body []byte) {
		r, err := http.NewRequest(method, "http://127.0.0.1:9000"+path, bytes.NewReader(body))
		if err != nil || r.URL.Host != "127.0.0.1:9000" || r.URL.Opaque != "" || r.URL.Fragment != "" {
			return
		}
		r.URL.RawQuery = query
		if _, err := url.ParseQuery(query); err != nil {
			return // the signer needs query parameters it can split
		}
		if name != "" {
			if !sendable(name, value) {
				return
			}
			r.Header.Set(name, value)
		}
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testCred.AccessKeyID,
			SecretAccessKey: testCred.SecretAccessKey}, r, hex.EncodeToString(sum[:]), "lambda", "us-east-1", time.Now()); err != nil {
			return
		}
		var wire bytes.Buffer
		if err := r.Write(&wire); err != nil {
			return // a method, header or path net/http will not send
		}
		got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(wire.Bytes())))
		if err != nil {
			return // one a server would answer 400 before any handler
		}
		received, _, _ := readBody(nil, got, int64(len(body))+1, nil)
		if !bytes.Equal(received, body) {
			return // the client sent no body with this method
		}
		if _, err := k.Verify(got, received); err != nil {
			t.Fatalf("a correctly signed request was refused: %v\n%s", err, wire.Bytes())
		}
		if len(body) > 0 {
			tampered := bytes.Clone(body)
			tampered[len(tampered)/2] ^= 1
			wantRefused(t, k, got, tampered, "tampered body")
		}
		if v := got.Header.Get(name); v != "" {
			if h, _ := parseAuthorization(got.Header.Get("Authorization")); slices.Contains(h.signedHeaders, strings.ToLower(name)) {
				b := []byte(v)
				b[len(b)/2] ^= 1
				if canonicalValue(string(b)) != canonicalValue(v) { // a change signing ignores (whitespace) is none
					changed := *got
					changed.Header = got.Header.Clone()
					changed.Header.Set(name, string(b))
					wantRefused(t, k, &changed, received, "tampered signed header")
				}
			}
		}
		moved := *got
		u := *got.URL
		u.Path, u.RawPath = u.Path+"x", ""
		moved.URL = &u
		wantRefused(t, k, &moved, received, "tampered path")
		forged := *got
		forged.Header = got.Header.Clone()
		forged.Header.Set("Authorization", strings.Replace(got.Header.Get("Authorization"), "Signature=", "Signature=0", 1))
		wantRefused(t, k, &forged, received, "tampered signature")
	})
}

// sendable reports whether a client can send the header at all: net/http's
// server answers 400 to names that are no tokens and values with control
// characters, and its client drops or rewrites them.
func sendable(name, value string) bool {
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	for _, c := range []byte(value) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func canonicalValue(v string) string { return strings.TrimSpace(stripExcessSpaces(v)) }

func wantRefused(t *testing.T, k *Keyring, r *http.Request, body []byte, what string) {
	t.Helper()
	var e *api.Error
	if _, err := k.Verify(r, body); !errors.As(err, &e) || e.Type != api.InvalidSignature {
		t.Fatalf("%s: %v, want %s", what, err, api.InvalidSignature)
	}
}

// FuzzParseAuthorization: any Authorization header is parsed into all the
// parts a signature needs, or refused as IncompleteSignature.
func FuzzParseAuthorization(f *testing.F) {
	f.Fuzz(func(t *testing.T, h string) {
		got, err := parseAuthorization(h)
		if err != nil {
			var e *api.Error
			if !errors.As(err, &e) || e.Type != api.IncompleteSignature {
				t.Fatalf("%q: %v, want %s", h, err, api.IncompleteSignature)
			}
			return
		}
		if got.accessKey == "" || got.signature == "" || len(got.signedHeaders) == 0 || strings.Contains(got.accessKey, "/") {
			t.Fatalf("%q parsed to %+v", h, got)
		}
	})
}
