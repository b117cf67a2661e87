// Package auth authenticates requests signed with AWS Signature Version 4 and
// tells handlers which account made them.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/kiln-dev/kiln/api"
)

// Credential is one access key pair and the account it belongs to.
type Credential struct {
	AccessKeyID     string
	SecretAccessKey string
	Account         string
}

// Keyring verifies SigV4 signatures against a set of known keys.
type Keyring struct {
	mu     sync.RWMutex
	keys   map[string]Credential
	signer *v4.Signer
	// MaxSkew is how far X-Amz-Date may be from now; zero means 15 minutes, as AWS.
	MaxSkew time.Duration
}

// NewKeyring returns a keyring holding creds.
func NewKeyring(creds ...Credential) *Keyring {
	k := &Keyring{keys: map[string]Credential{}, signer: v4.NewSigner(func(o *v4.SignerOptions) {
		o.DisableHeaderHoisting = true
	})}
	for _, c := range creds {
		k.Add(c)
	}
	return k
}

// Add registers (or replaces) a key.
func (k *Keyring) Add(c Credential) {
	k.mu.Lock()
	k.keys[c.AccessKeyID] = c
	k.mu.Unlock()
}

// Password checks an access key pair given as a user name and password
// (HTTP basic authentication, as container registry clients send it) and
// returns its account.
func (k *Keyring) Password(accessKeyID, secret string) (string, bool) {
	k.mu.RLock()
	c, ok := k.keys[accessKeyID]
	k.mu.RUnlock()
	if !ok || subtle.ConstantTimeCompare([]byte(c.SecretAccessKey), []byte(secret)) != 1 {
		return "", false
	}
	return c.Account, true
}

type ctxKey struct{}

// Caller is who signed a request.
type Caller struct {
	AccessKeyID string
	Account     string
	Region      string
	Service     string
}

// FromContext returns the authenticated caller of a request.
func FromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(ctxKey{}).(Caller)
	return c, ok
}

// WithCaller returns ctx carrying c; in-process callers (pollers) use it to
// act as an account without signing.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// sigV4Header is a parsed Authorization header.
type sigV4Header struct {
	accessKey, date, region, service string
	signedHeaders                    []string
	signature                        string
}

func parseAuthorization(h string) (sigV4Header, error) {
	var out sigV4Header
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return out, api.Errorf(api.IncompleteSignature, "Authorization header requires the AWS4-HMAC-SHA256 algorithm.")
	}
	for _, part := range strings.Split(rest, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch name {
		case "Credential":
			f := strings.Split(value, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return out, api.Errorf(api.IncompleteSignature, "Credential must have the form KEY/DATE/REGION/SERVICE/aws4_request.")
			}
			out.accessKey, out.date, out.region, out.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			out.signedHeaders = strings.Split(value, ";")
		case "Signature":
			out.signature = value
		}
	}
	if out.accessKey == "" || out.signature == "" || len(out.signedHeaders) == 0 {
		return out, api.Errorf(api.IncompleteSignature, "Authorization header requires Credential, SignedHeaders and Signature.")
	}
	return out, nil
}

// Verify checks r's signature over body. On success it returns the caller;
// otherwise an *api.Error in the shape AWS answers with.
func (k *Keyring) Verify(r *http.Request, body []byte) (Caller, error) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return Caller{}, api.Errorf(api.MissingAuthToken, "Missing Authentication Token")
	}
	h, err := parseAuthorization(authz)
	if err != nil {
		return Caller{}, err
	}
	k.mu.RLock()
	cred, ok := k.keys[h.accessKey]
	k.mu.RUnlock()
	if !ok {
		return Caller{}, api.Errorf(api.UnrecognizedClient, "The security token included in the request is invalid.")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	signedAt, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return Caller{}, api.Errorf(api.IncompleteSignature, "X-Amz-Date header is missing or malformed.")
	}
	skew := k.MaxSkew
	if skew == 0 {
		skew = 15 * time.Minute
	}
	if now := time.Now(); signedAt.Before(now.Add(-skew)) || signedAt.After(now.Add(skew)) {
		return Caller{}, api.Errorf(api.InvalidSignature, "Signature expired: %s is now earlier than %s (%s - %s.)",
			amzDate, now.Add(-skew).UTC().Format("20060102T150405Z"), now.UTC().Format("20060102T150405Z"), skew)
	}

	// Re-sign a copy holding exactly the headers the client signed, with the
	// client's own time and scope, and compare the signatures.
	clone := &http.Request{Method: r.Method, URL: r.URL, Host: r.Host, Header: http.Header{}}
	for _, name := range h.signedHeaders {
		switch name {
		case "host":
		case "content-length":
			clone.ContentLength = r.ContentLength
			if clone.ContentLength < 0 {
				clone.ContentLength = int64(len(body))
			}
		default:
			clone.Header[http.CanonicalHeaderKey(name)] = r.Header.Values(name)
		}
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	switch claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed {
	case "", payloadHash:
	case "UNSIGNED-PAYLOAD":
		payloadHash = claimed
	default:
		return Caller{}, api.Errorf(api.InvalidSignature, "The provided 'x-amz-content-sha256' header does not match what was computed.")
	}
	creds := aws.Credentials{AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.SecretAccessKey,
		SessionToken: r.Header.Get("X-Amz-Security-Token")}
	if err := k.signer.SignHTTP(r.Context(), creds, clone, payloadHash, h.service, h.region, signedAt); err != nil {
		return Caller{}, fmt.Errorf("re-signing request: %w", err)
	}
	want, _ := parseAuthorization(clone.Header.Get("Authorization"))
	if subtle.ConstantTimeCompare([]byte(want.signature), []byte(h.signature)) != 1 {
		return Caller{}, api.Errorf(api.InvalidSignature, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return Caller{AccessKeyID: h.accessKey, Account: cred.Account, Region: h.region, Service: h.service}, nil
}
