// Package controlplane serves Lambda's management API: functions, their code
// and configuration, versions, aliases and reserved concurrency. It validates
// every request as Lambda does, answers with Lambda's documents, status codes
// and error types, keeps metadata in the metadata store (JetStream KV, one
// compare-and-set key per function) and code in the code store.
package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// Config configures the control plane. Store and Code are required.
type Config struct {
	Store *metadata.Store
	Code  *codestore.Store
	// Images imports image functions' code; nil refuses PackageType Image.
	Images ImageImporter
	// Region goes into every ARN; empty means us-east-1.
	Region string
	// URLSecret is the HMAC key of Code.Location download URLs. Empty means a
	// random key: URLs then only work against this process, until it restarts.
	URLSecret []byte
	// AccountConcurrency is the account's concurrency limit (0 means 1000);
	// PutFunctionConcurrency keeps min(100, limit) of it unreserved.
	AccountConcurrency int
	// MaxCodeStorage bounds the code store (0 means 75 GB); beyond it uploads
	// fail with CodeStorageExceededException.
	MaxCodeStorage int64
	// Mappings stores event source mappings and Queues tells their sources'
	// attributes; without them the event source mapping API is not served.
	Mappings *esm.Store
	Queues   QueueAttributes
	Streams  StreamDescriber // Kiln's streams, for Kinesis mappings
	// ImportStale is how long the control plane running a code import
	// may be silent before another takes the import over (0 means a
	// minute).
	ImportStale time.Duration
	// Now is the clock (nil means time.Now).
	Now func() time.Time
	// Logger receives internal errors (nil means slog.Default()).
	Logger *slog.Logger
}

// Service is the control plane.
type Service struct {
	cfg   Config
	store *metadata.Store
	code  *codestore.Store
	log   *slog.Logger
	imports
}

