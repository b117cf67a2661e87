// Package server assembles every role of Kiln in one process: the embedded
// NATS JetStream server, the control plane, the frontend, counting,
// assignment, placement and a worker, behind one HTTP listener.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/console"
	"github.com/kiln-dev/kiln/internal/controlplane"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/handoff"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/metrics"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/placement"
	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/kiln-dev/kiln/internal/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures `kiln up`. The zero value serves on 127.0.0.1:9000 with
// data under ./.kiln.
type Config struct {
	DataDir string // default ./.kiln
	Listen  string // default 127.0.0.1:9000; port 0 picks a free one
	Region  string // default us-east-1
	// Default account; generated on first start and kept when empty.
	AccountID, AccessKeyID, SecretAccessKey string
	// AccountConcurrency is the account's concurrency limit; 0 means 1000.
	AccountConcurrency int
	// MetricsListen is where Prometheus metrics are served (/metrics);
	// empty means nowhere.
	MetricsListen string
	// Pprof also serves Go's profiles (/debug/pprof/) on the metrics
	// listener: they show the process's memory and stacks, so only when asked.
	Pprof bool
	// TLSCert and TLSKey are PEM files of a certificate and key to serve
	// the API over HTTPS with.
	TLSCert, TLSKey string
	// TLS serves HTTPS with a certificate Kiln makes when TLSCert is empty:
	// a CA and a server certificate for the listen address, under
	// DataDir/tls; the AWS config file names the CA as ca_bundle.
	TLS bool
	// ScaleUnlimited turns the per-function scaling rate (1,000 new
	// environments per 10 s) off.
	ScaleUnlimited bool
	// LogMaxBytes bounds the stored logs of all functions together (the
	// oldest go first); 0 means DefaultLogMaxBytes, negative no bound.
	LogMaxBytes int64
	// LogRetentionDays is how long the logs of a function without a
	// retention policy (PutRetentionPolicy) are kept; 0 means
	// DefaultLogRetentionDays, negative never expire.
	LogRetentionDays int
	// IdleTimeout is how long an idle execution environment lives; 0 means 10 min.
	IdleTimeout time.Duration
	// Sandbox is the isolation backend; nil means worker.ProcessSandbox.
	Sandbox worker.Sandbox
	// Async tunes asynchronous (Event) invokes: retry delays, backoff,
	// pollers and their concurrency; zero fields take Lambda's timings.
	Async eventinvoke.Tuning
	// NATSListen is host:port where NATS clients outside this process reach
	// the embedded JetStream (to read Kiln queues); empty means none. It
	// has no authentication: keep it on loopback.
	NATSListen string
	// EventFrontend is the command that runs the event-invoke frontend as a
	// process of its own at idle CPU priority (`kiln event-frontend`; see
	// events.go), so that a flood of Event invokes leaves the CPUs to sync
	// invokes. Empty: this process takes Event invokes itself.
	EventFrontend []string
	// ImageArchives is the directory of image archives that ImageUri
	// docker-archive:FILE and oci-archive:FILE name; empty means
	// DATA/image-archives.
	ImageArchives string
	// ImageS3 is a file (0600) of tier.S3Config: the authoritative chunk
	// store is that bucket, not DATA/chunks. Empty means the directory.
	ImageS3 string
	// Collect configures the collection of code no function uses.
	Collect roles.CollectConfig
	Logger  *slog.Logger
}

// Defaults of kiln up's function logs: a bounded store, and a retention
// for log groups without a policy (CloudWatch Logs keeps them forever).
const (
	DefaultLogMaxBytes      = 1 << 30
	DefaultLogRetentionDays = 30
)

