package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/kiln-dev/kiln/internal/api"
)

var testCred = Credential{AccessKeyID: "AKIATESTTESTTESTTEST", SecretAccessKey: "secret/secret/secret", Account: "123456789012"}

func signed(t *testing.T, secret string, body []byte, at time.Time, mutate func(*http.Request)) *http.Request {
	t.Helper()
	r, _ := http.NewRequest("POST", "http://127.0.0.1:9000/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af%3Aprod/invocations?Qualifier=prod", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Amz-Log-Type", "Tail")
	sum := sha256.Sum256(body)
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testCred.AccessKeyID, SecretAccessKey: secret},
		r, hex.EncodeToString(sum[:]), "lambda", "us-east-1", at)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(r)
	}
	return r
}

func TestVerify(t *testing.T) {
	k := NewKeyring(testCred)
	body := []byte(`{"hello":"world"}`)
	now := time.Now()
	tests := []struct {
		name     string
		req      *http.Request
		body     []byte
		wantType string
	}{
		{"valid", signed(t, testCred.SecretAccessKey, body, now, nil), body, ""},
		{"tampered body", signed(t, testCred.SecretAccessKey, body, now, nil), []byte(`{"hello":"there"}`), api.InvalidSignature},
		{"tampered signed header", signed(t, testCred.SecretAccessKey, body, now, func(r *http.Request) { r.Header.Set("X-Amz-Log-Type", "None") }), body, api.InvalidSignature},
		{"tampered query", signed(t, testCred.SecretAccessKey, body, now, func(r *http.Request) { r.URL.RawQuery = "Qualifier=dev" }), body, api.InvalidSignature},
		{"wrong secret", signed(t, "not-the-secret", body, now, nil), body, api.InvalidSignature},
		{"unknown key", signed(t, testCred.SecretAccessKey, body, now, func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAUNKNOWN/20240101/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00")
		}), body, api.UnrecognizedClient},
		{"expired", signed(t, testCred.SecretAccessKey, body, now.Add(-20*time.Minute), nil), body, api.InvalidSignature},
		{"no authorization", signed(t, testCred.SecretAccessKey, body, now, func(r *http.Request) { r.Header.Del("Authorization") }), body, api.MissingAuthToken},
		{"unsigned header added is fine", signed(t, testCred.SecretAccessKey, body, now, func(r *http.Request) { r.Header.Set("X-Extra", "1") }), body, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := k.Verify(tt.req, tt.body)
			if tt.wantType == "" {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if c.Account != testCred.Account || c.Region != "us-east-1" || c.Service != "lambda" {
					t.Fatalf("caller = %+v", c)
				}
				return
			}
			var e *api.Error
			if !errors.As(err, &e) || e.Type != tt.wantType || e.Status != 403 && e.Status != 400 {
				t.Fatalf("verify: got %v, want %s", err, tt.wantType)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	k := NewKeyring(testCred)
	body := []byte(`{"hello":"world"}`)
	t := &testing.T{}
	r := signed(t, testCred.SecretAccessKey, body, time.Now(), nil)
	for b.Loop() {
		if _, err := k.Verify(r, body); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPassword(t *testing.T) {
	k := NewKeyring(Credential{AccessKeyID: "AKID1", SecretAccessKey: "s1", Account: "111111111111"})
	for _, tc := range []struct {
		user, pass, account string
		ok                  bool
	}{
		{"AKID1", "s1", "111111111111", true},
		{"AKID1", "s2", "", false},
		{"AKID1", "", "", false},
		{"AKID2", "s1", "", false},
		{"", "", "", false},
	} {
		if account, ok := k.Password(tc.user, tc.pass); ok != tc.ok || account != tc.account {
			t.Errorf("Password(%q, %q) = %q, %v", tc.user, tc.pass, account, ok)
		}
	}
}
