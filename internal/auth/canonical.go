package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The signature a request should carry is computed here as the AWS SDK's
// v4 signer computes it when it re-signs a copy of the request holding the
// headers the client signed (with the client's time and scope): same
// canonical request, byte for byte, quirks included (which headers it
// always adds or never signs, how it sorts the query), but built in one
// buffer and with the signing key derived once per secret, day, region and
// service instead of on every request. The SDK's signer stays the
// reference: FuzzExpectedSignature compares the two on arbitrary requests.

// expected is the hex signature of r as the client claims to have signed
// it (s's headers, time and scope), over a body hashing to payloadHash.
func (s signature) expected(r *http.Request, payloadHash string) string {
	amzDate := s.signedAt.UTC().Format("20060102T150405Z")
	day := amzDate[:8]
	buf := make([]byte, 0, 512)
	buf = append(buf, r.Method...)
	buf = append(buf, '\n')
	buf = appendEscapedPath(buf, uriPath(r.URL))
	buf = append(buf, '\n')
	buf = appendQuery(buf, r.URL.Query())
	buf = append(buf, '\n')
	buf, signedList := s.appendHeaders(buf, r, amzDate)
	buf = append(buf, '\n')
	buf = append(buf, signedList...)
	buf = append(buf, '\n')
	buf = append(buf, payloadHash...)
	canonical := sha256.Sum256(buf)

	sts := make([]byte, 0, 128)
	sts = append(sts, "AWS4-HMAC-SHA256\n"...)
	sts = append(sts, amzDate...)
	sts = append(sts, '\n')
	sts = append(sts, day...)
	sts = append(sts, '/')
	sts = append(sts, s.h.region...)
	sts = append(sts, '/')
	sts = append(sts, s.h.service...)
	sts = append(sts, "/aws4_request\n"...)
	sts = hex.AppendEncode(sts, canonical[:])
	return s.k.signingKeys.key(s.cred.SecretAccessKey, day, s.h.region, s.h.service).sign(sts)
}

// signedValue is one header the re-signed copy carries: its lower-case name
// and values.
type signedValue struct {
	name   string
	values []string
}

// appendHeaders appends the canonical headers and returns the signed
// header list. Like the SDK on the copy: host always (its default port
// dropped), content-length when signed and above 0, X-Amz-Date and the
// session token always set from the request's own, and never the headers
// the SDK leaves out of signatures.
func (s signature) appendHeaders(buf []byte, r *http.Request, amzDate string) ([]byte, string) {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	if port := portOnly(host); port != "" && isDefaultPort(r.URL.Scheme, port) {
		host = stripPort(host)
	}
	headers := make([]signedValue, 0, len(s.h.signedHeaders)+3)
	headers = append(headers, signedValue{name: "host"})
	add := func(name string, values []string) {
		headers = append(headers, signedValue{name, values})
	}
	var length bool
	token := r.Header.Get("X-Amz-Security-Token")
	for _, name := range s.h.signedHeaders {
		switch name {
		case "host":
			continue
		case "content-length":
			length = true
			continue
		}
		key := http.CanonicalHeaderKey(name)
		switch {
		case ignoredHeaders[key], strings.EqualFold(key, "Content-Length"):
			continue
		case key == "X-Amz-Date", key == "X-Amz-Security-Token" && token != "":
			continue // set below, as the SDK sets them
		}
		lower := strings.ToLower(key)
		if slices.ContainsFunc(headers, func(h signedValue) bool { return h.name == lower }) {
			continue // named twice (or host): the copy holds it once
		}
		add(lower, r.Header.Values(name))
	}
	if length && r.ContentLength > 0 {
		add("content-length", []string{strconv.FormatInt(r.ContentLength, 10)})
	}
	// The SDK signs these whether or not the client did.
	add("x-amz-date", []string{amzDate})
	if token != "" {
		add("x-amz-security-token", []string{token})
	}
	slices.SortFunc(headers, func(a, b signedValue) int { return strings.Compare(a.name, b.name) })
	var list strings.Builder
	for i, h := range headers {
		if i > 0 {
			list.WriteByte(';')
		}
		list.WriteString(h.name)
		buf = append(buf, h.name...)
		buf = append(buf, ':')
		if h.name == "host" {
			buf = append(buf, stripExcessSpaces(host)...)
		} else {
			for j, v := range h.values {
				if j > 0 {
					buf = append(buf, ',')
				}
				buf = append(buf, strings.TrimSpace(stripExcessSpaces(v))...)
			}
		}
		buf = append(buf, '\n')
	}
	return buf, list.String()
}

