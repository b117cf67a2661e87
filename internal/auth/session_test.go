package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/kiln-dev/kiln/internal/api"
)

// A request signed as the AWS SDKs sign with temporary credentials (the
// session token in X-Amz-Security-Token, signed).
func signedSession(t *testing.T, c SessionCredentials) *http.Request {
	t.Helper()
	body := []byte(`{}`)
	r, _ := http.NewRequest("POST", "http://127.0.0.1:9002/2015-03-31/functions/f/invocations", bytes.NewReader(body))
	sum := sha256.Sum256(body)
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken},
		r, hex.EncodeToString(sum[:]), "lambda", "us-east-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSessions(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	k := NewKeyring(testCred)
	k.Sessions = NewSessions(key)
	good := k.Sessions.Issue("210987654321", "fn", time.Hour)
	if !strings.HasPrefix(good.AccessKeyID, "ASIA") || len(good.AccessKeyID) != 20 || len(good.SecretAccessKey) != 40 {
		t.Fatalf("credentials %+v", good)
	}
	other := NewSessions(bytes.Repeat([]byte{8}, 32)).Issue("210987654321", "fn", time.Hour)
	second := k.Sessions.Issue("123456789012", "g", time.Hour)
	for _, tc := range []struct {
		name     string
		creds    SessionCredentials
		edit     func(*http.Request)
		wantType string
	}{
		{"valid", good, nil, ""},
		{"expired", k.Sessions.Issue("210987654321", "fn", -time.Second), nil, "ExpiredTokenException"},
		{"another Kiln's", other, nil, api.UnrecognizedClient},
		{"wrong secret", SessionCredentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: second.SecretAccessKey, SessionToken: good.SessionToken}, nil, api.InvalidSignature},
		{"another session's token", SessionCredentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: good.SecretAccessKey, SessionToken: second.SessionToken}, nil, api.UnrecognizedClient},
		{"another session's claims under this one's MAC", good, func(r *http.Request) {
			goodPayload, goodMAC, _ := strings.Cut(strings.TrimPrefix(good.SessionToken, tokenPrefix), ".")
			otherPayload, _, _ := strings.Cut(strings.TrimPrefix(second.SessionToken, tokenPrefix), ".")
			if goodPayload == otherPayload {
				t.Fatal("two sessions, one payload")
			}
			r.Header.Set("X-Amz-Security-Token", tokenPrefix+otherPayload+"."+goodMAC)
		}, api.UnrecognizedClient},
		{"no token", good, func(r *http.Request) { r.Header.Del("X-Amz-Security-Token") }, api.UnrecognizedClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := signedSession(t, tc.creds)
			if tc.edit != nil {
				tc.edit(r)
			}
			c, err := k.Verify(r, []byte(`{}`))
			var e *api.Error
			switch {
			case tc.wantType == "" && err != nil:
				t.Fatal(err)
			case tc.wantType == "" && (c.Account != "210987654321" || c.Session != "fn"):
				t.Fatalf("caller %+v", c)
			case tc.wantType != "" && (!errors.As(err, &e) || e.Type != tc.wantType || e.Status != http.StatusForbidden):
				t.Fatalf("err %v; want %s (403)", err, tc.wantType)
			}
		})
	}
	// A keyring without sessions knows no temporary key.
	if _, err := NewKeyring(testCred).Verify(signedSession(t, good), []byte(`{}`)); err == nil {
		t.Fatal("a keyring without sessions accepted a session's credentials")
	}
}

// BenchmarkVerifySession is the cost of a session's token (MAC, claims,
// derived secret) on top of a signature check with a stored key.
func BenchmarkVerifySession(b *testing.B) {
	k := NewKeyring(testCred)
	k.Sessions = NewSessions(bytes.Repeat([]byte{7}, 32))
	s := k.Sessions.Issue("123456789012", "fn", time.Hour)
	for _, tc := range []struct {
		name  string
		creds aws.Credentials
	}{
		{"key", aws.Credentials{AccessKeyID: testCred.AccessKeyID, SecretAccessKey: testCred.SecretAccessKey}},
		{"session", aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey, SessionToken: s.SessionToken}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			body := []byte(`{}`)
			sum := sha256.Sum256(body)
			r, _ := http.NewRequest("POST", "http://127.0.0.1:9002/2015-03-31/functions/f/invocations", bytes.NewReader(body))
			if err := v4.NewSigner().SignHTTP(context.Background(), tc.creds, r, hex.EncodeToString(sum[:]), "lambda", "us-east-1", time.Now()); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := k.Verify(r, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
