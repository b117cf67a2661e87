// Package funcurl is what a function URL does between HTTP and the
// function, with no I/O: the request event (payload format 2.0), the
// mapping of the function's result to an HTTP response, the head of a
// streamed response (the prelude awslambda.HttpResponseStream writes), and
// CORS as Lambda applies it.
package funcurl

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// URLHost is the host name of a function URL on a Kiln reached as host:
// Lambda's "<url-id>.lambda-url.<region>.on.aws", with Kiln's host in
// place of "aws".
func URLHost(id, region, host string) string {
	return id + ".lambda-url." + region + ".on." + host
}

// Request is an HTTP request to a function URL, as the event needs it.
type Request struct {
	Method, RawPath, RawQuery, Protocol string
	Header                              http.Header
	Body                                []byte
	SourceIP                            string
	Time                                time.Time
	RequestID                           string
	// Account owns the function; URLID is the URL's id and DomainName the
	// host name it is served by.
	Account, URLID, DomainName string
	// IAM is the signer of an AWS_IAM URL's request; nil for AuthType NONE.
	IAM *IAM
}

// IAM is requestContext.authorizer.iam.
type IAM struct {
	AccessKey string `json:"accessKey"`
	AccountID string `json:"accountId"`
	CallerID  string `json:"callerId"`
	// Kiln has no Cognito or Organizations: always null, as Lambda sends them for IAM users.
	CognitoIdentity *struct{} `json:"cognitoIdentity"`
	PrincipalOrgID  *string   `json:"principalOrgId"`
	UserArn         string    `json:"userArn"`
	UserID          string    `json:"userId"`
}

type event struct {
	Version               string            `json:"version"`
	RouteKey              string            `json:"routeKey"`
	RawPath               string            `json:"rawPath"`
	RawQueryString        string            `json:"rawQueryString"`
	Cookies               []string          `json:"cookies,omitempty"`
	Headers               map[string]string `json:"headers"`
	QueryStringParameters map[string]string `json:"queryStringParameters,omitempty"`
	RequestContext        requestContext    `json:"requestContext"`
	Body                  *string           `json:"body,omitempty"`
	IsBase64Encoded       bool              `json:"isBase64Encoded"`
}

type requestContext struct {
	AccountID      string      `json:"accountId"`
	APIID          string      `json:"apiId"`
	Authentication *struct{}   `json:"authentication"`
	Authorizer     *authorizer `json:"authorizer,omitempty"`
	DomainName     string      `json:"domainName"`
	DomainPrefix   string      `json:"domainPrefix"`
	HTTP           httpContext `json:"http"`
	RequestID      string      `json:"requestId"`
	RouteKey       string      `json:"routeKey"`
	Stage          string      `json:"stage"`
	Time           string      `json:"time"`
	TimeEpoch      int64       `json:"timeEpoch"`
}

type authorizer struct {
	IAM *IAM `json:"iam"`
}

type httpContext struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Protocol  string `json:"protocol"`
	SourceIP  string `json:"sourceIp"`
	UserAgent string `json:"userAgent"`
}

// Event is the function URL event of r, as Lambda builds it: header names
// lower-cased and repeated values joined with commas, cookies taken out of
// the headers into their own list, query parameters decoded and joined
// likewise, and a body that is not text base64-encoded.
func Event(r *Request) []byte {
	ev := event{Version: "2.0", RouteKey: "$default", RawPath: r.RawPath, RawQueryString: r.RawQuery,
		Headers: map[string]string{},
		RequestContext: requestContext{AccountID: r.Account, APIID: r.URLID, DomainName: r.DomainName,
			DomainPrefix: r.URLID, RequestID: r.RequestID, RouteKey: "$default", Stage: "$default",
			Time: r.Time.UTC().Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: r.Time.UnixMilli(),
			HTTP: httpContext{Method: r.Method, Path: r.RawPath, Protocol: r.Protocol, SourceIP: r.SourceIP,
				UserAgent: r.Header.Get("User-Agent")}},
	}
	if r.Account == "" {
		ev.RequestContext.AccountID = "anonymous"
	}
	if r.IAM != nil {
		ev.RequestContext.Authorizer = &authorizer{IAM: r.IAM}
	}
	for name, values := range r.Header {
		name = strings.ToLower(name)
		if name == "cookie" {
			for _, v := range values {
				for _, c := range strings.Split(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						ev.Cookies = append(ev.Cookies, c)
					}
				}
			}
			continue
		}
		ev.Headers[name] = strings.Join(values, ",")
	}
	if q, err := url.ParseQuery(r.RawQuery); err == nil && len(q) > 0 {
		ev.QueryStringParameters = make(map[string]string, len(q))
		for k, v := range q {
			ev.QueryStringParameters[k] = strings.Join(v, ",")
		}
	}
	if len(r.Body) > 0 {
		body := string(r.Body)
		if !isText(r.Header.Get("Content-Type")) {
			body = base64.StdEncoding.EncodeToString(r.Body)
			ev.IsBase64Encoded = true
		}
		ev.Body = &body
	}
	b, _ := json.Marshal(ev)
	return b
}

