package roles

import (
	"context"
	"net/http"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/logs"
)

// FrontendConfig is what the frontend role is built from: the invoke
// frontend's own dependencies (the function store, counting, assignment,
// the async enqueuer, metrics) and the APIs served beside it.
type FrontendConfig struct {
	frontend.Config
	Keyring *auth.Keyring
	// Services serves POST /: the JSON services other than Lambda's REST
	// API, chosen by X-Amz-Target (the CloudWatch Logs API in both modes);
	// nil answers UnknownOperationException.
	Services http.Handler
	// Management adds the Lambda management API to a mux of signed
	// requests (served under "/"): the control plane itself in kiln up, a
	// proxy to one in a cluster.
	Management func(signed *http.ServeMux)
	// Gate, when set, wraps the signed routes (kiln up refuses writes with
	// it while its store's disk is full).
	Gate func(http.Handler) http.Handler
	// Unsigned adds routes served without a signature (code downloads,
	// whose URLs carry their own); GET /kiln/health is always there.
	Unsigned func(root *http.ServeMux)
}

// Frontend is the assembled frontend role.
type Frontend struct {
	*frontend.Frontend
	// Handler serves every route: unsigned ones, then, behind SigV4 and
	// the body limits, invokes, the services of POST / and the management
	// API.
	Handler http.Handler
}

// NewFrontend builds the frontend role; its metadata cache follows the
// function store until ctx ends.
func NewFrontend(ctx context.Context, cfg FrontendConfig) (*Frontend, error) {
	front, err := frontend.New(ctx, cfg.Config)
	if err != nil {
		return nil, err
	}
	signed := http.NewServeMux()
	front.Register(signed)
	signed.HandleFunc("POST /{$}", func(w http.ResponseWriter, r *http.Request) {
		if cfg.Services == nil {
			logs.UnknownOperation(w, r.Header.Get("X-Amz-Target"))
			return
		}
		cfg.Services.ServeHTTP(w, r)
	})
	if cfg.Management != nil {
		// Every write through this frontend is served to its next invoke
		// at once (read your writes), not when the cache's watch sees it.
		mgmt := http.NewServeMux()
		cfg.Management(mgmt)
		signed.Handle("/", forgetChanged(mgmt, front.Forget))
	}
	root := http.NewServeMux()
	root.HandleFunc("GET /kiln/health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	if cfg.Unsigned != nil {
		cfg.Unsigned(root)
	}
	var h http.Handler = signed
	if cfg.Gate != nil {
		h = cfg.Gate(signed)
	}
	root.Handle("/", auth.Middleware(cfg.Keyring, BodyLimit, h))
	// Function URLs sign (AWS_IAM) or not (NONE) by their own settings:
	// served before the SigV4 check, by path or by host name.
	urls := front.URLs(cfg.Keyring, AuthorizeURL) // the resource policy, in every assembly
	root.Handle(frontend.URLPathPrefix, urls)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if frontend.URLHostID(r.Host, cfg.Region) != "" {
			urls.ServeHTTP(w, r)
			return
		}
		root.ServeHTTP(w, r)
	})
	return &Frontend{Frontend: front, Handler: api.WithRequestID(handler)}, nil
}

// forgetChanged calls forget for the function a management call changed
// (any successful call but a GET under functions/NAME), once the control
// plane has answered: the caller's next invoke through this frontend runs
// what it just changed.
func forgetChanged(next http.Handler, forget func(account, name string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		caller, ok := auth.FromContext(r.Context())
		if r.Method == http.MethodGet || sw.status >= 300 || !ok {
			return
		}
		_, rest, _ := strings.Cut(r.URL.Path, "/functions/")
		name, _, _ := strings.Cut(rest, "/")
		if ref, err := api.ParseFunctionRef(name); err == nil && ref.Name != "" {
			forget(caller.Account, ref.Name)
		}
	})
}

// statusWriter notes the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets the proxy reach the connection's flushing.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
