package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/funcurl"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// Function URLs: plain HTTP to a function, by host name
// (<url-id>.lambda-url.<region>.on.<kiln host>) or by path
// (/lambda-url/<url-id>/...), on the frontend's own listener.

// URLPathPrefix is the path form of function URLs: /lambda-url/<url-id>/<path>.
const URLPathPrefix = "/lambda-url/"

// AuthorizeURL is the resource-policy check of a function URL request:
// caller is nil for AuthType NONE. It returns a *api.Error (403) to refuse.
// Lambda requires the function's policy to grant lambda:InvokeFunctionUrl
// (to "*" with lambda:FunctionUrlAuthType NONE for a public URL).
type AuthorizeURL func(ctx context.Context, t *metadata.Target, authType string, caller *auth.Caller) error

// urlIDLen is the length of a URL id: 32 lowercase letters and digits.
const urlIDLen = 32

func validURLID(id string) bool {
	if len(id) != urlIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// URLHostID returns the URL id a request's Host names in region, or "".
func URLHostID(host, region string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	id, rest, ok := strings.Cut(strings.ToLower(host), ".lambda-url.")
	if !ok || !strings.HasPrefix(rest, region+".on.") || !validURLID(id) {
		return ""
	}
	return id
}

// URLs serves function URLs.
type URLs struct {
	f       *Frontend
	keyring *auth.Keyring
	// Authorize is the resource-policy hook; nil allows AuthType NONE to
	// anyone and AWS_IAM to the function's own account.
	authorize AuthorizeURL

	mu   sync.RWMutex
	refs map[string]metadata.URLRef // id → what it named when last read (checked against the function on every request)
}

// URLs returns the function URL handler. authorize may be nil (see URLs).
func (f *Frontend) URLs(keyring *auth.Keyring, authorize AuthorizeURL) *URLs {
	return &URLs{f: f, keyring: keyring, authorize: authorize, refs: map[string]metadata.URLRef{}}
}

// ServeHTTP serves a request by host name, or by path under URLPathPrefix.
func (u *URLs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, path := URLHostID(r.Host, u.f.cfg.Region), r.URL.EscapedPath()
	if id == "" {
		rest, _ := strings.CutPrefix(path, URLPathPrefix)
		id, path, _ = strings.Cut(rest, "/")
		path = "/" + path
	}
	u.serve(w, r, id, path)
}

// urlError answers in the shape of Lambda's function URL errors.
func urlError(w http.ResponseWriter, status int, typ, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-Errortype", typ)
	h.Set("X-Amzn-Requestid", api.NewUUID())
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"Message\":%q}", msg)
}

// lookup finds the function and URL that id names.
func (u *URLs) lookup(ctx context.Context, id string) (*metadata.Function, *metadata.URL, metadata.URLRef, error) {
	u.mu.RLock()
	ref, ok := u.refs[id]
	u.mu.RUnlock()
	if !ok {
		var err error
		if ref, err = u.f.cfg.Functions.URL(ctx, id); err != nil {
			return nil, nil, ref, err
		}
	}
	fn, err := u.f.cache.get(ctx, ref.Account, ref.Name)
	if err != nil {
		return nil, nil, ref, err
	}
	cfg, ok := fn.URLFor(id, ref.Qualifier)
	if !ok {
		// The cached function learns of writes from the store's watch, and
		// the URL config just created may not have reached it: refuse only
		// what the store says (as Resolve does for invokes).
		u.f.cache.forget(ref.Account, ref.Name)
		if fn, err = u.f.cache.get(ctx, ref.Account, ref.Name); err != nil {
			return nil, nil, ref, err
		}
		cfg, ok = fn.URLFor(id, ref.Qualifier)
	}
	u.mu.Lock()
	if ok {
		u.refs[id] = ref
	} else {
		delete(u.refs, id)
	}
	u.mu.Unlock()
	if !ok {
		return nil, nil, ref, fmt.Errorf("%w: url %s", metadata.ErrNotFound, id)
	}
	return fn, cfg, ref, nil
}

