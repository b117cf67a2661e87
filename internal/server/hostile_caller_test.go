package server_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/server"
)

// heapInUse is the test process's (and so the in-process Kiln's) heap.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// rawRequest opens a connection to s and writes a request head announcing
// a body of length bytes, then sent bytes of it.
func rawRequest(t *testing.T, s *server.Server, head http.Header, length, sent int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.Endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST /2015-03-31/functions HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", strings.TrimPrefix(s.Endpoint, "http://"), length)
	head.Write(&b)
	b.WriteString("\r\n")
	b.Write(bytes.Repeat([]byte("x"), sent))
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readAnswer reads the response on conn: status and error type.
func readAnswer(t *testing.T, conn net.Conn, within time.Duration) (int, string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(within))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer within %s: %v", within, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, errorType(resp)
}

// TestHostileCallerBodiesBounded: callers that announce 66 MB bodies and
// send little of them make Kiln set aside only what arrived, callers with
// no valid key get nothing read at all, and a stalled body ends its
// connection.
func TestHostileCallerBodiesBounded(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	const announced, conns, sent = 66 << 20, 5, 256 << 10
	before := heapInUse()

	// No credentials: answered before any body is read.
	var anon []net.Conn
	for range conns {
		anon = append(anon, rawRequest(t, s, http.Header{"Content-Type": {"application/json"}}, announced, sent))
	}
	// The right key with a made-up signature: its body is read (the
	// signature covers it), as far as it came.
	forged := http.Header{
		"Authorization": {"AWS4-HMAC-SHA256 Credential=" + s.Identity.AccessKeyID + "/" + time.Now().UTC().Format("20060102") +
			"/" + s.Region + "/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64)},
		"X-Amz-Date": {time.Now().UTC().Format("20060102T150405Z")},
	}
	var stalled []net.Conn
	for range conns {
		stalled = append(stalled, rawRequest(t, s, forged, announced, sent))
	}
	var peak uint64
	for range 10 {
		peak = max(peak, heapInUse())
		time.Sleep(100 * time.Millisecond) // samples the heap for a second while the connections stall (the scenario)
	}
	if grew := int64(peak) - int64(before); grew > 64<<20 {
		t.Fatalf("%d connections announcing %d MB bodies grew the heap by %d MB", 2*conns, announced>>20, grew>>20)
	} else {
		t.Logf("heap grew by %d MB under %d connections announcing %d MB each", grew>>20, 2*conns, announced>>20)
	}
	for _, c := range anon {
		if status, typ := readAnswer(t, c, 10*time.Second); status != 403 || typ != "MissingAuthenticationTokenException" {
			t.Fatalf("unsigned request: %d %s", status, typ)
		}
	}
	// A body that stops coming ends its request.
	for _, c := range stalled {
		if status, typ := readAnswer(t, c, 60*time.Second); status != 400 || typ != "InvalidRequestContentException" {
			t.Fatalf("stalled body: %d %s", status, typ)
		}
	}
}

// signedRequest signs a Lambda API request to s the way the SDKs do, with
// service and region in its credential scope; extra headers are signed.
func signedRequest(t *testing.T, s *server.Server, method, path string, body []byte, service, region string, extra http.Header) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, s.Endpoint+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range extra {
		r.Header[k] = v
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: s.Identity.AccessKeyID, SecretAccessKey: s.Identity.SecretAccessKey},
		r, hex.EncodeToString(sum[:]), service, region, time.Now()); err != nil {
		t.Fatal(err)
	}
	return r
}

// errorType is the Lambda error type of resp (X-Amzn-ErrorType, as the SDKs read it).
func errorType(resp *http.Response) string {
	typ, _, _ := strings.Cut(resp.Header.Get("X-Amzn-Errortype"), ":")
	return typ
}

