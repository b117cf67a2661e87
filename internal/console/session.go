package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/auth"
)

// Signing in proves possession of an access key's secret without sending
// it: the page derives a SigV4 signing key from the secret (for the date
// of a server nonce, Kiln's region and the service "kiln-console") and
// signs the nonce and key ID with it; the secret never leaves the page.
// Nonces are single-use and expire. The session cookie is signed the same
// way, with the key derived for its expiry date, so any frontend holding
// the keyring verifies it, and a key that is removed or rotated ends its
// sessions.
const (
	signingService = "kiln-console"
	nonceTTL       = 5 * time.Minute
	// SessionTTL is how long a sign-in lasts.
	SessionTTL = 12 * time.Hour
	// CookieName is the session cookie.
	CookieName = "kiln_console"
)

var (
	errBadNonce = errors.New("the sign-in nonce is invalid, used or expired: reload the page")
	errBadProof = errors.New("unknown access key or wrong secret key")
)

// signingKey is SigV4's key derivation for secret on date (YYYYMMDD).
func signingKey(secret, date, region string) []byte {
	k := mac([]byte("AWS4"+secret), date)
	for _, s := range []string{region, signingService, "aws4_request"} {
		k = mac(k, s)
	}
	return k
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// SignInProof is what the page computes for a nonce (its own code in
// static/console.js does the same; tests sign in with this).
func SignInProof(accessKeyID, secret, region, nonce string) string {
	return hex.EncodeToString(mac(signingKey(secret, nonceDate(nonce), region), "KILN-CONSOLE-SIGNIN\n"+nonce+"\n"+accessKeyID))
}

// nonceDate is the UTC date of a nonce's issue time (its first field), so
// that the page and the server derive the key for the same day.
func nonceDate(nonce string) string {
	ts, _, _ := strings.Cut(nonce, ".")
	sec, _ := strconv.ParseInt(ts, 10, 64)
	return time.Unix(sec, 0).UTC().Format("20060102")
}

// sessions issues nonces and checks proofs and cookies.
type sessions struct {
	keyring *auth.Keyring
	region  string
	key     []byte // this process's nonce key

	mu   sync.Mutex
	used map[string]time.Time // nonces spent, until they expire
}

func newSessions(k *auth.Keyring, region string) *sessions {
	key := make([]byte, 32)
	rand.Read(key)
	return &sessions{keyring: k, region: region, key: key, used: map[string]time.Time{}}
}

// nonce is "UNIX.RANDOM.MAC".
func (s *sessions) nonce(now time.Time) string {
	b := make([]byte, 16)
	rand.Read(b)
	body := strconv.FormatInt(now.Unix(), 10) + "." + hex.EncodeToString(b)
	return body + "." + hex.EncodeToString(mac(s.key, body))
}

// signIn checks a proof and spends its nonce; it returns the credential.
func (s *sessions) signIn(now time.Time, accessKeyID, nonce, proof string) (auth.Credential, error) {
	i := strings.LastIndexByte(nonce, '.')
	if i < 0 || !hmac.Equal([]byte(nonce[i+1:]), []byte(hex.EncodeToString(mac(s.key, nonce[:i])))) {
		return auth.Credential{}, errBadNonce
	}
	ts, _, _ := strings.Cut(nonce, ".")
	sec, _ := strconv.ParseInt(ts, 10, 64)
	if age := now.Sub(time.Unix(sec, 0)); age < -time.Minute || age > nonceTTL {
		return auth.Credential{}, errBadNonce
	}
	c, ok := s.keyring.Lookup(accessKeyID)
	if !ok || !hmac.Equal([]byte(proof), []byte(SignInProof(accessKeyID, c.SecretAccessKey, s.region, nonce))) {
		return auth.Credential{}, errBadProof
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, exp := range s.used {
		if now.After(exp) {
			delete(s.used, n)
		}
	}
	if _, spent := s.used[nonce]; spent {
		return auth.Credential{}, errBadNonce
	}
	s.used[nonce] = time.Unix(sec, 0).Add(nonceTTL + time.Minute)
	return c, nil
}

// cookie is "KEYID.EXPIRY.SIGNATURE".
func (s *sessions) cookie(c auth.Credential, expires time.Time) string {
	body := c.AccessKeyID + "." + strconv.FormatInt(expires.Unix(), 10)
	return body + "." + s.cookieSig(c.SecretAccessKey, body, expires)
}

func (s *sessions) cookieSig(secret, body string, expires time.Time) string {
	return hex.EncodeToString(mac(signingKey(secret, expires.UTC().Format("20060102"), s.region), "KILN-CONSOLE-SESSION\n"+body))
}

// check returns the caller of a session cookie's value.
func (s *sessions) check(now time.Time, value string) (auth.Credential, error) {
	parts := strings.Split(value, ".")
	if len(parts) != 3 {
		return auth.Credential{}, errors.New("malformed session")
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || now.Unix() > exp {
		return auth.Credential{}, errors.New("session expired: sign in again")
	}
	c, ok := s.keyring.Lookup(parts[0])
	expires := time.Unix(exp, 0)
	if !ok || !hmac.Equal([]byte(parts[2]), []byte(s.cookieSig(c.SecretAccessKey, parts[0]+"."+parts[1], expires))) {
		return auth.Credential{}, errors.New("invalid session: sign in again")
	}
	return c, nil
}

// setCookie sets the session cookie (or clears it with value "").
func setCookie(w http.ResponseWriter, r *http.Request, value string, expires time.Time) {
	ck := &http.Cookie{Name: CookieName, Value: value, Path: "/console", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil}
	if value == "" {
		ck.MaxAge = -1
	} else {
		ck.Expires = expires
	}
	http.SetCookie(w, ck)
}