func (u *URLs) serve(w http.ResponseWriter, r *http.Request, id, path string) {
	ctx := r.Context()
	if !validURLID(id) {
		urlError(w, http.StatusNotFound, api.ResourceNotFound, "Not Found")
		return
	}
	_, cfg, ref, err := u.lookup(ctx, id)
	if errors.Is(err, metadata.ErrNotFound) {
		urlError(w, http.StatusNotFound, api.ResourceNotFound, "Not Found")
		return
	}
	if err != nil {
		u.f.cfg.Logger.Error("function url", "id", id, "err", err)
		urlError(w, http.StatusInternalServerError, api.Service, "Internal Server Error")
		return
	}
	var cors *funcurl.Cors
	if c := cfg.Cors; c != nil {
		cors = &funcurl.Cors{AllowCredentials: c.AllowCredentials != nil && *c.AllowCredentials, AllowHeaders: c.AllowHeaders,
			AllowMethods: c.AllowMethods, AllowOrigins: c.AllowOrigins, ExposeHeaders: c.ExposeHeaders}
		if c.MaxAge != nil {
			cors.MaxAge = *c.MaxAge
		}
		if funcurl.IsPreflight(r) { // answered by Kiln, as Lambda: the function never sees it
			for k, v := range cors.Preflight(r.Header) {
				w.Header()[k] = v
			}
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	call := &urlCall{u: u, w: w, r: r, id: id, path: path, ref: ref, cfg: cfg, cors: cors}
	if cfg.AuthType == "AWS_IAM" {
		auth.Middleware(u.keyring, urlBodyLimit, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, _ := auth.FromContext(r.Context())
			call.r = r
			call.run(&caller, auth.Body(r))
		})).ServeHTTP(&urlAuthErrors{ResponseWriter: w}, r)
		return
	}
	// Bounded in size and time as the SigV4 check bounds a signed body.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(auth.BodyTotal))
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxSyncPayload+1))
	rc.SetReadDeadline(time.Time{})
	if err != nil {
		urlError(w, http.StatusBadRequest, api.InvalidRequestContent, "Bad Request")
		return
	}
	if len(body) > MaxSyncPayload {
		urlError(w, http.StatusRequestEntityTooLarge, api.RequestTooLarge, "Request Entity Too Large")
		return
	}
	call.run(nil, body)
}

func urlBodyLimit(*http.Request) (int64, *api.Error) {
	return MaxSyncPayload, &api.Error{Status: http.StatusRequestEntityTooLarge, Type: api.RequestTooLarge, Message: "Request Entity Too Large"}
}

// urlAuthErrors turns the SigV4 check's errors (Lambda API documents)
// into function URL errors: 403 {"Message":"Forbidden"}, as Lambda's.
type urlAuthErrors struct {
	http.ResponseWriter
	replaced bool
}

func (e *urlAuthErrors) WriteHeader(status int) {
	if status == http.StatusForbidden {
		e.replaced = true
		clear(e.Header()) // the Lambda API error's, Content-Length among them
		urlError(e.ResponseWriter, status, api.AccessDenied, "Forbidden")
		return
	}
	e.ResponseWriter.WriteHeader(status)
}

func (e *urlAuthErrors) Write(p []byte) (int, error) {
	if e.replaced {
		return len(p), nil
	}
	return e.ResponseWriter.Write(p)
}

func (e *urlAuthErrors) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// urlCall is one function URL request being served.
type urlCall struct {
	u        *URLs
	w        http.ResponseWriter
	r        *http.Request
	id, path string
	ref      metadata.URLRef
	cfg      *metadata.URL
	cors     *funcurl.Cors
}

func (c *urlCall) run(caller *auth.Caller, body []byte) {
	f, r := c.u.f, c.r
	ctx := r.Context()
	t, err := f.Resolve(ctx, c.ref.Account, c.ref.Name, c.ref.Qualifier)
	if err != nil {
		urlError(c.w, http.StatusNotFound, api.ResourceNotFound, "Not Found")
		return
	}
	if err := c.authorize(ctx, t, caller); err != nil {
		urlError(c.w, http.StatusForbidden, api.AccessDenied, "Forbidden")
		return
	}
	req := &funcurl.Request{Method: r.Method, RawPath: c.path, RawQuery: r.URL.RawQuery, Protocol: r.Proto,
		Header: r.Header.Clone(), Body: body, Time: time.Now(), RequestID: api.NewUUID(),
		Account: t.Account, URLID: c.id, DomainName: r.Host}
	if URLHostID(r.Host, f.cfg.Region) == "" { // the path form: the URL's own host name, as Lambda gives it
		req.DomainName = funcurl.URLHost(c.id, f.cfg.Region, r.Host)
	}
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		req.SourceIP = h
	}
	// What Lambda's front end adds: the caller's address, scheme and port,
	// and the trace header.
	proto, port := "http", "80"
	if r.TLS != nil {
		proto, port = "https", "443"
	}
	if _, p, err := net.SplitHostPort(r.Host); err == nil {
		port = p
	}
	req.Header.Set("X-Forwarded-For", req.SourceIP)
	req.Header.Set("X-Forwarded-Proto", proto)
	req.Header.Set("X-Forwarded-Port", port)
	if req.Header.Get("X-Amzn-Trace-Id") == "" {
		req.Header.Set("X-Amzn-Trace-Id", traceID(""))
	}
	if caller != nil {
		req.IAM = &funcurl.IAM{AccessKey: caller.AccessKeyID, AccountID: caller.Account, CallerID: caller.Account,
			UserArn: "arn:aws:iam::" + caller.Account + ":root", UserID: caller.Account}
	}
	inv := &invoke.Invocation{RequestID: req.RequestID, Payload: funcurl.Event(req), TraceID: req.Header.Get("X-Amzn-Trace-Id")}
	if len(inv.Payload) > MaxSyncPayload { // a body near the limit, base64-encoded or with large headers
		urlError(c.w, http.StatusRequestEntityTooLarge, api.RequestTooLarge, "Request Entity Too Large")
		return
	}
	var st *urlStream
	if c.cfg.InvokeMode == "RESPONSE_STREAM" {
		st = &urlStream{call: c, requestID: req.RequestID}
		st.httpStream = httpStream{w: c.w, head: st.begin, write: st.write}
		inv.Stream = st
	}
	res, err := f.invokeTarget(ctx, t, inv)
	if st != nil && st.end() {
		st.finish(res, err)
		return
	}
	if err != nil {
		c.invokeError(err)
		return
	}
	c.w.Header().Set("X-Amzn-Requestid", res.RequestID)
	if res.FunctionError != "" {
		urlError(c.w, http.StatusBadGateway, "FunctionError", "Internal Server Error")
		return
	}
	out, err := funcurl.MapResult(res.Payload)
	if err != nil {
		urlError(c.w, http.StatusBadGateway, "InvalidResponse", "Internal Server Error")
		return
	}
	c.writeHead(out)
	c.w.Write(out.Body)
}

