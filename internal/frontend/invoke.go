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
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/metrics"
	"github.com/kiln-dev/kiln/internal/policy"
)

// Limits on invoke payloads, as Lambda's.
const (
	MaxSyncPayload  = 6 * 1024 * 1024
	MaxAsyncPayload = 1024 * 1024
)

// Config wires the frontend to the services it calls. All but Logger are required.
type Config struct {
	Functions  FunctionStore
	Counter    Counter
	Assignment Assigner
	Region     string
	// OnFunctionChange is called after the cache drops a changed function.
	OnFunctionChange func(account, name string)
	Metrics          *metrics.Set // nil records nothing
	// Observer, when set, sees every invoke's outcome (the console's
	// per-function series).
	Observer Observer
	// Async takes Event invokes; nil refuses them.
	Async  Enqueuer
	Logger *slog.Logger
}

// Counter grants concurrency slots: *counting.Counter in one process, a
// client of the counting service's partition leaders (slots.Client) in
// cluster mode. err is a 429 *api.Error with Lambda's reason when refused.
type Counter interface {
	Take(ctx context.Context, k counting.Key) (release func(), err error)
}

// Assigner leases execution environments: *assignment.Service in one
// process, a client of the partition leaders in cluster mode.
type Assigner interface {
	Acquire(ctx context.Context, req assignment.Request) (*assignment.Env, error)
	Release(e *assignment.Env, reusable bool)
}

// Observer sees the outcome of every invoke this frontend admitted or
// refused for concurrency.
type Observer interface {
	Invoked(k counting.Key, o Outcome)
	Throttled(k counting.Key)
}

// Outcome is one invoke that ran.
type Outcome struct {
	Duration, Init time.Duration
	ErrorType      string
	// ColdCause is why a new environment started for it
	// (assignment.CauseScaleUp, ...); "" for a warm invoke.
	ColdCause string
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
	c, err := newCache(ctx, cfg.Functions, func(account, name string, f *metadata.Function) {
		if f == nil { // deleted: its series go with it
			cfg.Metrics.Forget(account, name)
		}
		if cfg.OnFunctionChange != nil {
			cfg.OnFunctionChange(account, name)
		}
	})
	if err != nil {
		return nil, err
	}
	return &Frontend{cfg: cfg, cache: c}, nil
}

// Forget drops a function's cached metadata, so that the next invoke reads
// the store: a frontend that has just passed a change of the function on
// to a control plane in another process calls it, and serves the change
// to its caller at once rather than when its watch sees it.
func (f *Frontend) Forget(account, name string) { f.cache.forget(account, name) }

// Register adds the invoke route to mux.
func (f *Frontend) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", f.invoke)
	mux.HandleFunc("POST /2021-11-15/functions/{name}/response-streaming-invocations", f.invokeWithResponseStream)
}

// BodyLimit is the body limit of invoke requests, for auth.Middleware; ok is
// false for other requests.
func BodyLimit(r *http.Request) (limit int64, tooLarge *api.Error, ok bool) {
	if r.Method != http.MethodPost || !isInvokePath(r.URL.Path) {
		return 0, nil, false
	}
	limit, msg := int64(MaxSyncPayload), syncTooLarge
	if r.Header.Get("X-Amz-Invocation-Type") == "Event" {
		limit, msg = MaxAsyncPayload, asyncTooLarge
	}
	return limit, &api.Error{Status: api.StatusOf(api.RequestEntityTooLarge), Type: api.RequestEntityTooLarge, Message: msg}, true
}

// The messages of BodyLimit's errors, formatted once: it runs on every
// invoke, the error is rarely used.
var (
	syncTooLarge  = fmt.Sprintf("Request must be smaller than %d bytes for the %s operation", MaxSyncPayload, "InvokeFunction")
	asyncTooLarge = fmt.Sprintf("Request must be smaller than %d bytes for the %s operation", MaxAsyncPayload, "InvokeAsync")
)

func isInvokePath(p string) bool {
	const prefix, suffix = "/2015-03-31/functions/", "/invocations"
	const streamPrefix, streamSuffix = "/2021-11-15/functions/", "/response-streaming-invocations"
	return len(p) > len(prefix)+len(suffix) && p[:len(prefix)] == prefix && p[len(p)-len(suffix):] == suffix ||
		len(p) > len(streamPrefix)+len(streamSuffix) && p[:len(streamPrefix)] == streamPrefix && p[len(p)-len(streamSuffix):] == streamSuffix
}

