// Package console is Kiln's web console, served at /console by `kiln up`
// and by every cluster frontend on their API listener: the functions of
// the signed-in account (or of all accounts, for the admin key), a
// function's last hour (invocations, errors, throttles, duration and init
// percentiles, cold starts), its environments, live logs, async queue and
// event source mappings, and the fleet (workers, bookings, assignment
// partitions, cold starts by cause). Pages are plain HTML, CSS and JS
// embedded in the binary; they update over server-sent events, and every
// view is also a JSON endpoint (docs/console.md) that takes the session
// cookie or a SigV4 signature.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/metadata"
)

//go:embed static
var static embed.FS

// FleetSource reports the fleet: `kiln up` from its own placement and
// assignment, a cluster frontend by asking placement and the assignment
// members over NATS.
type FleetSource interface {
	Fleet(ctx context.Context) (*Fleet, error)
}

// Config is what the console reads. Keyring, Functions and Fleet are
// required; Logs, Async and Mappings may be nil (that part is left out).
type Config struct {
	Keyring *auth.Keyring
	Region  string
	// Admin tells whether an account sees every account (and the fleet):
	// any key of the admin account does, including keys added at run time.
	Admin     func(account string) bool
	Functions *metadata.Store
	Series    *Series
	Fleet     FleetSource
	Logs      *logs.Store
	Async     *eventinvoke.Service
	Mappings  *esm.Store
	// Peers, in a cluster, are the other frontends, whose series every
	// view adds to this one's.
	Peers Peers
	// Every is how often a live view is recomputed for its open pages; 0
	// means a second.
	Every  time.Duration
	Logger *slog.Logger
}

// Console serves the pages and their data.
type Console struct {
	cfg      Config
	sessions *sessions
	mux      *http.ServeMux
	closed   chan struct{}
	close    sync.Once
	peers    peerCache
}

// contentSecurity allows the page's own files only: no inline script or
// style, no other origin, no framing. Names and log lines are put into the
// page as text (textContent) besides.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// New returns the console.
func New(cfg Config) *Console {
	if cfg.Series == nil {
		cfg.Series = NewSeries(0)
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Admin == nil {
		cfg.Admin = func(string) bool { return false }
	}
	c := &Console{cfg: cfg, sessions: newSessions(cfg.Keyring, cfg.Region), mux: http.NewServeMux(), closed: make(chan struct{})}
	files, _ := fs.Sub(static, "static")
	c.mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusFound)
	})
	c.mux.Handle("GET /console/", http.StripPrefix("/console/", http.FileServerFS(files)))
	c.mux.HandleFunc("GET /console/api/nonce", c.nonce)
	c.mux.HandleFunc("POST /console/api/signin", c.signIn)
	c.mux.HandleFunc("POST /console/api/signout", func(w http.ResponseWriter, r *http.Request) {
		setCookie(w, r, "", time.Time{})
		w.WriteHeader(http.StatusNoContent)
	})
	c.mux.Handle("GET /console/api/whoami", c.signed(func(w http.ResponseWriter, r *http.Request, v viewer) {
		writeJSON(w, map[string]any{"accessKeyId": v.AccessKeyID, "account": v.Account, "admin": v.admin})
	}))
	c.mux.Handle("GET /console/api/functions", c.signed(c.view(func(ctx context.Context, r *http.Request, v viewer) (any, error) {
		return c.functions(ctx, v)
	})))
	c.mux.Handle("GET /console/api/functions/{account}/{name}", c.signed(c.view(func(ctx context.Context, r *http.Request, v viewer) (any, error) {
		return c.function(ctx, v, r.PathValue("account"), r.PathValue("name"))
	})))
	c.mux.Handle("GET /console/api/functions/{account}/{name}/logs", c.signed(c.logs))
	c.mux.Handle("GET /console/api/fleet", c.signed(c.view(func(ctx context.Context, r *http.Request, v viewer) (any, error) {
		return c.fleet(ctx, v)
	})))
	c.mux.Handle("GET /console/api/stream", c.signed(c.stream))
	return c
}

