// Package frontend is the invoke frontend: it authenticates a request,
// resolves the function from its cached metadata, asks counting for a slot,
// asks assignment for an execution environment, and sends the payload
// straight to that environment's worker.
package frontend

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/api"
	"github.com/kiln-dev/kiln/assignment"
	"github.com/kiln-dev/kiln/auth"
	"github.com/kiln-dev/kiln/counting"
	"github.com/kiln-dev/kiln/metadata"
	"github.com/kiln-dev/kiln/metrics"
	"github.com/kiln-dev/kiln/worker"
)

// Limits on invoke payloads, as Lambda's.
const (
	MaxSyncPayload  = 6 * 1024 * 1024
	MaxAsyncPayload = 1024 * 1024
)

// Config wires the frontend to the services it calls. All but Logger are required.
type Config struct {
	Functions  FunctionStore
	Counter    *counting.Counter
	Assignment *assignment.Service
	Region     string
	// OnFunctionChange is called after the cache drops a changed function.
	OnFunctionChange func(account, name string)
	Metrics          *metrics.Set // nil records nothing
	Logger           *slog.Logger
}

// Frontend serves invokes.
type Frontend struct {
	cfg   Config
	cache *cache
}

// New returns a frontend whose metadata cache follows the store until ctx ends.
func New(ctx context.Context, cfg Config) (*Frontend, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c, err := newCache(ctx, cfg.Functions, cfg.OnFunctionChange)
	if err != nil {
		return nil, err
	}
	return &Frontend{cfg: cfg, cache: c}, nil
}

// Register adds the invoke route to mux.
func (f *Frontend) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", f.invoke)
}

// BodyLimit is the body limit of invoke requests, for auth.Middleware; ok is
// false for other requests.
func BodyLimit(r *http.Request) (limit int64, tooLarge *api.Error, ok bool) {
	if r.Method != http.MethodPost || !isInvokePath(r.URL.Path) {
		return 0, nil, false
	}
	limit, op := int64(MaxSyncPayload), "Invoke"
	if r.Header.Get("X-Amz-Invocation-Type") == "Event" {
		limit = MaxAsyncPayload
	}
	return limit, api.Errorf(api.RequestTooLarge, "Request must be smaller than %d bytes for the %s operation", limit, op), true
}

func isInvokePath(p string) bool {
	const prefix, suffix = "/2015-03-31/functions/", "/invocations"
	return len(p) > len(prefix)+len(suffix) && p[:len(prefix)] == prefix && p[len(p)-len(suffix):] == suffix
}

