package sts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
)

// STS behind SigV4 as Kiln serves it, called with a signed request of the
// query protocol (the AWS CLI's, boto3's) or the JSON one.
func TestGetCallerIdentity(t *testing.T) {
	k := auth.NewKeyring(auth.Credential{AccessKeyID: "AKIDSTS", SecretAccessKey: "secret", Account: "123456789012"})
	k.Sessions = auth.NewSessions([]byte("0123456789abcdef0123456789abcdef"))
	limit := func(*http.Request) (int64, *api.Error) { return 1 << 20, api.Errorf(api.RequestTooLarge, "too large") }
	srv := httptest.NewServer(auth.Middleware(k, limit, Handler()))
	defer srv.Close()
	post := func(creds aws.Credentials, target, body string) (int, string) {
		t.Helper()
		r, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		if target != "" {
			r.Header.Set("X-Amz-Target", target)
			r.Header.Set("Content-Type", "application/x-amz-json-1.0")
		}
		sum := sha256.Sum256([]byte(body))
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), "sts", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	key := aws.Credentials{AccessKeyID: "AKIDSTS", SecretAccessKey: "secret"}

	status, body := post(key, "", "Action=GetCallerIdentity&Version=2011-06-15")
	var res struct {
		Result    Identity `xml:"GetCallerIdentityResult"`
		RequestID string   `xml:"ResponseMetadata>RequestId"`
	}
	if status != 200 || xml.Unmarshal([]byte(body), &res) != nil || res.RequestID == "" ||
		res.Result != (Identity{Account: "123456789012", Arn: "arn:aws:iam::123456789012:root", UserId: "123456789012"}) {
		t.Fatalf("query GetCallerIdentity: %d %s", status, body)
	}

	s := k.Sessions.Issue("123456789012", "my-function", time.Minute)
	status, body = post(aws.Credentials{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey, SessionToken: s.SessionToken},
		TargetPrefix+"GetCallerIdentity", "{}")
	var id Identity
	if status != 200 || json.Unmarshal([]byte(body), &id) != nil ||
		id.Arn != "arn:aws:sts::123456789012:assumed-role/kiln-function/my-function" || id.Account != "123456789012" {
		t.Fatalf("JSON GetCallerIdentity with session credentials: %d %s", status, body)
	}

	status, body = post(key, "", "Action=AssumeRole&Version=2011-06-15")
	if status != 400 || !strings.Contains(body, "<Code>InvalidAction</Code>") {
		t.Fatalf("AssumeRole: %d %s", status, body)
	}
	status, body = post(key, TargetPrefix+"AssumeRole", "{}")
	if status != 400 || !strings.Contains(body, `"__type":"InvalidAction"`) {
		t.Fatalf("JSON AssumeRole: %d %s", status, body)
	}
}