// Resolve finds the function and version an invoke runs, from the cache.
func (f *Frontend) Resolve(ctx context.Context, account, function, qualifier string) (*metadata.Target, error) {
	ref, err := api.ParseFunctionRef(function)
	if err == nil {
		ref, err = ref.WithQualifier(qualifier)
	}
	if err != nil {
		return nil, err
	}
	if ref.Region != "" && ref.Region != f.cfg.Region {
		return nil, api.Errorf(api.ResourceNotFound, "Functions from '%s' are not reachable in this region ('%s')", ref.Region, f.cfg.Region)
	}
	owner := account
	if ref.Account != "" {
		owner = ref.Account
	}
	arn := api.QualifiedARN(f.cfg.Region, owner, ref.Name, ref.Qualifier)
	fn, cfg, err := f.target(ctx, account, owner, ref, arn)
	var refused *api.Error
	if fn != nil && (errors.As(err, &refused) || err == nil && (cfg.State == "Pending" || cfg.State == "Failed")) {
		// The refusal (a version or alias missing, no permission, an image
		// import under way) was decided on the cached function, which learns
		// of writes from the store's watch: the write that changes it (an
		// alias just created, a permission just added, an import just ended)
		// may not have reached it yet. Refuse only what the store says.
		f.cache.forget(owner, ref.Name)
		fn, cfg, err = f.target(ctx, account, owner, ref, arn)
	}
	if err != nil {
		return nil, err
	}
	if cfg.State == "Pending" || cfg.State == "Failed" {
		return nil, api.Errorf(api.ResourceConflict, "The operation cannot be performed at this time. The function is currently in the following state: %s", cfg.State)
	}
	return &metadata.Target{Account: owner, Ref: ref, Function: fn, Config: cfg, ARN: arn}, nil
}

// target finds the function named by ref (of owner) and the configuration
// its qualifier picks, for account, from the cache. fn is set when the
// function was found, even if the caller may not invoke it.
func (f *Frontend) target(ctx context.Context, account, owner string, ref api.FunctionRef, arn string) (*metadata.Function, *api.FunctionConfiguration, error) {
	notFound := func() error { return api.Errorf(api.ResourceNotFound, "Function not found: %s", arn) }
	fn, err := f.cache.get(ctx, owner, ref.Name)
	switch {
	case owner != account && (err != nil || !policy.Allows(fn.Policies[policy.Key(ref.Qualifier)], "lambda:InvokeFunction", account)):
		if err != nil && !errors.Is(err, metadata.ErrNotFound) {
			return nil, nil, fmt.Errorf("function metadata of %s: %w", ref.Name, err)
		}
		// Whether the function exists or not: another account learns
		// nothing of it without a permission.
		return fn, nil, api.Errorf(api.AccessDenied, "User: arn:aws:iam::%s:root is not authorized to perform: lambda:InvokeFunction on resource: %s because no resource-based policy allows the lambda:InvokeFunction action",
			account, arn)
	case errors.Is(err, metadata.ErrNotFound):
		return nil, nil, notFound()
	case err != nil:
		return nil, nil, fmt.Errorf("function metadata of %s: %w", ref.Name, err)
	}
	cfg, err := fn.Resolve(ref.Qualifier, metadata.Pick())
	if err != nil {
		return fn, nil, notFound()
	}
	return fn, cfg, nil
}

// CheckPayload validates an event payload as Lambda does; empty means {}.
func CheckPayload(payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return []byte("{}"), nil
	}
	if !json.Valid(payload) {
		return nil, api.Errorf(api.InvalidRequestContent, "Could not parse request body into json: Could not parse payload into json: Unexpected character: was expecting a JSON value")
	}
	return payload, nil
}

func decodeClientContext(cc string) (string, error) {
	if cc == "" {
		return "", nil
	}
	b, err := base64.StdEncoding.DecodeString(cc)
	if err != nil || !json.Valid(b) || len(cc) > 3583 {
		return "", api.Errorf(api.InvalidRequestContent, "Client context must be a valid Base64-encoded JSON object of at most 3583 bytes")
	}
	return string(b), nil
}

// Invoke runs a synchronous invoke: resolve, count, assign, run. Errors are
// *api.Error for the caller (not found, throttled, ...) or internal ones.
func (f *Frontend) Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error) {
	t, err := f.Resolve(ctx, req.Account, req.Function, req.Qualifier)
	if err != nil {
		return nil, err
	}
	payload, err := CheckPayload(req.Payload)
	if err != nil {
		return nil, err
	}
	clientContext, err := decodeClientContext(req.ClientContext)
	if err != nil {
		return nil, err
	}
	return f.invokeTarget(ctx, t, &invoke.Invocation{Payload: payload, ClientContext: clientContext,
		TraceID: req.TraceID, Background: req.Background})
}