func do(t *testing.T, r *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestHostileCallerSignatureWhole: headers the caller did not sign are not
// acted on, a signature for another service or region is refused, and a
// payload left out of the signature is refused.
func TestHostileCallerSignatureWhole(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "echo", nil)
	invoke := "/2015-03-31/functions/echo/invocations"
	payload := []byte(`{"a":1}`)

	t.Run("unsigned x-amz headers", func(t *testing.T) {
		r := signedRequest(t, s, "POST", invoke, payload, "lambda", s.Region, nil)
		r.Header.Set("X-Amz-Invocation-Type", "Event")
		r.Header.Set("X-Amz-Log-Type", "Tail")
		resp, body := do(t, r)
		if resp.StatusCode != 200 || body != string(payload) || resp.Header.Get("X-Amz-Log-Result") != "" {
			t.Fatalf("unsigned Event/Tail headers were acted on: %d %q log=%q", resp.StatusCode, body, resp.Header.Get("X-Amz-Log-Result"))
		}
		// Signed, they count.
		r = signedRequest(t, s, "POST", invoke, payload, "lambda", s.Region, http.Header{"X-Amz-Invocation-Type": {"Event"}})
		if resp, body := do(t, r); resp.StatusCode != 202 {
			t.Fatalf("signed Event invoke: %d %s", resp.StatusCode, body)
		}
	})
	for _, tt := range []struct {
		name, path, service, region, target, want string
	}{
		{"other service", invoke, "s3", s.Region, "", "Credential should be scoped to correct service: 'lambda'."},
		{"logs scope for lambda", invoke, "logs", s.Region, "", "Credential should be scoped to correct service: 'lambda'."},
		{"lambda scope for logs", "/", "lambda", s.Region, "Logs_20140328.DescribeLogGroups", "Credential should be scoped to correct service: 'logs'."},
		{"other region", invoke, "lambda", "eu-west-1", "", "Credential should be scoped to a valid region."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.target != "" {
				h.Set("X-Amz-Target", tt.target)
				h.Set("Content-Type", "application/x-amz-json-1.1")
			}
			resp, body := do(t, signedRequest(t, s, "POST", tt.path, []byte(`{}`), tt.service, tt.region, h))
			if resp.StatusCode != 403 || errorType(resp) != "InvalidSignatureException" || !strings.Contains(body, tt.want) {
				t.Fatalf("got %d %s, want 403 InvalidSignatureException %q", resp.StatusCode, body, tt.want)
			}
		})
	}
	t.Run("unsigned payload", func(t *testing.T) {
		r, _ := http.NewRequest("POST", s.Endpoint+invoke, bytes.NewReader([]byte(`{"swapped":true}`)))
		r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: s.Identity.AccessKeyID, SecretAccessKey: s.Identity.SecretAccessKey},
			r, "UNSIGNED-PAYLOAD", "lambda", s.Region, time.Now()); err != nil {
			t.Fatal(err)
		}
		if resp, body := do(t, r); resp.StatusCode != 403 || errorType(resp) != "InvalidSignatureException" {
			t.Fatalf("UNSIGNED-PAYLOAD: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("signed payload hash checked before the body", func(t *testing.T) {
		// With the body's hash signed, a wrong signature is answered
		// before any of a 66 MB body is sent.
		conn := rawRequest(t, s, http.Header{
			"Authorization": {"AWS4-HMAC-SHA256 Credential=" + s.Identity.AccessKeyID + "/" + time.Now().UTC().Format("20060102") +
				"/" + s.Region + "/lambda/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + strings.Repeat("0", 64)},
			"X-Amz-Date":           {time.Now().UTC().Format("20060102T150405Z")},
			"X-Amz-Content-Sha256": {strings.Repeat("a", 64)},
		}, 66<<20, 0)
		if status, typ := readAnswer(t, conn, 10*time.Second); status != 403 || typ != "InvalidSignatureException" {
			t.Fatalf("got %d %s", status, typ)
		}
		// A body swapped after signing (same length) is refused.
		sum := sha256.Sum256(payload)
		r := signedRequest(t, s, "POST", invoke, payload, "lambda", s.Region, http.Header{"X-Amz-Content-Sha256": {hex.EncodeToString(sum[:])}})
		r.Body = io.NopCloser(strings.NewReader(`{"b":2}`))
		if resp, body := do(t, r); resp.StatusCode != 403 || !strings.Contains(body, "x-amz-content-sha256") {
			t.Fatalf("swapped body: %d %s", resp.StatusCode, body)
		}
		r = signedRequest(t, s, "POST", invoke, payload, "lambda", s.Region, http.Header{"X-Amz-Content-Sha256": {hex.EncodeToString(sum[:])}})
		if resp, body := do(t, r); resp.StatusCode != 200 || body != string(payload) {
			t.Fatalf("signed payload hash: %d %s", resp.StatusCode, body)
		}
	})
}

