package funcurl

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

func TestEvent(t *testing.T) {
	at := time.Date(2026, 3, 12, 19, 3, 58, 390e6, time.UTC)
	base := func() *Request {
		return &Request{Method: "GET", RawPath: "/my/path", Protocol: "HTTP/1.1", Header: http.Header{}, SourceIP: "10.0.0.9",
			Time: at, RequestID: "req-1", Account: "123456789012", URLID: "abcdefghijklmnopqrstuvwxyz012345",
			DomainName: "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.localhost"}
	}
	tests := []struct {
		name   string
		edit   func(*Request)
		check  map[string]any // JSON paths (dotted) → value
		absent []string
	}{
		{"plain GET", func(r *Request) { r.Header.Set("User-Agent", "curl/8") }, map[string]any{
			"version": "2.0", "routeKey": "$default", "rawPath": "/my/path", "rawQueryString": "",
			"headers.user-agent": "curl/8", "isBase64Encoded": false,
			"requestContext.accountId": "123456789012", "requestContext.apiId": "abcdefghijklmnopqrstuvwxyz012345",
			"requestContext.domainPrefix": "abcdefghijklmnopqrstuvwxyz012345", "requestContext.stage": "$default",
			"requestContext.routeKey": "$default", "requestContext.requestId": "req-1", "requestContext.authentication": nil,
			"requestContext.http.method": "GET", "requestContext.http.path": "/my/path", "requestContext.http.protocol": "HTTP/1.1",
			"requestContext.http.sourceIp": "10.0.0.9", "requestContext.http.userAgent": "curl/8",
			"requestContext.time": "12/Mar/2026:19:03:58 +0000", "requestContext.timeEpoch": float64(at.UnixMilli()),
		}, []string{"body", "cookies", "queryStringParameters", "requestContext.authorizer"}},
		{"repeated headers and query, cookies", func(r *Request) {
			r.RawQuery = "p1=v1&p1=v2&p2=a%20b"
			r.Header["X-Multi"] = []string{"a", "b"}
			r.Header.Set("Cookie", "c1=1; c2=2")
		}, map[string]any{
			"rawQueryString": "p1=v1&p1=v2&p2=a%20b", "queryStringParameters.p1": "v1,v2", "queryStringParameters.p2": "a b",
			"headers.x-multi": "a,b", "cookies": []any{"c1=1", "c2=2"},
		}, []string{"headers.cookie"}},
		{"text body", func(r *Request) {
			r.Method, r.Body = "POST", []byte(`{"a":1}`)
			r.Header.Set("Content-Type", "application/json; charset=utf-8")
		}, map[string]any{"body": `{"a":1}`, "isBase64Encoded": false}, nil},
		{"binary body", func(r *Request) {
			r.Method, r.Body = "POST", []byte{0, 1, 2, 'a'}
			r.Header.Set("Content-Type", "application/octet-stream")
		}, map[string]any{"body": "AAECYQ==", "isBase64Encoded": true}, nil},
		{"body without a type", func(r *Request) { r.Method, r.Body = "POST", []byte("x") }, map[string]any{"body": "eA==", "isBase64Encoded": true}, nil},
		{"AWS_IAM caller", func(r *Request) {
			r.IAM = &IAM{AccessKey: "AKIA1", AccountID: "123456789012", CallerID: "123456789012", UserArn: "arn:aws:iam::123456789012:root", UserID: "123456789012"}
		}, map[string]any{"requestContext.authorizer.iam.accessKey": "AKIA1", "requestContext.authorizer.iam.userArn": "arn:aws:iam::123456789012:root",
			"requestContext.authorizer.iam.cognitoIdentity": nil}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.edit(r)
			var doc map[string]any
			if err := json.Unmarshal(Event(r), &doc); err != nil {
				t.Fatal(err)
			}
			for path, want := range tc.check {
				got, ok := lookup(doc, path)
				if !ok || !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v (present %v), want %#v", path, got, ok, want)
				}
			}
			for _, path := range tc.absent {
				if got, ok := lookup(doc, path); ok {
					t.Errorf("%s present (%#v), want absent", path, got)
				}
			}
		})
	}
}