// New returns the control plane.
func New(cfg Config) *Service {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if len(cfg.URLSecret) == 0 {
		cfg.URLSecret = make([]byte, 32)
		rand.Read(cfg.URLSecret)
	}
	if cfg.AccountConcurrency <= 0 {
		cfg.AccountConcurrency = 1000
	}
	if cfg.MaxCodeStorage <= 0 {
		cfg.MaxCodeStorage = 75 << 30
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ImportStale <= 0 {
		cfg.ImportStale = importStale
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{cfg: cfg, store: cfg.Store, code: cfg.Code, log: cfg.Logger}
	s.startImports()
	return s
}

// Register adds the management API's routes to mux. The mux must sit behind
// auth.Middleware: handlers read the caller and the verified body from it.
func (s *Service) Register(mux *http.ServeMux) {
	const fn = "/2015-03-31/functions/{FunctionName}"
	const eic = "/2019-09-25/functions/{FunctionName}/event-invoke-config"
	routes := []route{
		{"POST /2015-03-31/functions", "CreateFunction", s.createFunction},
		{"GET /2015-03-31/functions/{$}", "ListFunctions", s.listFunctions},
		{"GET /2015-03-31/functions", "ListFunctions", s.listFunctions},
		{"GET " + fn, "GetFunction", s.getFunction},
		{"DELETE " + fn, "DeleteFunction", s.deleteFunction},
		{"GET " + fn + "/configuration", "GetFunctionConfiguration", s.getFunctionConfiguration},
		{"PUT " + fn + "/configuration", "UpdateFunctionConfiguration", s.updateFunctionConfiguration},
		{"PUT " + fn + "/code", "UpdateFunctionCode", s.updateFunctionCode},
		{"POST " + fn + "/versions", "PublishVersion", s.publishVersion},
		{"GET " + fn + "/versions", "ListVersionsByFunction", s.listVersionsByFunction},
		{"POST " + fn + "/aliases", "CreateAlias", s.createAlias},
		{"GET " + fn + "/aliases", "ListAliases", s.listAliases},
		{"GET " + fn + "/aliases/{Name}", "GetAlias", s.getAlias},
		{"PUT " + fn + "/aliases/{Name}", "UpdateAlias", s.updateAlias},
		{"DELETE " + fn + "/aliases/{Name}", "DeleteAlias", s.deleteAlias},
		{"PUT /2017-10-31/functions/{FunctionName}/concurrency", "PutFunctionConcurrency", s.putFunctionConcurrency},
		{"DELETE /2017-10-31/functions/{FunctionName}/concurrency", "DeleteFunctionConcurrency", s.deleteFunctionConcurrency},
		{"GET /2019-09-30/functions/{FunctionName}/concurrency", "GetFunctionConcurrency", s.getFunctionConcurrency},
		{"PUT " + eic, "PutFunctionEventInvokeConfig", s.putFunctionEventInvokeConfig},
		{"POST " + eic, "UpdateFunctionEventInvokeConfig", s.updateFunctionEventInvokeConfig},
		{"GET " + eic, "GetFunctionEventInvokeConfig", s.getFunctionEventInvokeConfig},
		{"DELETE " + eic, "DeleteFunctionEventInvokeConfig", s.deleteFunctionEventInvokeConfig},
		{"GET " + eic + "/list", "ListFunctionEventInvokeConfigs", s.listFunctionEventInvokeConfigs},
		{"PUT /2019-09-30/functions/{FunctionName}/provisioned-concurrency", "PutProvisionedConcurrencyConfig", s.putProvisionedConcurrency},
		{"GET /2019-09-30/functions/{FunctionName}/provisioned-concurrency", "GetProvisionedConcurrencyConfig", s.getProvisionedConcurrency},
		{"DELETE /2019-09-30/functions/{FunctionName}/provisioned-concurrency", "DeleteProvisionedConcurrencyConfig", s.deleteProvisionedConcurrency},
		{"GET /2016-08-19/account-settings/{$}", "GetAccountSettings", s.getAccountSettings}, // botocore's path
		{"GET /2016-08-19/account-settings", "GetAccountSettings", s.getAccountSettings},     // the Go SDK's
	}
	routes = append(routes, s.settingRoutes()...)
	routes = append(routes, s.layerRoutes()...)
	routes = append(routes, s.urlRoutes()...)
	routes = append(routes, s.policyRoutes()...)
	if s.cfg.Mappings != nil {
		routes = append(routes, s.mappingRoutes()...)
	}
	for _, rt := range routes {
		mux.Handle(rt.pattern, s.handler(rt.op, rt.h))
	}
	// Every other path is no operation of the API: Lambda's error shape,
	// not Go's plain-text 404 (a more specific route registered by another
	// package still wins).
	mux.Handle("/", api.WithRequestID(http.HandlerFunc(api.UnknownOperationHandler)))
}

// route is an API route: its pattern, operation name and handler.
type route struct {
	pattern, op string
	h           func(*call) error
}

// call is one management request being served.
type call struct {
	w      http.ResponseWriter
	r      *http.Request
	ctx    context.Context
	op     string
	caller auth.Caller
}

func (s *Service) handler(op string, h func(*call) error) http.Handler {
	return api.WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, ok := auth.FromContext(r.Context())
		if !ok || caller.Account == "" {
			api.WriteError(w, api.Errorf(api.MissingAuthToken, "Missing Authentication Token"))
			return
		}
		c := &call{w: w, r: r, ctx: r.Context(), op: op, caller: caller}
		if err := h(c); err != nil {
			var e *api.Error
			if !errors.As(err, &e) {
				s.log.Error("control plane: internal error", "op", op, "path", r.URL.Path, "err", err)
			}
			api.WriteError(w, err)
		}
	}))
}

func (c *call) reply(status int, v any) error {
	api.WriteJSON(c.w, status, public(v))
	return nil
}

