package roles

import (
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"

	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/kiln-dev/kiln/internal/metrics"
	"github.com/kiln-dev/kiln/internal/runtimes"
	"github.com/kiln-dev/kiln/internal/worker"
	"github.com/prometheus/client_golang/prometheus"
)

// WorkerConfig is what the worker role is built from.
type WorkerConfig struct {
	ID     string // empty: the worker picks one
	Region string
	// DataDir holds the installed runtimes (DataDir/runtimes).
	DataDir string
	// Code gives the worker function code: the local code store in kiln
	// up, code fetched from the control plane in a cluster.
	Code worker.CodeSource
	// Sandbox isolates environments; nil runs plain processes.
	Sandbox worker.Sandbox
	// Logs receives environments' output and START/END/REPORT: the
	// replicated log store (*logs.Store) in both modes.
	Logs logline.Sink
	// Images presents image functions' code; nil runs zip functions only.
	Images worker.ImageSource
	// Metrics receives the worker's metrics; nil records none.
	Metrics *metrics.Set
	// API is Kiln's API as functions reach it from inside their sandboxes
	// (in-process in kiln up, a proxy to a frontend in a cluster), and
	// Sessions issues each environment's credentials for it; without
	// both, functions reach none of Kiln and get no credentials.
	API      http.Handler
	Sessions *auth.Sessions
	Logger   *slog.Logger
}

// dropCounter is a log sink that drops lines when it cannot keep up
// (*logs.Store).
type dropCounter interface{ Dropped() uint64 }

// NewWorker installs the runtimes and returns the worker.
func NewWorker(cfg WorkerConfig) (*worker.Worker, error) {
	dir := filepath.Join(cfg.DataDir, "runtimes")
	if err := runtimes.Install(dir); err != nil {
		return nil, fmt.Errorf("runtimes: %w", err)
	}
	wcfg := worker.Config{ID: cfg.ID, Region: cfg.Region, RuntimeDir: dir, Code: cfg.Code,
		Sandbox: cfg.Sandbox, Logs: cfg.Logs, Images: cfg.Images, Logger: cfg.Logger}
	if cfg.API != nil && cfg.Sessions != nil {
		wcfg.API = cfg.API
		wcfg.Credentials = func(account, function string) []string {
			c := cfg.Sessions.Issue(account, function, auth.SessionLifetime)
			return []string{"AWS_ACCESS_KEY_ID=" + c.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + c.SecretAccessKey,
				"AWS_SESSION_TOKEN=" + c.SessionToken}
		}
	}
	w := worker.New(wcfg)
	if cfg.Metrics != nil {
		const help = "Lines of functions' logs dropped: over the function's log rate limit (rate_limit), or with the log store's queue full (queue_full)."
		cfg.Metrics.Register(metrics.CounterFunc("kiln_log_lines_dropped_total", help, prometheus.Labels{"reason": "rate_limit"},
			func() float64 { return float64(w.LogDropped()) }))
		if d, ok := cfg.Logs.(dropCounter); ok {
			cfg.Metrics.Register(metrics.CounterFunc("kiln_log_lines_dropped_total", help, prometheus.Labels{"reason": "queue_full"},
				func() float64 { return float64(d.Dropped()) }))
		}
	}
	return w, nil
}