// invokeTarget runs inv (its payload, client context, trace header and
// priority; the rest is filled in here) on t.
func (f *Frontend) invokeTarget(ctx context.Context, t *metadata.Target, inv *invoke.Invocation) (*invoke.Response, error) {
	name := t.Ref.Name
	trace, err := lineage(traceID(inv.TraceID), api.FunctionARN(f.cfg.Region, t.Account, name),
		t.Function != nil && t.Function.RecursiveLoop == "Allow")
	if err != nil {
		return nil, err
	}
	release, err := f.cfg.Counter.Take(ctx, counting.Key{Account: t.Account, Function: name})
	if err != nil {
		var e *api.Error
		if errors.As(err, &e) && e.Reason != "" {
			f.cfg.Metrics.Throttled(t.Account, name, e.Reason)
			if f.cfg.Observer != nil {
				f.cfg.Observer.Throttled(counting.Key{Account: t.Account, Function: name})
			}
		}
		return nil, err
	}
	defer release()
	defer f.cfg.Metrics.Started(t.Account, name)()

	if inv.RequestID == "" {
		inv.RequestID = api.NewUUID()
	}
	requestID := inv.RequestID
	inv.FunctionArn, inv.TraceID = t.ARN, trace
	// A caller that hangs up does not stop the function (as in Lambda): the
	// environment stays busy until the invoke ends, then returns to its pool.
	res, started, err := f.run(context.WithoutCancel(ctx), t.Account, t.Config, inv)
	if err != nil {
		var initErr *invoke.InitError
		if !errors.As(err, &initErr) {
			return nil, fmt.Errorf("invoke %s (request %s): %w", name, requestID, err)
		}
		res = &invoke.Result{Payload: initErr.Document, ErrorType: initErr.ErrorType, LogTail: initErr.LogTail}
	}
	if started.phases != nil {
		started.phases.Invoke = res.Duration
	}
	initDuration, cause := started.init, started.cause
	f.cfg.Metrics.Finished(t.Account, name, res.Duration, initDuration, res.ErrorType)
	if f.cfg.Observer != nil {
		f.cfg.Observer.Invoked(counting.Key{Account: t.Account, Function: name},
			Outcome{Duration: res.Duration, Init: initDuration, ErrorType: res.ErrorType, ColdCause: cause})
	}
	out := &invoke.Response{RequestID: requestID, ExecutedVersion: t.Config.Version, ErrorType: res.ErrorType,
		Payload: res.Payload, LogTail: res.LogTail, Streamed: res.Streamed, ColdStart: started.phases}
	if res.ErrorType != "" {
		out.FunctionError = "Unhandled"
	}
	return out, nil
}

// Enqueuer takes asynchronous (Event) invokes: it must have stored the
// event durably before returning. trace is the caller's X-Amzn-Trace-Id,
// whose Lineage the event's invoke continues (recursion detection).
type Enqueuer interface {
	Enqueue(ctx context.Context, t *metadata.Target, payload []byte, clientContext, trace string) (requestID string, err error)
}

// invokeRequest is what Invoke and InvokeWithResponseStream both take:
// the function, the payload, the client context and a valid LogType; fail
// answers with an error (logged unless it is the caller's or the caller
// left).
func (f *Frontend) invokeRequest(w http.ResponseWriter, r *http.Request) (t *metadata.Target, payload []byte, clientContext string, fail func(error), err error) {
	ctx := r.Context()
	caller, _ := auth.FromContext(ctx)
	fail = func(err error) {
		var e *api.Error
		switch {
		case errors.As(err, &e):
		case ctx.Err() != nil: // the caller hung up: nothing went wrong here
			f.cfg.Logger.Debug("invoke abandoned by its caller", "path", r.URL.Path, "err", err)
		default:
			f.cfg.Logger.Error("invoke", "path", r.URL.Path, "err", err)
		}
		api.WriteError(w, err)
	}
	if t, err = f.Resolve(ctx, caller.Account, r.PathValue("name"), r.URL.Query().Get("Qualifier")); err == nil {
		if payload, err = CheckPayload(auth.Body(r)); err == nil {
			clientContext, err = decodeClientContext(r.Header.Get("X-Amz-Client-Context"))
		}
	}
	if err == nil {
		switch typ := r.Header.Get("X-Amz-Log-Type"); typ {
		case "", "None", "Tail":
		default:
			err = api.Errorf(api.Validation, "1 validation error detected: Value '%s' at 'logType' failed to satisfy constraint: Member must satisfy enum value set: [None, Tail]", typ)
		}
	}
	if err != nil {
		fail(err)
	}
	return t, payload, clientContext, fail, err
}

