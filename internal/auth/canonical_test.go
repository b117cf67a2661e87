package auth

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// sdkSignature is the reference for signature.expected: the AWS SDK's
// signer re-signing a copy of r that holds exactly the headers the client
// signed, with the client's time and scope (how Kiln verified before).
func sdkSignature(t *testing.T, s signature, r *http.Request, payloadHash string) string {
	u := *r.URL // the signer rewrites the query it signs
	clone := &http.Request{Method: r.Method, URL: &u, Host: r.Host, Header: http.Header{}}
	for _, name := range s.h.signedHeaders {
		switch name {
		case "host":
		case "content-length":
			clone.ContentLength = r.ContentLength
		default:
			clone.Header[http.CanonicalHeaderKey(name)] = r.Header.Values(name)
		}
	}
	creds := aws.Credentials{AccessKeyID: s.cred.AccessKeyID, SecretAccessKey: s.cred.SecretAccessKey,
		SessionToken: r.Header.Get("X-Amz-Security-Token")}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableHeaderHoisting = true })
	if err := signer.SignHTTP(context.Background(), creds, clone, payloadHash, s.h.service, s.h.region, s.signedAt); err != nil {
		t.Fatal(err)
	}
	want, err := parseAuthorization(clone.Header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	return want.signature
}

// FuzzExpectedSignature: for any request as a server holds it and any list
// of signed headers, the signature Kiln computes is the SDK's, so Kiln
// accepts exactly what the SDK's signer would have signed.
func FuzzExpectedSignature(f *testing.F) {
	f.Add("POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af/invocations", "Qualifier=prod&b=a+b&a=%2F", "127.0.0.1:9000", "",
		"content-type;host;x-amz-date;x-amz-log-type;content-length", "X-Amz-Log-Type", "  Tail   x \t", "", int64(17), "lambda")
	f.Add("GET", "/a b/%7E", "x=1;y=2&&=", "example.com:80", "http", "Host;X-Amz-Date;user-agent;expect;x-amz-security-token;x-amz-security-token",
		"User-Agent", "sdk", "token", int64(0), "logs")
	f.Add("PUT", "", "", "[::1]:443", "HTTPS", "x-missing;Content-Length;x-a;X-A", "X-A", "", "", int64(-1), "sqs")
	k := NewKeyring(testCred)
	at := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, method, path, query, host, scheme, signed, name, value, token string, length int64, service string) {
		if method == "" || service == "" || strings.ContainsAny(service, "/,") {
			return // parseAuthorization gives no such service
		}
		u, err := url.Parse(path)
		if err != nil || u.Host != "" || u.Scheme != "" {
			return
		}
		if name != "" && !headerName(name) {
			return // net/http's server refuses the request: no handler sees it
		}
		u.RawQuery, u.Scheme = query, scheme
		r := &http.Request{Method: method, URL: u, Host: host, Header: http.Header{}, ContentLength: length}
		if name != "" {
			r.Header.Add(name, value)
			r.Header.Add(name, value+" second")
		}
		if token != "" {
			r.Header.Set("X-Amz-Security-Token", token)
		}
		s := signature{k: k, h: sigV4Header{accessKey: testCred.AccessKeyID, region: "us-east-1", service: service,
			signedHeaders: strings.Split(signed, ";")}, cred: testCred, signedAt: at}
		const hash = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
		if got, want := s.expected(r, hash), sdkSignature(t, s, r, hash); got != want {
			t.Fatalf("signature %s, the SDK's %s", got, want)
		}
	})
}

// headerName reports whether s is a token (RFC 9110), as net/http's
// server requires of every header name it accepts. (A name that is not one,
// say "\x80" beside a signed "\xc8", is a header the SDK would merge with
// another once both lower-case to U+FFFD; no request brings one.)
func headerName(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c <= ' ' || c > '~' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c) })
}

// The key cache keys on the secret too: a rotated secret is never checked
// against the old one's key.
func TestSigningKeyFollowsSecret(t *testing.T) {
	var c signingKeys
	a, b := c.key("one", "20261204", "us-east-1", "lambda").key, c.key("two", "20261204", "us-east-1", "lambda").key
	if string(a) == string(b) || string(a) != string(c.key("one", "20261204", "us-east-1", "lambda").key) {
		t.Fatal("signing keys do not follow the secret")
	}
	if string(a) == string(c.key("one", "20261205", "us-east-1", "lambda").key) {
		t.Fatal("signing keys do not follow the day")
	}
}