// public is v as Lambda shows it: without Kiln's record of where an image
// function's code is (KilnImage) and of its layers' content, which the
// metadata keeps in the same document.
func public(v any) any {
	list := func(cs []*api.FunctionConfiguration) []*api.FunctionConfiguration {
		out := make([]*api.FunctionConfiguration, len(cs))
		for i, c := range cs {
			out[i] = publicConfig(c)
		}
		return out
	}
	switch v := v.(type) {
	case *api.FunctionConfiguration:
		return publicConfig(v)
	case api.GetFunctionResponse:
		v.Configuration = publicConfig(v.Configuration)
		return v
	case api.ListFunctionsResponse:
		v.Functions = list(v.Functions)
		return v
	case api.ListVersionsByFunctionResponse:
		v.Versions = list(v.Versions)
		return v
	}
	return v
}

func publicConfig(c *api.FunctionConfiguration) *api.FunctionConfiguration {
	if c == nil || c.KilnImage == nil && len(c.Layers) == 0 {
		return c
	}
	cp := *c
	cp.KilnImage = nil
	cp.Layers = make([]api.Layer, len(c.Layers))
	for i, l := range c.Layers {
		cp.Layers[i] = api.Layer{Arn: l.Arn, CodeSize: l.CodeSize}
	}
	return &cp
}

// page answers a list call: its items under member, and NextMarker
// unless this is the last page.
func (c *call) page(member string, items any, next string) error {
	out := map[string]any{member: items}
	if next != "" {
		out["NextMarker"] = next
	}
	return c.reply(http.StatusOK, out)
}

func (c *call) noContent() error {
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// decode parses the JSON body into v. Malformed JSON is
// InvalidRequestContentException; well-formed JSON with a member of the wrong
// type (a string for an integer, bad base64 for a blob) is
// SerializationException. Unknown members are ignored.
func (c *call) decode(v any) error {
	body := auth.Body(c.r)
	if len(body) == 0 {
		body = []byte("{}")
	}
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) || errors.Is(err, io.ErrUnexpectedEOF) {
		return api.Errorf(api.InvalidRequestContent, "Could not parse request body into json: Could not parse payload into json: %v", err)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return api.Errorf(api.InvalidRequestBody, "Cannot deserialize value of type %s from %s at '%s'", typ.Type, typ.Value, typ.Field)
	}
	return api.Errorf(api.InvalidRequestBody, "Could not deserialize request body: %v", err)
}

// function parses the {FunctionName} path parameter (and, when
// qualified is true, the ?Qualifier= parameter) and checks that it names a
// function of the caller's account in this region. Operations that act on
// the unpublished function only (qualified false) accept no qualifier but
// "$LATEST".
func (s *Service) function(c *call, qualified bool) (api.FunctionRef, error) {
	ref, err := api.ParseFunctionRef(c.r.PathValue("FunctionName"))
	if err != nil {
		return ref, err
	}
	if qualified {
		if ref, err = ref.WithQualifier(c.r.URL.Query().Get("Qualifier")); err != nil {
			return ref, err
		}
	} else if ref.Qualifier == metadata.Latest {
		ref.Qualifier = ""
	} else if ref.Qualifier != "" {
		return ref, api.Errorf(api.InvalidParameterValue, "Unsupported qualifier %s for %s: the operation takes an unqualified function name or ARN.", ref.Qualifier, c.op)
	}
	return ref, s.checkOwner(c, ref)
}

// checkOwner refuses ARNs of another region or account. A function's
// resource-based policy grants other accounts invokes only (the frontend
// checks it), so another account's function is never managed from here:
// Lambda's AccessDeniedException, whether it exists or not.
func (s *Service) checkOwner(c *call, ref api.FunctionRef) error {
	if ref.Region != "" && ref.Region != s.cfg.Region {
		return api.Errorf(api.ResourceNotFound, "Functions from '%s' are not reachable in this region ('%s')", ref.Region, s.cfg.Region)
	}
	if ref.Account != "" && ref.Account != c.caller.Account {
		resource := api.QualifiedARN(s.cfg.Region, ref.Account, ref.Name, ref.Qualifier)
		return api.Errorf(api.AccessDenied, "User: arn:aws:iam::%s:root is not authorized to perform: lambda:%s on resource: %s because no resource-based policy allows the lambda:%s action",
			c.caller.Account, c.op, resource, c.op)
	}
	return nil
}