// TestHostileCallerZipEntries: a package of more entries than Kiln takes is
// refused in Lambda's shape, and nothing of it is unpacked.
func TestHostileCallerZipEntries(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range codestore.DefaultMaxEntries + 1 {
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("f%05d", i), Method: zip.Store}); err != nil {
			t.Fatal(err)
		}
	}
	zw.Close()
	_, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("many"), Role: aws.String(fntest.Role),
		Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: buf.Bytes()}})
	kilntest.APIError(t, err, "InvalidParameterValueException", 400)
	if !strings.Contains(err.Error(), "entries") {
		t.Fatalf("message does not name the cause: %v", err)
	}
	if trees, _ := os.ReadDir(filepath.Join(s.DataDir, "code", "trees")); len(trees) != 0 {
		t.Fatalf("code store holds %d trees after a refused package", len(trees))
	}
}

// TestHostileCallerTLSAndPprof: an operator's own certificate serves the
// API over HTTPS to a client trusting its CA, and the metrics listener
// serves profiles only when asked.
func TestHostileCallerTLSAndPprof(t *testing.T) {
	// A pair Kiln generated stands for the operator's.
	gen := kilntest.Start(t, server.Config{TLS: true})
	gen.Close()
	tlsDir := filepath.Join(gen.DataDir, "tls")
	s := kilntest.Start(t, server.Config{TLSCert: filepath.Join(tlsDir, "cert.pem"), TLSKey: filepath.Join(tlsDir, "key.pem"),
		MetricsListen: "127.0.0.1:0"})
	if !strings.HasPrefix(s.Endpoint, "https://") {
		t.Fatalf("endpoint %s", s.Endpoint)
	}
	if conf, _ := os.ReadFile(filepath.Join(s.DataDir, "config")); strings.Contains(string(conf), "ca_bundle") {
		t.Fatalf("config names a CA for the operator's own certificate:\n%s", conf)
	}
	pem, err := os.ReadFile(filepath.Join(tlsDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c := lambda.New(lambda.Options{Region: s.Region, BaseEndpoint: aws.String(s.Endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(s.Identity.AccessKeyID, s.Identity.SecretAccessKey, ""),
		HTTPClient:       &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
		RetryMaxAttempts: 1})
	if _, err := c.ListFunctions(ctx, &lambda.ListFunctionsInput{}); err != nil {
		t.Fatalf("list functions over https: %v", err)
	}
	if _, err := kilntest.Lambda(s).ListFunctions(ctx, &lambda.ListFunctionsInput{}); err == nil {
		t.Fatal("a client not trusting the CA connected")
	}

	pprofStatus := func(s *server.Server) int {
		resp, err := http.Get(strings.TrimSuffix(s.MetricsEndpoint, "/metrics") + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := pprofStatus(s); got != 404 {
		t.Fatalf("pprof served without Pprof: %d", got)
	}
	if got := pprofStatus(kilntest.Start(t, server.Config{MetricsListen: "127.0.0.1:0", Pprof: true})); got != 200 {
		t.Fatalf("pprof with Pprof: %d", got)
	}
}
