// Package auth authenticates requests signed with AWS Signature Version 4 and
// tells handlers which account made them.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
)

// Credential is one access key pair and the account it belongs to.
type Credential struct {
	AccessKeyID     string
	SecretAccessKey string
	Account         string
}

// Keyring verifies SigV4 signatures against a set of known keys.
type Keyring struct {
	mu          sync.RWMutex
	keys        map[string]Credential
	signingKeys signingKeys
	// MaxSkew is how far X-Amz-Date may be from now; zero means 15 minutes, as AWS.
	MaxSkew time.Duration
	// Region, when set, is the region a credential scope must name.
	Region string
	// Services, when set, names the services a request's credential scope
	// may name (Kiln serves Lambda, CloudWatch Logs and SQS on one
	// endpoint); the first is the one an error names.
	Services func(r *http.Request) []string
	// Sessions, when set, also accepts the temporary credentials it issued
	// to execution environments (an ASIA... key with a session token).
	Sessions *Sessions
	// MaxUnverified bounds the body bytes that requests hold, together,
	// before their signatures can be checked (clients that do not sign
	// X-Amz-Content-Sha256 send the body first); beyond it a request is
	// refused with a retryable 429. Zero means 512 MB.
	MaxUnverified int64
	unverified    atomic.Int64
}

// NewKeyring returns a keyring holding creds.
func NewKeyring(creds ...Credential) *Keyring {
	k := &Keyring{keys: map[string]Credential{}}
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

// Lookup returns a known key (the console derives its session keys from
// the secret, as SigV4 derives signing keys).
func (k *Keyring) Lookup(accessKeyID string) (Credential, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	c, ok := k.keys[accessKeyID]
	return c, ok
}

// Remove forgets a key: requests signed with it fail from now on.
func (k *Keyring) Remove(accessKeyID string) {
	k.mu.Lock()
	delete(k.keys, accessKeyID)
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
	// Session names the execution environment's session (its function)
	// when the caller signed with the temporary credentials Kiln gave it.
	Session string
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
	s, err := k.head(r)
	if err != nil {
		return Caller{}, err
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	if claimed, ok := s.signedPayloadHash(r); ok && claimed != hash {
		return Caller{}, errPayloadHash
	}
	return s.verify(r, hash)
}

var errPayloadHash = api.Errorf(api.InvalidSignature, "The provided 'x-amz-content-sha256' header does not match what was computed.")

// signature is a request's Authorization header that passed every check
// that needs no body: a known key, a fresh date, Kiln's scope.
type signature struct {
	k        *Keyring
	h        sigV4Header
	cred     Credential
	session  string // a temporary credential's session name
	signedAt time.Time
}

// head checks what can be checked of r before its body is read, so that a
// caller without a valid key and scope gets nothing buffered.
func (k *Keyring) head(r *http.Request) (signature, error) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return signature{}, api.Errorf(api.MissingAuthToken, "Missing Authentication Token")
	}
	h, err := parseAuthorization(authz)
	if err != nil {
		return signature{}, err
	}
	k.mu.RLock()
	cred, ok := k.keys[h.accessKey]
	k.mu.RUnlock()
	var session string
	if token := r.Header.Get("X-Amz-Security-Token"); !ok && token != "" && k.Sessions != nil {
		if cred, session, err = k.Sessions.credential(h.accessKey, token, time.Now()); err != nil {
			return signature{}, err
		}
		ok = true
	}
	if !ok {
		return signature{}, api.Errorf(api.UnrecognizedClient, "The security token included in the request is invalid.")
	}
	if k.Services != nil {
		if want := k.Services(r); !slices.Contains(want, h.service) {
			return signature{}, api.Errorf(api.InvalidSignature, "Credential should be scoped to correct service: '%s'.", want[0])
		}
	}
	if k.Region != "" && h.region != k.Region {
		return signature{}, api.Errorf(api.InvalidSignature, "Credential should be scoped to a valid region.")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	signedAt, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return signature{}, api.Errorf(api.IncompleteSignature, "X-Amz-Date header is missing or malformed.")
	}
	skew := k.MaxSkew
	if skew == 0 {
		skew = 15 * time.Minute
	}
	if now := time.Now(); signedAt.Before(now.Add(-skew)) || signedAt.After(now.Add(skew)) {
		return signature{}, api.Errorf(api.InvalidSignature, "Signature expired: %s is now earlier than %s (%s - %s.)",
			amzDate, now.Add(-skew).UTC().Format("20060102T150405Z"), now.UTC().Format("20060102T150405Z"), skew)
	}
	// Lambda and CloudWatch Logs sign their payloads: a body left out of
	// the signature (S3's UNSIGNED-PAYLOAD, its chunked streaming) could be
	// swapped by anyone on the path.
	if claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed != "" && !isSHA256Hex(claimed) {
		return signature{}, api.Errorf(api.InvalidSignature, "x-amz-content-sha256 must be the hex SHA-256 of the payload; %q is not accepted by this service.", claimed)
	}
	return signature{k: k, h: h, cred: cred, session: session, signedAt: signedAt}, nil
}

// signedPayloadHash is the body's hash as the client signed it in
// X-Amz-Content-Sha256, when it did.
func (s signature) signedPayloadHash(r *http.Request) (string, bool) {
	claimed := r.Header.Get("X-Amz-Content-Sha256")
	return claimed, claimed != "" && s.signs("x-amz-content-sha256")
}

func (s signature) signs(header string) bool {
	return slices.Contains(s.h.signedHeaders, header)
}

func isSHA256Hex(s string) bool {
	_, err := hex.DecodeString(s)
	return len(s) == 2*sha256.Size && err == nil
}

// verify checks the signature, taking payloadHash as the body's hash.
func (s signature) verify(r *http.Request, payloadHash string) (Caller, error) {
	// Sign what the client signed (its headers, time and scope) and compare.
	if subtle.ConstantTimeCompare([]byte(s.expected(r, payloadHash)), []byte(s.h.signature)) != 1 {
		return Caller{}, api.Errorf(api.InvalidSignature, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	return Caller{AccessKeyID: s.h.accessKey, Account: s.cred.Account, Region: s.h.region, Service: s.h.service, Session: s.session}, nil
}

// dropUnsigned removes the x-amz-* headers the client did not sign: as in
// AWS, only what the signature covers is acted on.
func (s signature) dropUnsigned(r *http.Request) {
	for name := range r.Header {
		if l := strings.ToLower(name); strings.HasPrefix(l, "x-amz-") && !s.signs(l) {
			delete(r.Header, name)
		}
	}
}