// ignoredHeaders are those the SDK never signs (its IgnoredHeaders).
var ignoredHeaders = map[string]bool{"Authorization": true, "User-Agent": true, "X-Amzn-Trace-Id": true, "Expect": true, "Transfer-Encoding": true}

// uriPath is the request's path as the SDK takes it, before escaping.
func uriPath(u *url.URL) string {
	var p string
	if u.Opaque != "" {
		opaque, _, _ := strings.Cut(u.Opaque, "?")
		opaque = strings.TrimPrefix(opaque, "//")
		if i := strings.IndexByte(opaque, '/'); i >= 0 {
			p = opaque[i:]
		}
	} else {
		p = u.EscapedPath()
	}
	if p == "" {
		return "/"
	}
	return p
}

// appendEscapedPath appends path with every byte but '/' and RFC 3986's
// unreserved ones percent-encoded (so an escape is escaped again), as the
// SDK's httpbinding.EscapePath does.
func appendEscapedPath(buf []byte, path string) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~', c == '/':
			buf = append(buf, c)
		default:
			buf = append(buf, '%', hexDigits[c>>4], hexDigits[c&15])
		}
	}
	return buf
}

// appendQuery appends the canonical query: each name and value escaped
// (a space as %20), the pairs sorted after escaping.
func appendQuery(buf []byte, q url.Values) []byte {
	type pair struct{ k, v string }
	var pairs []pair
	for k, vs := range q {
		ek := escapeQuery(k)
		for _, v := range vs {
			pairs = append(pairs, pair{ek, escapeQuery(v)})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	for i, p := range pairs {
		if i > 0 {
			buf = append(buf, '&')
		}
		buf = append(buf, p.k...)
		buf = append(buf, '=')
		buf = append(buf, p.v...)
	}
	return buf
}

func escapeQuery(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

// stripExcessSpaces trims leading and trailing spaces and folds inner runs
// of spaces into one.
func stripExcessSpaces(s string) string {
	s = strings.Trim(s, " ")
	if !strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func portOnly(hostport string) string {
	colon := strings.IndexByte(hostport, ':')
	if colon == -1 {
		return ""
	}
	if i := strings.Index(hostport, "]:"); i != -1 {
		return hostport[i+len("]:"):]
	}
	if strings.Contains(hostport, "]") {
		return ""
	}
	return hostport[colon+1:]
}

func stripPort(hostport string) string {
	colon := strings.IndexByte(hostport, ':')
	if colon == -1 {
		return hostport
	}
	if i := strings.IndexByte(hostport, ']'); i != -1 {
		return strings.TrimPrefix(hostport[:i], "[")
	}
	return hostport[:colon]
}

func isDefaultPort(scheme, port string) bool {
	scheme = strings.ToLower(scheme)
	return scheme == "http" && port == "80" || scheme == "https" && port == "443"
}

// signingKeys caches derived signing keys: four HMACs that change only
// with the secret, the day, the region and the service.
type signingKeys struct {
	mu   sync.RWMutex
	keys map[signingScope]*signingKey
}

// signingKey is a derived key and HMACs keyed with it, ready for reuse.
type signingKey struct {
	key  []byte
	macs sync.Pool
}

// sign is the hex HMAC-SHA256 of sts under the key.
func (k *signingKey) sign(sts []byte) string {
	m, _ := k.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, k.key)
	}
	m.Write(sts)
	var sum [sha256.Size]byte
	out := hex.EncodeToString(m.Sum(sum[:0]))
	m.Reset()
	k.macs.Put(m)
	return out
}

type signingScope struct{ secret, day, region, service string }

// maxSigningKeys bounds the cache; past it, it starts over (keys are cheap
// to derive again, and scopes are few: callers pick region and service).
const maxSigningKeys = 4096

func (c *signingKeys) key(secret, day, region, service string) *signingKey {
	scope := signingScope{secret, day, region, service}
	c.mu.RLock()
	k, ok := c.keys[scope]
	c.mu.RUnlock()
	if ok {
		return k
	}
	derived := hmacSHA256([]byte("AWS4"+secret), day)
	derived = hmacSHA256(derived, region)
	derived = hmacSHA256(derived, service)
	k = &signingKey{key: hmacSHA256(derived, "aws4_request")}
	c.mu.Lock()
	if c.keys == nil || len(c.keys) >= maxSigningKeys {
		c.keys = map[signingScope]*signingKey{}
	}
	c.keys[scope] = k
	c.mu.Unlock()
	return k
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