// lookup follows a dotted path; the last segment may contain dots only if
// it is a header name (none here do).
func lookup(doc map[string]any, path string) (any, bool) {
	var cur any = doc
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func TestMapResult(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		status  int
		header  http.Header
		body    string
		invalid bool
	}{
		{"object without statusCode", `{"a":1}`, 200, http.Header{"Content-Type": {"application/json"}}, `{"a":1}`, false},
		{"string", `"hello"`, 200, http.Header{"Content-Type": {"application/json"}}, `hello`, false},
		{"number", `42`, 200, http.Header{"Content-Type": {"application/json"}}, `42`, false},
		{"null", `null`, 200, http.Header{"Content-Type": {"application/json"}}, `null`, false},
		{"structured", `{"statusCode":418,"headers":{"content-type":"text/plain","x-a":"b"},"cookies":["s=1; Secure","t=2"],"body":"teapot"}`,
			418, http.Header{"Content-Type": {"text/plain"}, "X-A": {"b"}, "Set-Cookie": {"s=1; Secure", "t=2"}}, "teapot", false},
		{"structured, default type, no body", `{"statusCode":204}`, 204, http.Header{"Content-Type": {"application/json"}}, "", false},
		{"base64 body", `{"statusCode":200,"isBase64Encoded":true,"body":"AAE=","headers":{"Content-Type":"image/png"}}`,
			200, http.Header{"Content-Type": {"image/png"}}, "\x00\x01", false},
		{"bad base64", `{"statusCode":200,"isBase64Encoded":true,"body":"%%%"}`, 0, nil, "", true},
		{"status out of range", `{"statusCode":99}`, 0, nil, "", true},
		{"status not a number", `{"statusCode":"200"}`, 0, nil, "", true},
		{"header breaking the head", `{"statusCode":200,"headers":{"x":"a\r\nInjected: 1"}}`, 0, nil, "", true},
		{"framing header", `{"statusCode":200,"headers":{"Content-Length":"5"}}`, 0, nil, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := MapResult([]byte(tc.payload))
			if tc.invalid {
				if !errors.Is(err, ErrInvalidResponse) {
					t.Fatalf("err = %v, want ErrInvalidResponse", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.Status != tc.status || !reflect.DeepEqual(out.Header, tc.header) || string(out.Body) != tc.body {
				t.Fatalf("got %d %v %q, want %d %v %q", out.Status, out.Header, out.Body, tc.status, tc.header, tc.body)
			}
		})
	}
}

func TestPrelude(t *testing.T) {
	full := `{"statusCode":201,"headers":{"content-type":"text/plain"},"cookies":["a=1"]}` + "\x00\x00\x00\x00\x00\x00\x00\x00" + "body"
	for cut := 0; cut < len(full); cut++ {
		head, rest, done, err := Prelude([]byte(full[:cut]))
		end := strings.Index(full, "\x00") + 8
		if cut < end {
			if done || err != nil {
				t.Fatalf("cut %d: done %v err %v before the prelude ended", cut, done, err)
			}
			continue
		}
		if !done || err != nil || head.Status != 201 || head.Header.Get("Set-Cookie") != "a=1" || string(rest) != full[end:cut] {
			t.Fatalf("cut %d: %v %v %+v %q", cut, done, err, head, rest)
		}
	}
	if _, _, _, err := Prelude([]byte("not json\x00\x00\x00\x00\x00\x00\x00\x00")); !errors.Is(err, ErrInvalidResponse) {
		t.Fatalf("invalid prelude: %v", err)
	}
	big := []byte(strings.Repeat("x", MaxPrelude+1))
	if _, _, _, err := Prelude(big); !errors.Is(err, ErrInvalidResponse) {
		t.Fatalf("prelude over MaxPrelude: %v", err)
	}
}

func TestCors(t *testing.T) {
	c := &Cors{AllowOrigins: []string{"https://a.example"}, AllowMethods: []string{"GET", "POST"}, AllowHeaders: []string{"x-custom"},
		ExposeHeaders: []string{"x-out"}, MaxAge: 300}
	star := &Cors{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}}
	creds := &Cors{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowCredentials: true}
	tests := []struct {
		name   string
		cors   *Cors
		origin string
		method string
		want   http.Header
	}{
		{"allowed", c, "https://a.example", "POST", http.Header{"Access-Control-Allow-Origin": {"https://a.example"},
			"Access-Control-Allow-Methods": {"GET,POST"}, "Access-Control-Allow-Headers": {"x-custom"}, "Access-Control-Max-Age": {"300"}, "Vary": {"Origin"}}},
		{"other origin", c, "https://evil.example", "POST", http.Header{}},
		{"method not allowed", c, "https://a.example", "DELETE", http.Header{}},
		{"wildcard", star, "https://x.example", "PATCH", http.Header{"Access-Control-Allow-Origin": {"*"}, "Access-Control-Allow-Methods": {"*"}}},
		{"wildcard with credentials echoes the origin", creds, "https://x.example", "GET", http.Header{"Access-Control-Allow-Origin": {"https://x.example"},
			"Access-Control-Allow-Methods": {"*"}, "Access-Control-Allow-Credentials": {"true"}, "Vary": {"Origin"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.cors.Preflight(http.Header{"Origin": {tc.origin}, "Access-Control-Request-Method": {tc.method}})
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("preflight = %v, want %v", got, tc.want)
			}
		})
	}
	// An actual request: Kiln's headers replace the function's.
	h := http.Header{"Access-Control-Allow-Origin": {"*"}, "X-Own": {"1"}}
	c.Apply("https://a.example", h)
	want := http.Header{"Access-Control-Allow-Origin": {"https://a.example"}, "Access-Control-Expose-Headers": {"x-out"}, "Vary": {"Origin"}, "X-Own": {"1"}}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("apply = %v, want %v", h, want)
	}
	h = http.Header{"Access-Control-Allow-Origin": {"*"}}
	c.Apply("https://evil.example", h)
	if len(h) != 0 {
		t.Fatalf("apply for a refused origin left %v", h)
	}
	r, _ := http.NewRequest(http.MethodOptions, "/", nil)
	r.Header.Set("Origin", "https://a.example")
	if IsPreflight(r) {
		t.Fatal("OPTIONS without Access-Control-Request-Method is not a preflight")
	}
	r.Header.Set("Access-Control-Request-Method", "GET")
	if !IsPreflight(r) {
		t.Fatal("preflight not recognised")
	}
}