// Close ends the open streams (an HTTP server's Shutdown waits for its
// handlers, and a stream's would run until its page closes): pass it to
// http.Server.RegisterOnShutdown.
func (c *Console) Close() { c.close.Do(func() { close(c.closed) }) }

// ServeHTTP serves everything under /console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurity)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// viewer is who asks: a session's or a signature's key.
type viewer struct {
	auth.Credential
	admin bool
}

// sees tells whether v may see account's functions.
func (v viewer) sees(account string) bool { return v.admin || v.Account == account }

// signed admits a request with a session cookie or a SigV4 signature
// (scripts), and refuses any other with 403 AccessDeniedException.
func (c *Console) signed(next func(http.ResponseWriter, *http.Request, viewer)) http.Handler {
	withViewer := func(w http.ResponseWriter, r *http.Request, cred auth.Credential) {
		next(w, r, viewer{Credential: cred, admin: c.cfg.Admin(cred.Account)})
	}
	sigv4 := auth.Middleware(c.cfg.Keyring, func(*http.Request) (int64, *api.Error) {
		return 0, api.Errorf(api.RequestTooLarge, "The console's API takes no request body")
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, _ := auth.FromContext(r.Context())
		cred, ok := c.cfg.Keyring.Lookup(caller.AccessKeyID)
		if !ok {
			api.WriteError(w, api.Errorf(api.AccessDenied, "unknown access key"))
			return
		}
		withViewer(w, r, cred)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			sigv4.ServeHTTP(w, r)
			return
		}
		ck, err := r.Cookie(CookieName)
		if err != nil {
			api.WriteError(w, api.Errorf(api.AccessDenied, "Sign in to the console, or sign the request with SigV4."))
			return
		}
		cred, err := c.sessions.check(time.Now(), ck.Value)
		if err != nil {
			api.WriteError(w, api.Errorf(api.AccessDenied, "%s", err.Error()))
			return
		}
		withViewer(w, r, cred)
	})
}

func (c *Console) nonce(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]string{"nonce": c.sessions.nonce(time.Now()), "region": c.cfg.Region, "service": signingService})
}

// signIn takes {"accessKeyId","nonce","proof"} as JSON: a cross-origin page
// cannot send that content type without a preflight Kiln never grants, and
// without the secret it cannot make a proof anyway.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != "application/json" {
		api.WriteError(w, api.Errorf(api.InvalidRequestContent, "sign-in takes application/json"))
		return
	}
	var in struct{ AccessKeyID, Nonce, Proof string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil {
		api.WriteError(w, api.Errorf(api.InvalidRequestContent, "sign-in: %v", err))
		return
	}
	cred, err := c.sessions.signIn(time.Now(), in.AccessKeyID, in.Nonce, in.Proof)
	if err != nil {
		api.WriteError(w, api.Errorf(api.AccessDenied, "%s", err.Error()))
		return
	}
	expires := time.Now().Add(SessionTTL)
	setCookie(w, r, c.sessions.cookie(cred, expires), expires)
	writeJSON(w, map[string]any{"account": cred.Account, "admin": c.cfg.Admin(cred.Account)})
}

// view serves one view as JSON.
func (c *Console) view(build func(context.Context, *http.Request, viewer) (any, error)) func(http.ResponseWriter, *http.Request, viewer) {
	return func(w http.ResponseWriter, r *http.Request, v viewer) {
		out, err := build(r.Context(), r, v)
		if err != nil {
			c.writeError(w, err)
			return
		}
		writeJSON(w, out)
	}
}

func (c *Console) writeError(w http.ResponseWriter, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		c.cfg.Logger.Warn("console", "err", err) // the caller sees a ServiceException without it
	}
	api.WriteError(w, err)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
