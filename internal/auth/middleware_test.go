package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/kiln-dev/kiln/internal/api"
)

// TestUnverifiedBodiesBounded: callers with a known key but a made-up
// signature hold, together, at most MaxUnverified bytes of bodies; past
// it a request gets a retryable 429, and what they held is released when
// they go, so a signed request then passes.
func TestUnverifiedBodiesBounded(t *testing.T) {
	k := NewKeyring(testCred)
	k.MaxUnverified = 256 << 10
	srv := httptest.NewServer(Middleware(k, func(*http.Request) (int64, *api.Error) {
		return 8 << 20, api.Errorf(api.RequestTooLarge, "too large")
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(Body(r)) })))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	forged := func(sent int) net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		fmt.Fprintf(conn, "POST /2015-03-31/functions HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nX-Amz-Date: %s\r\n"+
			"Authorization: AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=%s\r\n\r\n",
			addr, 1<<20, now.Format("20060102T150405Z"), testCred.AccessKeyID, now.Format("20060102"), strings.Repeat("0", 64))
		conn.Write(bytes.Repeat([]byte("x"), sent))
		return conn
	}
	// Four callers of 100 KB each against 256 KB: some are refused.
	var conns []net.Conn
	for range 4 {
		conns = append(conns, forged(100<<10))
	}
	refused := 0
	for _, c := range conns {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			continue // still held: its body is not complete
		}
		if resp.StatusCode != 429 || resp.Header.Get("X-Amzn-ErrorType") != api.TooManyRequests {
			t.Fatalf("caller refused with %d %s", resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"))
		}
		refused++
	}
	if refused == 0 || refused == len(conns) {
		t.Fatalf("%d of %d callers refused", refused, len(conns))
	}
	if held := k.unverified.Load(); held > k.MaxUnverified {
		t.Fatalf("held %d bytes, above %d", held, k.MaxUnverified)
	}
	for _, c := range conns {
		c.Close()
	}
	for deadline := time.Now().Add(20 * time.Second); k.unverified.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still held after the callers left: %d", k.unverified.Load())
		}
	}
	body := bytes.Repeat([]byte("y"), 200<<10)
	r, _ := http.NewRequest("POST", srv.URL+"/2015-03-31/functions", bytes.NewReader(body))
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testCred.AccessKeyID, SecretAccessKey: testCred.SecretAccessKey},
		r, hex.EncodeToString(sum[:]), "lambda", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	got.Body.Close()
	if got.StatusCode != 200 || k.unverified.Load() != 0 {
		t.Fatalf("signed request after: %d, held %d", got.StatusCode, k.unverified.Load())
	}
}