// orDefault is v, def when v is zero, and zero (none) when v is negative.
func orDefault[T int | int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Server is a running Kiln.
type Server struct {
	Endpoint string // http://host:port
	Region   string
	Identity Identity
	// NewSecret says this start generated the secret key (the first start
	// on an empty data directory, without keys given in Config).
	NewSecret bool
	DataDir   string
	// MetricsEndpoint is the URL of the metrics, when served.
	MetricsEndpoint string
	NATSURL         string // nats://host:port when Config.NATSListen is set

	// The components, which tests reach through components.go.
	worker     *worker.Worker
	assignment *assignment.Service
	counter    *counting.Counter
	functions  *metadata.Store
	logs       *logs.Store
	metrics    *metrics.Set
	async      *eventinvoke.Service
	queues     *queues.Service
	streams    *streams.Service
	pollers    *esm.Pollers // event source mappings

	logger      *slog.Logger
	http        *http.Server
	metricsHTTP *http.Server
	nats        *natsd.Server
	nc          *nats.Conn
	images      *imageStack
	cp          *controlplane.Service
	asyncNC     *nats.Conn
	events      *eventFrontend
	cancel      context.CancelFunc
	done        chan error
	closeOnce   sync.Once

	storeRefusals atomic.Int64
}

// Start runs every role and returns once Kiln accepts requests.
func Start(ctx context.Context, cfg Config) (s *Server, err error) {
	if cfg.DataDir == "" {
		cfg.DataDir = ".kiln"
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:9000"
	}
	if cfg.Region == "" {
		cfg.Region = roles.DefaultRegion
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	id, newSecret, err := loadIdentity(dir, cfg)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("tls: give both a certificate and its key")
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	scheme, caBundle := "http", ""
	if cfg.TLS || cfg.TLSCert != "" {
		var conf *tls.Config
		if conf, caBundle, err = serverTLS(cfg, dir, ln.Addr()); err != nil {
			return nil, err
		}
		ln = tls.NewListener(ln, conf)
		// Handing a connection to another process moves its descriptor,
		// which a TLS session does not survive: Event invokes are taken here.
		scheme, cfg.EventFrontend = "https", nil
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s = &Server{Endpoint: scheme + "://" + ln.Addr().String(), Region: cfg.Region, Identity: id, NewSecret: newSecret, DataDir: dir,
		cancel: cancel, done: make(chan error, 1), logger: cfg.Logger}
	started := s // a failing return clears s
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	if err := roles.WriteAWSFiles(dir, id, cfg.Region, s.Endpoint, caBundle); err != nil {
		return nil, fmt.Errorf("aws files: %w", err)
	}

	natsCfg := natsd.Config{Dir: filepath.Join(dir, "nats"), Listen: cfg.NATSListen}
	if len(cfg.EventFrontend) > 0 && natsCfg.Listen == "" {
		// The event frontend process reaches JetStream over loopback; no
		// one else may.
		natsCfg.Listen, natsCfg.Password = "127.0.0.1:0", natsPassword()
	}
	if s.nats, err = natsd.Start(natsCfg); err != nil {
		return nil, err
	}
	if cfg.NATSListen != "" {
		s.NATSURL = s.nats.ClientURL()
	}
	if s.nc, err = s.nats.Connect(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, err
	}
	if s.functions, err = metadata.Open(ctx, js, metadata.Config{}); err != nil {
		return nil, err
	}
	keyring, accts, err := id.FollowKeyring(runCtx, js, cfg.Region, 1)
	if err != nil {
		return nil, err
	}
	code, err := codestore.Open(codestore.Config{Dir: filepath.Join(dir, "code")})
	if err != nil {
		return nil, err
	}

	s.counter = counting.New(counting.Config{AccountLimit: cfg.AccountConcurrency, Unlimited: cfg.ScaleUnlimited})
	place := placement.New()
	logMax := orDefault(cfg.LogMaxBytes, DefaultLogMaxBytes)
	if cfg.LogMaxBytes == 0 {
		// The default cap is reserved inside JetStream's store, which is
		// sized from the free disk: on a small disk it takes a quarter, so
		// that Kiln still starts and functions and events keep the rest.
		logMax = min(logMax, s.nats.MaxStore()/4)
	}
	if s.logs, err = logs.Open(ctx, js, logs.Config{MaxBytes: logMax,
		RetentionDays: orDefault(cfg.LogRetentionDays, DefaultLogRetentionDays), Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if s.images, err = openImages(ctx, dir, cfg.ImageArchives, cfg.ImageS3, cfg.Sandbox, keyring, ln.Addr().String()); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	s.metrics = metrics.New()
	// Functions reach Kiln's API in process (the frontend's handler, once
	// it exists; provisioned environments may start before).
	var fnAPI atomic.Pointer[http.Handler]
	wcfg := roles.WorkerConfig{Region: cfg.Region, DataDir: dir, Code: code,
		Sandbox: cfg.Sandbox, Logs: s.logs, Metrics: s.metrics, Logger: cfg.Logger, Sessions: id.Sessions(),
		API: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h := fnAPI.Load(); h != nil {
				(*h).ServeHTTP(w, r)
				return
			}
			api.WriteError(w, &api.Error{Status: http.StatusServiceUnavailable, Type: api.ServiceUnavailable, Message: "Kiln is starting"})
		})}
	wcfg.Images = s.images.Source()
	if s.worker, err = roles.NewWorker(wcfg); err != nil {
		return nil, err
	}
	place.Register(placement.WorkerInfo{ID: s.worker.ID()})
	s.assignment = assignment.New(assignment.Config{Placement: place, Scale: s.counter, IdleTimeout: cfg.IdleTimeout, Logger: cfg.Logger})
	s.assignment.AddWorker(s.worker)

	fns, err := s.functions.All(ctx) // of every account
	if err != nil {
		return nil, err
	}
	for _, f := range fns {
		s.counter.SetReserved(counting.Key{Account: f.Account, Function: f.Name}, f.ReservedConcurrency)
		s.provision(f)
	}
	// The async path has a NATS connection of its own, so that a flood of
	// events never queues up the other roles' traffic.
	if s.asyncNC, err = s.nats.Connect(); err != nil {
		return nil, err
	}
	if s.async, err = eventinvoke.New(ctx, eventinvoke.Config{NATS: s.asyncNC, Region: cfg.Region,
		Tuning: cfg.Async, InvokesInFlight: s.counter.Running, StoreFull: s.nats.StoreFull, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if s.queues, err = queues.New(ctx, queues.Config{NATS: s.asyncNC, Region: cfg.Region, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if s.streams, err = streams.New(ctx, streams.Config{NATS: s.asyncNC, Region: cfg.Region, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	s.metrics.Register(s.streams.Metrics())
	s.images.Register(s.metrics)
	for _, state := range []string{"idle", "busy", "provisioned"} {
		s.metrics.Register(metrics.GaugeFunc("kiln_environments", "Execution environments by state (provisioned counts those kept for provisioned concurrency).",
			prometheus.Labels{"state": state}, func() float64 {
				st := s.assignment.Stats("", "")
				return float64(map[string]int{"idle": st.Idle, "busy": st.Busy, "provisioned": st.Provisioned}[state])
			}))
	}
	s.metrics.Register(metrics.GaugeFunc("kiln_log_stored_bytes", "Bytes of function logs stored; at kiln_log_max_bytes the oldest events go.", nil,
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, _ := s.logs.StoredBytes(ctx)
			return float64(n)
		}))
	s.metrics.Register(metrics.GaugeFunc("kiln_log_max_bytes", "The bound on stored function logs (0: none).", nil,
		func() float64 { return float64(logMax) }))
	s.metrics.Register(metrics.GaugeFunc("kiln_store_disk_full",
		"1 while the disk of Kiln's store (JetStream, DATA/nats) is full: Event invokes and changes are refused with a retryable 503 ServiceException.",
		nil, func() float64 {
			if s.nats.Disk().Full {
				return 1
			}
			return 0
		}))
	s.metrics.Register(metrics.GaugeFunc("kiln_store_disk_free_bytes", "Free bytes on the file system of Kiln's store.",
		nil, func() float64 { return float64(s.nats.Disk().FreeBytes) }))
	s.metrics.Register(metrics.CounterFunc("kiln_store_disk_full_refusals_total", "Requests refused because the store's disk was full.", nil,
		func() float64 { return float64(s.storeRefusals.Load()) }))
	if cfg.MetricsListen != "" {
		if s.MetricsEndpoint, s.metricsHTTP, err = roles.ServeMetrics(cfg.MetricsListen, s.metrics, cfg.Pprof); err != nil {
			return nil, err
		}
	}
	series := console.NewSeries(0)
	var con *console.Console // made with the control plane, before anything is served
	conHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { con.ServeHTTP(w, r) })
	// The control plane is registered once it exists: it needs the
	// pollers' store of mappings, and they invoke through the frontend.
	cpMux := http.NewServeMux()
	front, err := roles.NewFrontend(runCtx, roles.FrontendConfig{
		Config: frontend.Config{Functions: s.functions, Counter: s.counter, Assignment: s.assignment, Region: cfg.Region,
			OnFunctionChange: s.functionChanged, Async: s.async, Metrics: s.metrics, Observer: series, Logger: cfg.Logger},
		Keyring:    keyring,
		Gate:       s.storeGate,
		Services:   roles.Services(s.logs.Handler(), s.queues.Handler(), s.streams.Handler()),
		Management: func(signed *http.ServeMux) { signed.Handle("/", cpMux) },
		Unsigned: func(root *http.ServeMux) {
			root.Handle("/console/", conHandler) // its own sign-in; its API also takes SigV4
			root.Handle("/console", conHandler)
			root.Handle("/kiln/code/", cpMux)
			root.Handle("/v2/", s.images.registry) // its own authentication: registry clients do not sign
		},
	})
	if err != nil {
		return nil, err
	}
	s.async.Start(front)
	if s.pollers, err = esm.New(ctx, esm.Config{NATS: s.asyncNC, Invoker: front, Queues: s.queues, Streams: s.streams, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	s.pollers.Start()
	cpcfg := controlplane.Config{Store: s.functions, Code: code, Region: cfg.Region,
		URLSecret: id.URLSecret, AccountConcurrency: s.counter.AccountLimit(),
		Mappings: s.pollers.Store(), Queues: s.queues, Streams: s.streams}
	if s.images.Mounter != nil { // images are refused where they could not run
		cpcfg.Images = s.images.Store
	}
	cp := controlplane.New(cpcfg)
	s.cp = cp
	roles.RegisterImports(s.metrics, cp)
	con = console.New(console.Config{Keyring: keyring, Region: cfg.Region, Admin: func(a string) bool { return a == id.AccountID },
		Functions: s.functions, Series: series, Fleet: fleet{place, s.assignment}, Logs: s.logs, Async: s.async,
		Mappings: s.pollers.Store(), Logger: cfg.Logger})

	collectKV, err := roles.OpenCollectKV(ctx, js, 1, cfg.Collect)
	if err != nil {
		return nil, err
	}
	collector := roles.NewCollector(collectKV, cp, cfg.Collect, s.metrics, s.logger)
	// Before the API is served no upload is in flight: every package no
	// function references is left over from a create or update that a
	// crash cut short. (A lease left by a kiln up killed while collecting
	// skips it: the periodic collection runs once the lease expires.)
	if _, err := collector.Collect(ctx, 0, false); err != nil && !errors.Is(err, roles.ErrCollecting) {
		return nil, err
	}
	go collector.Run(runCtx, s.nc)
	cp.Register(cpMux)
	accts.Register(cpMux)
	cpMux.Handle("/kiln/code/", cp.CodeHandler())
	root := front.Handler
	fnAPI.Store(&root)

	var events atomic.Pointer[eventFrontend]
	s.http = &http.Server{ReadHeaderTimeout: 30 * time.Second, MaxHeaderBytes: handoff.MaxHead,
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if e := events.Load(); e != nil && s.nats.StoreFull() == nil { // else refused here
				e.serveHTTP(w, r, root)
				return
			}
			root.ServeHTTP(w, r)
		})}
	s.http.RegisterOnShutdown(con.Close)
	// Not s: a failing Start returns a nil *Server, and Serve ends then.
	go func(srv *http.Server, done chan<- error) { done <- srv.Serve(ln) }(s.http, s.done)
	if len(cfg.EventFrontend) > 0 {
		s.events, err = startEventFrontend(ctx, cfg.EventFrontend, EventFrontendConfig{NATSURL: s.nats.ClientURL(),
			NATSPassword: natsCfg.Password, Region: cfg.Region, Identity: id, Shards: cfg.Async.Shards},
			func(l net.Listener) { s.http.Serve(l) }, s.async.EnqueueSeen, cfg.Logger)
		if err != nil {
			return nil, err
		}
		events.Store(s.events)
		s.metrics.Register(metrics.CounterFunc("kiln_event_frontend_handoffs_total",
			"Client connections handed to the event-invoke frontend process (each carries Event invokes until a request on it is something else).",
			nil, func() float64 { return float64(s.events.handoffs.Load()) }))
	}
	return s, nil
}

// storeGate refuses, while the store's disk is full, every request that
// would write to it (all but sync invokes, which may run from the metadata
// cache): with a 503 that the SDKs retry and a message naming the cause,
// instead of a write that hangs or fails inside JetStream.
func (s *Server) storeGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.nats.StoreFull(); err != nil && (!isInvoke(r) || isEventInvoke(r)) {
			s.storeRefusals.Add(1)
			api.WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// functionChanged keeps counting and assignment in step with the control plane.
func (s *Server) functionChanged(account, name string) {
	f, err := s.functions.Get(context.Background(), account, name)
	key := counting.Key{Account: account, Function: name}
	if errors.Is(err, metadata.ErrNotFound) {
		s.counter.SetReserved(key, nil)
		s.assignment.SetProvisioned(account, name, nil)
		s.assignment.Retire(account, name, func(string, string) bool { return false })
		return
	}
	if err != nil {
		return
	}
	s.counter.SetReserved(key, f.ReservedConcurrency)
	s.assignment.Retire(account, name, func(version, revision string) bool {
		c, ok := f.Version(version)
		return ok && c.RevisionId == revision
	})
	s.provision(f)
}

// provision hands f's provisioned concurrency to assignment, which reports
// progress back into the function's metadata (IN_PROGRESS, READY, FAILED).
func (s *Server) provision(f *metadata.Function) {
	s.assignment.SetProvisioned(f.Account, f.Name, assignment.ProvisionsOf(f, func(qualifier string, requested, allocated int, failure error) {
		if err := assignment.ReportProvisioned(context.Background(), s.functions, f.Account, f.Name, qualifier, requested, allocated, failure); err != nil {
			s.logger.Warn("provisioned concurrency status", "function", f.Name, "qualifier", qualifier, "err", err)
		}
	}))
}

// Close stops serving, ends every execution environment and stops NATS.
func (s *Server) Close() error {
	s.closeOnce.Do(s.close)
	return nil
}

func (s *Server) close() {
	if s.metricsHTTP != nil {
		s.metricsHTTP.Close()
	}
	if s.events != nil { // before NATS: its enqueues under way finish
		s.events.close()
	}
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.http.Shutdown(ctx)
		cancel()
	}
	if s.cp != nil { // its image imports resume at the next start
		s.cp.Close()
	}
	if s.async != nil { // pollers invoke through assignment and the worker: stop them first
		s.async.Close()
	}
	if s.pollers != nil {
		s.pollers.Close()
	}
	if s.assignment != nil {
		s.assignment.Close()
	}
	if s.worker != nil {
		s.worker.Close()
	}
	if s.images != nil { // after the environments that used them
		s.images.Close()
	}
	if s.logs != nil {
		s.logs.Close()
	}
	s.cancel()
	if s.nc != nil {
		s.nc.Close()
	}
	if s.asyncNC != nil {
		s.asyncNC.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
	}
}

// Done reports the HTTP server's end.
func (s *Server) Done() <-chan error { return s.done }