// The event reads into aws-lambda-go's own type, and that library's
// response type maps back: the field names are the runtime library's.
func TestAWSLambdaGoTypes(t *testing.T) {
	r := &Request{Method: "PUT", RawPath: "/p", RawQuery: "a=1", Protocol: "HTTP/1.1", Header: http.Header{"Content-Type": {"text/plain"},
		"Cookie": {"k=v"}, "User-Agent": {"ua"}}, Body: []byte("hi"), SourceIP: "10.1.2.3", Time: time.Unix(1700000000, 0), RequestID: "rid",
		Account: "123456789012", URLID: "abcdefghijklmnopqrstuvwxyz012345", DomainName: "d.example",
		IAM: &IAM{AccessKey: "AKIA1", AccountID: "123456789012", CallerID: "c", UserArn: "arn:aws:iam::123456789012:root", UserID: "u"}}
	var ev events.LambdaFunctionURLRequest
	if err := json.Unmarshal(Event(r), &ev); err != nil {
		t.Fatal(err)
	}
	rc := ev.RequestContext
	if ev.Version != "2.0" || ev.RawPath != "/p" || ev.RawQueryString != "a=1" || ev.QueryStringParameters["a"] != "1" || ev.Body != "hi" ||
		ev.IsBase64Encoded || len(ev.Cookies) != 1 || ev.Headers["user-agent"] != "ua" || rc.AccountID != "123456789012" ||
		rc.RequestID != "rid" || rc.APIID != r.URLID || rc.DomainName != "d.example" || rc.DomainPrefix != r.URLID ||
		rc.TimeEpoch != 1700000000000 || rc.HTTP.Method != "PUT" || rc.HTTP.SourceIP != "10.1.2.3" || rc.HTTP.UserAgent != "ua" ||
		rc.Authorizer == nil || rc.Authorizer.IAM.AccessKey != "AKIA1" || rc.Authorizer.IAM.UserARN != "arn:aws:iam::123456789012:root" {
		t.Fatalf("as aws-lambda-go reads it: %+v", ev)
	}
	b, _ := json.Marshal(events.LambdaFunctionURLResponse{StatusCode: 302, Headers: map[string]string{"Location": "/x"}, Cookies: []string{"a=1"}, Body: "moved"})
	out, err := MapResult(b)
	if err != nil || out.Status != 302 || out.Header.Get("Location") != "/x" || out.Header.Get("Set-Cookie") != "a=1" || string(out.Body) != "moved" {
		t.Fatalf("aws-lambda-go's response: %+v %v", out, err)
	}
}
