package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
)

// Sessions issues and checks the temporary credentials Kiln gives each
// execution environment, as Lambda gives a function its execution role's:
// an access key id (ASIA...), a secret and a session token, valid until
// an expiry and for one account. They are stateless: the token carries
// the account, the key id, the session's name and the expiry, with an
// HMAC over them, and the secret is derived from the token, so that any
// process holding the key (a worker issues, frontends and control planes
// verify) checks them without sharing a table.
type Sessions struct {
	key []byte
}

// NewSessions returns sessions signed with key (at least 32 random bytes).
func NewSessions(key []byte) *Sessions { return &Sessions{key: key} }

// SessionCredentials are one environment's credentials.
type SessionCredentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	Expiration                                 time.Time
}

// SessionLifetime is how long an environment's credentials are valid.
// Lambda's last as long as the execution role's session; an environment
// of Kiln is retired long before (idle timeout), and a new one gets new
// credentials.
const SessionLifetime = 12 * time.Hour

const tokenPrefix = "KILN1."

type sessionClaims struct {
	Account string `json:"a"`
	KeyID   string `json:"k"`
	Name    string `json:"n"`
	Expires int64  `json:"e"`
}

// Issue makes credentials for account, naming the session (the function).
func (s *Sessions) Issue(account, name string, ttl time.Duration) SessionCredentials {
	c := sessionClaims{Account: account, KeyID: "ASIA" + randomKeyID(), Name: name, Expires: time.Now().Add(ttl).Unix()}
	b, _ := json.Marshal(c)
	payload := base64.RawURLEncoding.EncodeToString(b)
	token := tokenPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(s.mac("token", payload))
	return SessionCredentials{AccessKeyID: c.KeyID, SecretAccessKey: s.secret(payload), SessionToken: token,
		Expiration: time.Unix(c.Expires, 0)}
}

func (s *Sessions) mac(purpose, payload string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("kiln-session-" + purpose + "\n" + payload))
	return m.Sum(nil)
}

func (s *Sessions) secret(payload string) string {
	return base64.StdEncoding.EncodeToString(s.mac("secret", payload))[:40]
}

var (
	errBadToken     = api.Errorf(api.UnrecognizedClient, "The security token included in the request is invalid.")
	errExpiredToken = &api.Error{Status: http.StatusForbidden, Type: "ExpiredTokenException", Message: "The security token included in the request is expired"}
)

// credential checks a session token for accessKeyID at now and returns
// the credential it stands for and the session's name.
func (s *Sessions) credential(accessKeyID, token string, now time.Time) (Credential, string, error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	payload, sig, ok2 := strings.Cut(rest, ".")
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if !ok || !ok2 || err != nil || !hmac.Equal(mac, s.mac("token", payload)) {
		return Credential{}, "", errBadToken
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	var c sessionClaims
	if err != nil || json.Unmarshal(b, &c) != nil || c.KeyID != accessKeyID || c.Account == "" {
		return Credential{}, "", errBadToken
	}
	if now.Unix() >= c.Expires {
		return Credential{}, "", errExpiredToken
	}
	return Credential{AccessKeyID: c.KeyID, SecretAccessKey: s.secret(payload), Account: c.Account}, c.Name, nil
}

// randomKeyID is the 16 characters after an access key id's prefix.
func randomKeyID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" // 32: a byte's low 5 bits pick evenly
	b := make([]byte, 16)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[b[i]&31]
	}
	return string(b)
}