// isText says whether a body of this content type reaches the function as
// text; any other (and a body without a type) is base64-encoded.
func isText(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	typ, sub, _ := strings.Cut(mt, "/")
	switch {
	case typ == "text":
		return true
	case typ != "application":
		return false
	case sub == "json", sub == "xml", sub == "javascript", sub == "x-www-form-urlencoded", sub == "yaml", sub == "graphql",
		strings.HasSuffix(sub, "+json"), strings.HasSuffix(sub, "+xml"):
		return true
	}
	return false
}

// Response is the HTTP response a function's result maps to.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// ErrInvalidResponse means the function's result cannot be mapped to an
// HTTP response; the caller gets a 502, as from Lambda.
var ErrInvalidResponse = errors.New("funcurl: the function's response is not a valid function URL response")

// structured is a result with a statusCode: Lambda's response format.
type structured struct {
	StatusCode      *int              `json:"statusCode"`
	Headers         map[string]string `json:"headers"`
	Cookies         []string          `json:"cookies"`
	Body            *string           `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
}

// MapResult maps a buffered function result to an HTTP response. A JSON
// object with a statusCode is Lambda's response format (headers, cookies as
// Set-Cookie, a body base64-decoded when isBase64Encoded); any other JSON
// value is the body of a 200 application/json response (a JSON string as
// its text), as Lambda infers it.
func MapResult(payload []byte) (*Response, error) {
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var probe map[string]json.RawMessage
		if json.Unmarshal(trimmed, &probe) == nil {
			if _, ok := probe["statusCode"]; ok {
				return mapStructured(trimmed)
			}
		}
	}
	out := &Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: payload}
	var s string
	if len(trimmed) > 0 && trimmed[0] == '"' && json.Unmarshal(trimmed, &s) == nil {
		out.Body = []byte(s)
	}
	return out, nil
}

func mapStructured(b []byte) (*Response, error) {
	var s structured
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidResponse, err)
	}
	head, err := s.head()
	if err != nil {
		return nil, err
	}
	out := &Response{Status: head.Status, Header: head.Header}
	if s.Body != nil {
		out.Body = []byte(*s.Body)
		if s.IsBase64Encoded {
			if out.Body, err = base64.StdEncoding.DecodeString(*s.Body); err != nil {
				return nil, fmt.Errorf("%w: body: %v", ErrInvalidResponse, err)
			}
		}
	}
	return out, nil
}

// head is the status and headers of s (no statusCode means 200, as in a
// streamed response's prelude); Content-Type defaults to application/json.
func (s *structured) head() (*Response, error) {
	out := &Response{Status: http.StatusOK, Header: http.Header{}}
	if s.StatusCode != nil {
		out.Status = *s.StatusCode
	}
	if out.Status < 100 || out.Status > 599 {
		return nil, fmt.Errorf("%w: statusCode %d", ErrInvalidResponse, out.Status)
	}
	names := make([]string, 0, len(s.Headers))
	for k := range s.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !validHeader(k, s.Headers[k]) {
			return nil, fmt.Errorf("%w: header %q", ErrInvalidResponse, k)
		}
		out.Header.Set(k, s.Headers[k])
	}
	for _, c := range s.Cookies {
		if !validHeader("Set-Cookie", c) {
			return nil, fmt.Errorf("%w: cookie %q", ErrInvalidResponse, c)
		}
		out.Header.Add("Set-Cookie", c)
	}
	if out.Header.Get("Content-Type") == "" {
		out.Header.Set("Content-Type", "application/json")
	}
	return out, nil
}

// validHeader refuses what would break the response's framing.
func validHeader(name, value string) bool {
	if name == "" || strings.ContainsAny(name, " \t\r\n:") || strings.ContainsAny(value, "\r\n\x00") {
		return false
	}
	switch strings.ToLower(name) {
	case "content-length", "transfer-encoding", "connection":
		return false // Kiln frames the body itself
	}
	return true
}

// Streamed responses.

// IntegrationContentType is the content type a runtime gives a streamed
// response that starts with a prelude (awslambda.HttpResponseStream.from).
const IntegrationContentType = "application/vnd.awslambda.http-integration-response"

// preludeEnd ends the prelude: eight NUL bytes.
var preludeEnd = make([]byte, 8)

// MaxPrelude bounds the prelude a function can make Kiln hold.
const MaxPrelude = 1 << 20

// Prelude reads the head of a streamed response from the bytes so far:
// done is false while the eight NUL bytes have not come (more is needed),
// and rest is what follows them: the start of the body.
func Prelude(buf []byte) (head *Response, rest []byte, done bool, err error) {
	i := bytes.Index(buf, preludeEnd)
	if i < 0 {
		if len(buf) > MaxPrelude {
			return nil, nil, false, fmt.Errorf("%w: prelude over %d bytes", ErrInvalidResponse, MaxPrelude)
		}
		return nil, nil, false, nil
	}
	var s structured
	if err := json.Unmarshal(buf[:i], &s); err != nil {
		return nil, nil, true, fmt.Errorf("%w: prelude: %v", ErrInvalidResponse, err)
	}
	head, err = s.head()
	return head, buf[i+len(preludeEnd):], true, err
}

// StreamHead is the head of a streamed response that has no prelude: 200
// with the runtime's content type.
func StreamHead(contentType string) *Response {
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	return &Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {contentType}}}
}

// CORS.

// Cors is a URL's CORS configuration (api.Cors, with its pointers resolved).
type Cors struct {
	AllowCredentials bool
	AllowHeaders     []string
	AllowMethods     []string
	AllowOrigins     []string
	ExposeHeaders    []string
	MaxAge           int
}

// IsPreflight says whether r is a CORS preflight request.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// allowedOrigin is the Access-Control-Allow-Origin value for origin, or "".
func (c *Cors) allowedOrigin(origin string) string {
	if origin == "" {
		return ""
	}
	for _, o := range c.AllowOrigins {
		if o == "*" {
			if c.AllowCredentials {
				return origin // browsers refuse "*" with credentials
			}
			return "*"
		}
		if strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return origin
		}
	}
	return ""
}

// Preflight answers a preflight request without invoking the function:
// the allowed origin, methods, headers, max age and credentials, or no
// CORS headers when the origin or method is not allowed.
func (c *Cors) Preflight(h http.Header) http.Header {
	out := http.Header{}
	origin := c.allowedOrigin(h.Get("Origin"))
	if origin == "" || !c.methodAllowed(h.Get("Access-Control-Request-Method")) {
		return out
	}
	out.Set("Access-Control-Allow-Origin", origin)
	if len(c.AllowMethods) > 0 {
		out.Set("Access-Control-Allow-Methods", strings.Join(c.AllowMethods, ","))
	}
	if len(c.AllowHeaders) > 0 {
		out.Set("Access-Control-Allow-Headers", strings.Join(c.AllowHeaders, ","))
	}
	if c.MaxAge > 0 {
		out.Set("Access-Control-Max-Age", strconv.Itoa(c.MaxAge))
	}
	if c.AllowCredentials {
		out.Set("Access-Control-Allow-Credentials", "true")
	}
	if origin != "*" {
		out.Set("Vary", "Origin")
	}
	return out
}

func (c *Cors) methodAllowed(m string) bool {
	for _, a := range c.AllowMethods {
		if a == "*" || strings.EqualFold(a, m) {
			return true
		}
	}
	return false
}

// Apply sets the CORS headers of an actual (not preflight) request's
// response from origin; Kiln's replace any the function set, as Lambda's.
func (c *Cors) Apply(origin string, out http.Header) {
	for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Access-Control-Allow-Credentials",
		"Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Max-Age"} {
		out.Del(k)
	}
	o := c.allowedOrigin(origin)
	if o == "" {
		return
	}
	out.Set("Access-Control-Allow-Origin", o)
	if len(c.ExposeHeaders) > 0 {
		out.Set("Access-Control-Expose-Headers", strings.Join(c.ExposeHeaders, ","))
	}
	if c.AllowCredentials {
		out.Set("Access-Control-Allow-Credentials", "true")
	}
	if o != "*" {
		out.Add("Vary", "Origin")
	}
}