func (c *urlCall) authorize(ctx context.Context, t *metadata.Target, caller *auth.Caller) error {
	if c.u.authorize != nil {
		return c.u.authorize(ctx, t, c.cfg.AuthType, caller)
	}
	if caller != nil && caller.Account != t.Account {
		return api.Errorf(api.AccessDenied, "Forbidden")
	}
	return nil
}

// invokeError answers an invoke that failed before the function ran.
func (c *urlCall) invokeError(err error) {
	var e *api.Error
	switch {
	case errors.As(err, &e) && e.Status == http.StatusTooManyRequests:
		urlError(c.w, http.StatusTooManyRequests, api.TooManyRequests, "Rate Exceeded.")
	case errors.As(err, &e) && e.Status < 500:
		urlError(c.w, e.Status, e.Type, e.Message)
	default:
		if c.r.Context().Err() == nil {
			c.u.f.cfg.Logger.Error("function url invoke", "id", c.id, "err", err)
		}
		urlError(c.w, http.StatusBadGateway, api.Service, "Internal Server Error")
	}
}

// writeHead writes a mapped response's status and headers, with Kiln's
// CORS headers over the function's.
func (c *urlCall) writeHead(out *funcurl.Response) {
	h := c.w.Header()
	for k, v := range out.Header {
		h[k] = v
	}
	if c.cors != nil {
		c.cors.Apply(c.r.Header.Get("Origin"), h)
	}
	if out.Body != nil {
		h.Set("Content-Length", fmt.Sprint(len(out.Body)))
	}
	c.w.WriteHeader(out.Status)
}

// urlStream is a RESPONSE_STREAM URL's response: chunked HTTP as the bytes
// arrive; a stream that begins with awslambda.HttpResponseStream's prelude
// (status, headers, cookies) is held until the prelude is whole.
type urlStream struct {
	httpStream
	call      *urlCall
	requestID string
	prelude   []byte // the prelude so far, while it is awaited
	waiting   bool   // a prelude is awaited
	headed    bool   // the HTTP head is written
	failed    bool   // the prelude was invalid: the rest is dropped
}

func (s *urlStream) begin(contentType string) {
	if contentType == funcurl.IntegrationContentType {
		s.waiting = true
		return
	}
	s.writeHead(funcurl.StreamHead(contentType))
}

func (s *urlStream) writeHead(out *funcurl.Response) {
	s.headed = true
	s.call.w.Header().Set("X-Amzn-Requestid", s.requestID)
	s.call.writeHead(out)
	http.NewResponseController(s.call.w).Flush()
}

func (s *urlStream) write(p []byte) error {
	if s.failed {
		return nil
	}
	if s.waiting {
		s.prelude = append(s.prelude, p...)
		head, rest, done, err := funcurl.Prelude(s.prelude)
		if err != nil {
			s.failed = true
			return err
		}
		if !done {
			return nil
		}
		s.waiting, s.prelude = false, nil
		s.writeHead(head)
		p = rest
		if len(p) == 0 {
			return nil
		}
	}
	if _, err := s.call.w.Write(p); err != nil {
		return err
	}
	return http.NewResponseController(s.call.w).Flush()
}

// finish ends a response whose stream began: a buffered answer is mapped
// as a BUFFERED URL's; an error midway cuts the connection (the caller
// sees the body end early, as from Lambda).
func (s *urlStream) finish(res *invoke.Response, err error) {
	c := s.call
	if !s.headed {
		// It began with a prelude that never ended, or was invalid.
		if err != nil {
			c.invokeError(err)
			return
		}
		urlError(c.w, http.StatusBadGateway, "FunctionError", "Internal Server Error")
		return
	}
	if err != nil || res.FunctionError != "" || s.failed {
		panic(http.ErrAbortHandler) // the head went as 200: only a cut tells the caller
	}
}