func (s *Service) arn(account, name, qualifier string) string {
	return api.QualifiedARN(s.cfg.Region, account, name, qualifier)
}

// notFound is Lambda's ResourceNotFoundException for a function or one of
// its versions.
func (s *Service) notFound(account, name, qualifier string) *api.Error {
	return api.Errorf(api.ResourceNotFound, "Function not found: %s", s.arn(account, name, qualifier))
}

// get reads a function, mapping "not found" to Lambda's error.
func (s *Service) get(c *call, name, qualifier string) (*metadata.Function, error) {
	f, err := s.store.Get(c.ctx, c.caller.Account, name)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, s.notFound(c.caller.Account, name, qualifier)
	}
	return f, err
}

// modify applies change to a function with compare-and-set retries.
func (s *Service) modify(c *call, name string, change func(*metadata.Function) error) (*metadata.Function, error) {
	f, err := s.store.Modify(c.ctx, c.caller.Account, name, change)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, s.notFound(c.caller.Account, name, "")
	}
	return f, err
}

// errUnchanged aborts a modify without writing; the handler answers as if
// the change had been made (nothing to do).
var errUnchanged = errors.New("unchanged")

func revisionMismatch() *api.Error {
	return api.Errorf(api.PreconditionFailed, "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id")
}

// timestamp is Lambda's LastModified format.
func (s *Service) timestamp() string {
	return s.cfg.Now().UTC().Format("2006-01-02T15:04:05.000-0700")
}

// validation is Lambda's answer to a request that breaks a constraint of
// the model.
func validation(value any, field, constraint string) *api.Error {
	v := "null"
	if value != nil {
		v = fmt.Sprintf("'%v'", value)
	}
	return api.Errorf(api.Validation, "1 validation error detected: Value %s at '%s' failed to satisfy constraint: %s", v, field, constraint)
}

// between is Lambda's validation of a number member from lo to hi.
func between(v int, field string, lo, hi int) error {
	switch {
	case v < lo:
		return validation(v, field, fmt.Sprintf("Member must have value greater than or equal to %d", lo))
	case v > hi:
		return validation(v, field, fmt.Sprintf("Member must have value less than or equal to %d", hi))
	}
	return nil
}

// pageQuery is a list call's Marker and page size.
type pageQuery struct {
	marker   string
	maxItems int
}

// listQuery reads Marker and MaxItems; perPage caps a page (Lambda returns
// at most 50 functions or versions per page, whatever MaxItems says).
func listQuery(r *http.Request, perPage int) (pageQuery, error) {
	q := r.URL.Query()
	p := pageQuery{marker: q.Get("Marker"), maxItems: perPage}
	if s := q.Get("MaxItems"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return p, validation(s, "maxItems", "Member must be an integer")
		}
		if err := between(n, "maxItems", 1, 10000); err != nil {
			return p, err
		}
		p.maxItems = min(n, perPage)
	}
	return p, nil
}

// paginate returns the page of items (sorted by key) after p.marker, and the
// marker of the next page ("" on the last). Markers are opaque to clients:
// the base64url of the last key returned, so a page stays correct when items
// are added or removed between calls.
func paginate[T any](items []T, key func(T) string, p pageQuery) ([]T, string, error) {
	start := 0
	if p.marker != "" {
		m, err := base64.RawURLEncoding.DecodeString(p.marker)
		if err != nil {
			return nil, "", api.Errorf(api.InvalidParameterValue, "Invalid marker: %s", p.marker)
		}
		start = sort.Search(len(items), func(i int) bool { return key(items[i]) > string(m) })
	}
	end := min(start+p.maxItems, len(items))
	next := ""
	if end < len(items) {
		next = base64.RawURLEncoding.EncodeToString([]byte(key(items[end-1])))
	}
	return items[start:end], next, nil
}