// invocationType reads X-Amz-Invocation-Type: RequestResponse (also for
// none), or Event where event allows it. A DryRun (the request's checks
// passed) and a type not allowed are answered here, with ok false.
func invocationType(w http.ResponseWriter, r *http.Request, t *metadata.Target, fail func(error), event bool) (typ string, ok bool) {
	allowed := "[RequestResponse, DryRun]"
	if event {
		allowed = "[Event, RequestResponse, DryRun]"
	}
	switch typ = r.Header.Get("X-Amz-Invocation-Type"); {
	case typ == "" || typ == "RequestResponse":
		return "RequestResponse", true
	case typ == "Event" && event:
		return typ, true
	case typ == "DryRun":
		w.Header().Set("X-Amz-Executed-Version", t.Config.Version)
		w.WriteHeader(http.StatusNoContent)
	default:
		fail(api.Errorf(api.Validation, "1 validation error detected: Value '%s' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: %s", typ, allowed))
	}
	return typ, false
}

func (f *Frontend) invoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, payload, clientContext, fail, err := f.invokeRequest(w, r)
	if err != nil {
		return
	}

	switch typ, ok := invocationType(w, r, t, fail, true); {
	case !ok:
		return
	case typ == "Event":
		if f.cfg.Async == nil {
			fail(api.Errorf(api.InvalidParameterValue, "Asynchronous (Event) invocation is not enabled on this Kiln"))
			return
		}
		requestID, err := f.cfg.Async.Enqueue(ctx, t, payload, clientContext, r.Header.Get("X-Amzn-Trace-Id"))
		if err != nil {
			fail(err)
			return
		}
		w.Header().Set("X-Amzn-Requestid", requestID)
		w.WriteHeader(http.StatusAccepted)
		return
	}

	res, err := f.invokeTarget(ctx, t, &invoke.Invocation{Payload: payload, ClientContext: clientContext,
		TraceID: r.Header.Get("X-Amzn-Trace-Id")})
	if err != nil {
		fail(err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-Requestid", res.RequestID)
	h.Set("X-Amz-Executed-Version", res.ExecutedVersion)
	if res.FunctionError != "" {
		h.Set("X-Amz-Function-Error", res.FunctionError)
	}
	if r.Header.Get("X-Amz-Log-Type") == "Tail" {
		h.Set("X-Amz-Log-Result", base64.StdEncoding.EncodeToString(res.LogTail))
	}
	if res.ColdStart != nil {
		h.Set("X-Kiln-Cold-Start", res.ColdStart.Header())
	}
	h.Set("Content-Length", strconv.Itoa(len(res.Payload)))
	w.WriteHeader(http.StatusOK)
	w.Write(res.Payload)
}

// run leases an environment, invokes it and returns the lease. An idle
// environment can die before the invoke reaches it (invoke.ErrNoEnv); the
// invoke has not started then, so it is safe to try another.
func (f *Frontend) run(ctx context.Context, account string, cfg *api.FunctionConfiguration, inv *invoke.Invocation) (res *invoke.Result, started coldStart, err error) {
	for attempt := 0; ; attempt++ {
		env, err := f.cfg.Assignment.Acquire(ctx, assignment.Request{Account: account, Function: cfg})
		if err != nil {
			return nil, coldStart{}, err
		}
		res, err := env.Worker.Invoke(ctx, env.ID, inv)
		// env is the next caller's after Release
		started := coldStart{init: env.InitDuration, cause: env.Cause}
		if env.Cold {
			phases := env.Phases
			started.phases = &phases
		}
		f.cfg.Assignment.Release(env, err == nil && res.Reusable)
		if errors.Is(err, invoke.ErrNoEnv) && attempt < 3 {
			continue
		}
		return res, started, err
	}
}

// coldStart is how an invoke's environment came to be, when it was
// started for the invoke: its init, why, and its phases.
type coldStart struct {
	init   time.Duration
	cause  string
	phases *invoke.ColdStart
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