func (f *Frontend) invoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	caller, _ := auth.FromContext(ctx)
	ref, err := api.ParseFunctionRef(r.PathValue("name"))
	if err == nil {
		ref, err = ref.WithQualifier(r.URL.Query().Get("Qualifier"))
	}
	if err != nil {
		api.WriteError(w, err)
		return
	}
	notFound := func() {
		api.WriteError(w, api.Errorf(api.ResourceNotFound, "Function not found: %s",
			api.QualifiedARN(f.cfg.Region, caller.Account, ref.Name, ref.Qualifier)))
	}
	if ref.Account != "" && ref.Account != caller.Account {
		notFound()
		return
	}
	fn, err := f.cache.get(ctx, caller.Account, ref.Name)
	if errors.Is(err, metadata.ErrNotFound) {
		notFound()
		return
	}
	if err != nil {
		f.cfg.Logger.Error("function metadata", "function", ref.Name, "err", err)
		api.WriteError(w, err)
		return
	}
	cfg, err := fn.Resolve(ref.Qualifier, metadata.Pick())
	if err != nil {
		notFound()
		return
	}

	payload := auth.Body(r)
	if len(payload) == 0 {
		payload = []byte("{}")
	} else if !json.Valid(payload) {
		api.WriteError(w, api.Errorf(api.InvalidRequestContent, "Could not parse request body into json: Could not parse payload into json: Unexpected character: was expecting a JSON value"))
		return
	}
	var clientContext string
	if cc := r.Header.Get("X-Amz-Client-Context"); cc != "" {
		b, err := base64.StdEncoding.DecodeString(cc)
		if err != nil || !json.Valid(b) || len(cc) > 3583 {
			api.WriteError(w, api.Errorf(api.InvalidRequestContent, "Client context must be a valid Base64-encoded JSON object of at most 3583 bytes"))
			return
		}
		clientContext = string(b)
	}

	switch typ := r.Header.Get("X-Amz-Invocation-Type"); typ {
	case "", "RequestResponse":
	case "DryRun":
		w.Header().Set("X-Amz-Executed-Version", cfg.Version)
		w.WriteHeader(http.StatusNoContent)
		return
	case "Event":
		api.WriteError(w, api.Errorf(api.InvalidParameterValue, "Asynchronous (Event) invocation is not available in this Kiln build"))
		return
	default:
		api.WriteError(w, api.Errorf(api.InvalidParameterValue, "1 validation error detected: Value '%s' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]", typ))
		return
	}

	slot, err := f.cfg.Counter.Acquire(counting.Key{Account: caller.Account, Function: ref.Name})
	if err != nil {
		var e *api.Error
		if errors.As(err, &e) {
			f.cfg.Metrics.Throttled(ref.Name, e.Reason)
		}
		api.WriteError(w, err)
		return
	}
	defer slot.Release()
	defer f.cfg.Metrics.Started(ref.Name)()

	requestID := newRequestID()
	inv := &worker.Invocation{
		RequestID:     requestID,
		FunctionArn:   api.QualifiedARN(f.cfg.Region, caller.Account, ref.Name, ref.Qualifier),
		TraceID:       traceID(r.Header.Get("X-Amzn-Trace-Id")),
		ClientContext: clientContext,
		Payload:       payload,
	}
	// A caller that hangs up does not stop the function (as in Lambda): the
	// environment stays busy until the invoke ends, then returns to its pool.
	res, initDuration, err := f.run(context.WithoutCancel(ctx), caller.Account, cfg, inv)
	if err != nil {
		var initErr *worker.InitError
		if !errors.As(err, &initErr) {
			f.cfg.Logger.Error("invoke", "function", ref.Name, "request", requestID, "err", err)
			api.WriteError(w, err)
			return
		}
		res = &worker.Result{Payload: initErr.Document, ErrorType: initErr.ErrorType, LogTail: initErr.LogTail}
	}
	f.cfg.Metrics.Finished(ref.Name, res.Duration, initDuration, res.ErrorType)

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-Requestid", requestID)
	h.Set("X-Amz-Executed-Version", cfg.Version)
	if res.ErrorType != "" {
		h.Set("X-Amz-Function-Error", "Unhandled")
	}
	if r.Header.Get("X-Amz-Log-Type") == "Tail" {
		h.Set("X-Amz-Log-Result", base64.StdEncoding.EncodeToString(res.LogTail))
	}
	h.Set("Content-Length", strconv.Itoa(len(res.Payload)))
	w.WriteHeader(http.StatusOK)
	w.Write(res.Payload)
}

// run leases an environment, invokes it and returns the lease. An idle
// environment can die before the invoke reaches it (worker.ErrNoEnv); the
// invoke has not started then, so it is safe to try another.
func (f *Frontend) run(ctx context.Context, account string, cfg *api.FunctionConfiguration, inv *worker.Invocation) (res *worker.Result, initDuration time.Duration, err error) {
	for attempt := 0; ; attempt++ {
		env, err := f.cfg.Assignment.Acquire(ctx, assignment.Request{Account: account, Function: cfg})
		if err != nil {
			return nil, 0, err
		}
		res, err := env.Worker.Invoke(ctx, env.ID, inv)
		f.cfg.Assignment.Release(env, err == nil && res.Reusable)
		if errors.Is(err, worker.ErrNoEnv) && attempt < 3 {
			continue
		}
		return res, env.InitDuration, err
	}
}

// newRequestID returns a random UUID, the form of Lambda's request ids.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// traceID keeps the caller's X-Ray header or starts a new trace.
func traceID(given string) string {
	if given != "" {
		return given
	}
	var b [12]byte
	rand.Read(b[:])
	return "Root=1-" + strconv.FormatInt(time.Now().Unix(), 16) + "-" + hex.EncodeToString(b[:]) + ";Sampled=0"
}
