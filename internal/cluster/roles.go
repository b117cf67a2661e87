package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/accounts"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/console"
	"github.com/kiln-dev/kiln/internal/controlplane"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/metrics"
	"github.com/kiln-dev/kiln/internal/pki"
	"github.com/kiln-dev/kiln/internal/placement"
	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/kiln-dev/kiln/internal/replica"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/kiln-dev/kiln/internal/slots"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/kiln-dev/kiln/internal/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS subjects between roles.
const (
	subjHeartbeat  = "kiln.placement.heartbeat"
	subjPlace      = "kiln.placement.place"
	subjRelease    = "kiln.placement.release"
	subjDrain      = "kiln.placement.drain"
	subjWorkers    = "kiln.placement.workers"
	subjCPWhere    = "kiln.controlplane.where"
	subjFrontWhere = "kiln.frontend.where"
)

// clusterIdentity is the default account and the secrets roles share; each role
// reads what it needs of it from its bundle's identity.json (secrets.go).
type clusterIdentity struct {
	AccountID       string `json:"account_id"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	URLSecret       []byte `json:"url_secret"`
	Token           string `json:"cluster_token"` // authenticates roles to workers
	// ImageKey is the image key service's master secret (32 bytes): only
	// control planes hold it; they seal images' manifests with it and
	// unwrap their data keys for the workers.
	ImageKey []byte `json:"image_key,omitempty"`
	// SessionKey signs environments' credentials (workers issue them,
	// frontends and control planes verify them).
	SessionKey []byte `json:"session_key,omitempty"`
}

// sessions issues and verifies environments' credentials; nil without a
// key (a cluster made before them).
func (id clusterIdentity) sessions() *auth.Sessions {
	return roles.Identity{SessionKey: id.SessionKey}.Sessions()
}

// keyring verifies the signatures of the default account's key and of the
// keys in the replicated accounts bucket, for region.
func (cfg roleConfig) keyring(ctx context.Context, nc *nats.Conn) (*auth.Keyring, *accounts.Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	id := roles.Identity{AccountID: cfg.Identity.AccountID, AccessKeyID: cfg.Identity.AccessKeyID,
		SecretAccessKey: cfg.Identity.SecretAccessKey, SessionKey: cfg.Identity.SessionKey}
	var store *accounts.Store
	// Each attempt bounded: a JetStream request lost while a new cluster
	// elects its stream leaders is tried again, not waited on.
	err = retryFor(ctx, 60*time.Second, func(actx context.Context) (err error) {
		store, err = id.OpenAccounts(actx, js, cfg.Replicas)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	k := id.Keyring(cfg.Region)
	// ctx, not an attempt's: the keyring follows the bucket until the role ends.
	return k, store, store.Follow(ctx, k)
}

// roleConfig is what every role process is given.
type roleConfig struct {
	NATS       []string // client URLs, this zone's node first
	Name, Zone string
	Listen     string // HTTP host:port (frontend, controlplane, worker)
	// Advertise is the host:port other roles reach a worker or control
	// plane at; empty means the listener's address.
	Advertise  string
	DataDir    string
	Region     string
	Partitions int
	Replicas   int
	// Assignment members.
	Index, Members int
	Mode           replica.Mode
	Lease          time.Duration
	IdleTimeout    time.Duration
	// AccountConcurrency is every account's concurrency limit, counted
	// across frontends by the counting members (0: 1000).
	AccountConcurrency int
	// Worker capacity.
	MemoryMB  int
	CPUMillis int // 0: runtime.NumCPU()*1000
	Identity  clusterIdentity
	// TLS is this process's certificate and the CA it trusts: required of
	// NATS and of the peers of workers and control planes. Nil means plain
	// TCP (a cluster without the CA `kiln cluster up` makes).
	TLS *pki.Config
	// NATSUser is this role's NATS credential.
	NATSUser natsUser
	// Sandbox isolates a worker's environments; nil runs plain processes.
	Sandbox worker.Sandbox
	// Pollers is the number of async pollers in a pollers process; 0 means 1.
	Pollers int
	// Async tunes the async path (the pollers' and the frontends'
	// enqueuers'); zero fields take Lambda's timings.
	Async eventinvoke.Tuning
	// RegistryHosts are the host:port an ImageUri names Kiln's own
	// registry by (the frontends', or their load balancer's): a control
	// plane reads such an image from the replicated registry.
	RegistryHosts []string
	// ImageS3 is a file (0600) of tier.S3Config: control planes and
	// workers keep image chunks in that bucket instead of the replicated
	// JetStream bucket. Empty means JetStream.
	ImageS3 string
	// ImageImportStale is how long a control plane running an image import
	// may be silent before another takes it over (0: a minute).
	ImageImportStale time.Duration
	// Collect configures the control planes' collection of code no
	// function uses (one control plane at a time collects).
	Collect roles.CollectConfig
	// MetricsListen is where the role serves Prometheus metrics; empty
	// means nowhere.
	MetricsListen string
	Logger        *slog.Logger
	// stopBy ends shutdownGrace after the role's context (runRole): its
	// NATS connections close then.
	stopBy context.Context
}

// shutdownGrace bounds a role's stop: from SIGTERM, the role drains (a
// frontend's requests in flight, for up to 5 s of it) and stores what it
// can (a worker's last log lines) until then; at its end the role's NATS
// connections close, which fails at once every JetStream request its
// closes still wait on (NATS unreachable), rather than each waiting out
// its own timeout in turn.
const shutdownGrace = 10 * time.Second

// graceAfter returns a context that ends d after ctx does.
func graceAfter(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(d, cancel) })
	return gctx, func() { stop(); cancel() }
}

// connect opens a NATS connection of the role, closed at its stopBy.
func (c roleConfig) connect() (*nats.Conn, error) {
	nc, err := natsConnect(c.NATS, c.Name, c.TLS, c.NATSUser, nats.DontRandomize(),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err == nil && c.stopBy != nil {
		context.AfterFunc(c.stopBy, nc.Close)
	}
	return nc, err
}

// runRole runs one role until ctx ends.
func runRole(ctx context.Context, role string, cfg roleConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Region == "" {
		cfg.Region = roles.DefaultRegion
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	var cancel context.CancelFunc
	cfg.stopBy, cancel = graceAfter(ctx, shutdownGrace)
	defer cancel()
	nc, err := cfg.connect()
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if role == "frontend" || role == "controlplane" || role == "pollers" || role == "assignment" {
		if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) error {
			_, err := metadata.Open(ctx, js, metadata.Config{Replicas: cfg.Replicas})
			return err
		}); err != nil {
			return err
		}
	}
	set := metrics.New()
	if cfg.MetricsListen != "" {
		url, srv, err := roles.ServeMetrics(cfg.MetricsListen, set, false)
		if err != nil {
			return err
		}
		defer srv.Close()
		cfg.Logger.Info("metrics", "role", role, "url", url)
	}
	switch role {
	case "assignment":
		return runAssignment(ctx, nc, cfg)
	case "placement":
		return runPlacement(ctx, nc, cfg)
	case "worker":
		return runWorker(ctx, nc, cfg, set)
	case "controlplane":
		return runControlplane(ctx, nc, cfg, set)
	case "frontend":
		return runFrontend(ctx, nc, cfg, set)
	case "pollers":
		return runPollers(ctx, nc, cfg, set)
	}
	return fmt.Errorf("unknown role %q", role)
}

// ---- assignment ----

func runAssignment(ctx context.Context, nc *nats.Conn, cfg roleConfig) error {
	var m *replica.Member
	err := retryFor(ctx, 60*time.Second, func(actx context.Context) (err error) {
		m, err = replica.Start(actx, replica.Config{NC: nc, Member: cfg.Name, Zone: cfg.Zone, Partitions: cfg.Partitions,
			Index: cfg.Index, Members: cfg.Members, Replicas: cfg.Replicas, Mode: cfg.Mode, Lease: cfg.Lease,
			IdleTimeout: cfg.IdleTimeout, Placer: &placerClient{NC: nc}, Workers: cfg.workerClient(),
			Scale: counting.New(counting.Config{}), Logger: cfg.Logger})
		return err
	})
	if err != nil {
		return err
	}
	defer m.Close()
	store, err := openMetadata(ctx, nc, cfg)
	if err != nil {
		return err
	}
	if err := m.FollowProvisioned(ctx, store); err != nil {
		return err
	}
	counter, err := startCounting(ctx, nc, store, cfg)
	if err != nil {
		return err
	}
	defer counter.Close()
	<-ctx.Done()
	return nil
}

func openMetadata(ctx context.Context, nc *nats.Conn, cfg roleConfig) (*metadata.Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return metadata.Open(ctx, js, metadata.Config{Replicas: cfg.Replicas})
}

// startCounting runs the counting service's member beside assignment's.
func startCounting(ctx context.Context, nc *nats.Conn, store *metadata.Store, cfg roleConfig) (*slots.Member, error) {
	var m *slots.Member
	err := retryFor(ctx, 60*time.Second, func(actx context.Context) (err error) {
		m, err = slots.Start(actx, slots.Config{NC: nc, Member: cfg.Name, Partitions: cfg.Partitions, Replicas: cfg.Replicas,
			Counting: counting.Config{AccountLimit: cfg.AccountConcurrency}, Functions: store, Lease: cfg.Lease, Logger: cfg.Logger})
		return err
	})
	return m, err
}

// placerClient asks the placement role, over NATS.
type placerClient struct{ NC *nats.Conn }

type placeReply struct {
	Worker replica.WorkerRef `json:"worker"`
	Error  string            `json:"error,omitempty"`
}

func (c *placerClient) Place(ctx context.Context, req placement.Request) (replica.WorkerRef, error) {
	b, _ := json.Marshal(req)
	var last error
	for attempt := 0; attempt < 50; attempt++ { // placement restarting: no responders
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		msg, err := c.NC.RequestWithContext(rctx, subjPlace, b)
		cancel()
		if err == nil {
			var rep placeReply
			if err := json.Unmarshal(msg.Data, &rep); err != nil {
				return replica.WorkerRef{}, err
			}
			if rep.Error != "" {
				return replica.WorkerRef{}, &api.Error{Status: http.StatusTooManyRequests, Type: "TooManyRequestsException",
					Message: rep.Error, Reason: "ConcurrentInvocationLimitExceeded"}
			}
			return rep.Worker, nil
		}
		last = err
		if !errors.Is(err, nats.ErrNoResponders) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return replica.WorkerRef{}, fmt.Errorf("placement: %w", last)
}

func (c *placerClient) Release(workerID string, req placement.Request) {
	b, _ := json.Marshal(struct {
		Worker string            `json:"worker"`
		Req    placement.Request `json:"req"`
	}{workerID, req})
	c.NC.Publish(subjRelease, b)
}

// ---- placement ----

// heartbeat is what a worker tells placement, every 200 ms.
type heartbeat struct {
	ID         string `json:"id"`
	Zone       string `json:"zone"`
	Addr       string `json:"addr"`
	MemoryMB   int    `json:"memory_mb"`
	CPUMillis  int    `json:"cpu_millis"`
	LoadMillis int    `json:"load_millis"` // the host's CPU in use, last second
	Envs       int    `json:"envs"`
}

// WorkerStatus is placement's view of a worker.
type WorkerStatus struct {
	heartbeat
	Healthy  bool      `json:"healthy"`
	Draining bool      `json:"draining"`
	Seen     time.Time `json:"seen"`
	// What placement booked there (the console's bars).
	BookedMB  int `json:"booked_mb"`
	BookedCPU int `json:"booked_cpu_millis"`
}

// silentAfter is how long placement waits for a worker's heartbeat before
// it marks the worker unhealthy and has assignment retire its environments.
const silentAfter = time.Second

func runPlacement(ctx context.Context, nc *nats.Conn, cfg roleConfig) error {
	svc := placement.New()
	var mu sync.Mutex
	workers := map[string]*WorkerStatus{}
	var subs []*nats.Subscription
	sub := func(subj string, fn nats.MsgHandler) {
		s, err := nc.Subscribe(subj, fn)
		if err == nil {
			subs = append(subs, s)
		}
	}
	sub(subjHeartbeat, func(m *nats.Msg) {
		var hb heartbeat
		if json.Unmarshal(m.Data, &hb) != nil || hb.ID == "" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		w := workers[hb.ID]
		svc.Register(placement.WorkerInfo{ID: hb.ID, Zone: hb.Zone, MemoryMB: hb.MemoryMB,
			CPUMillis: hb.CPUMillis, LoadMillis: hb.LoadMillis})
		if w == nil || !w.Healthy {
			if w != nil && w.Draining {
				svc.Drain(hb.ID)
			}
			cfg.Logger.Info("placement: worker healthy", "worker", hb.ID, "zone", hb.Zone, "addr", hb.Addr)
		}
		if w == nil {
			w = &WorkerStatus{}
			workers[hb.ID] = w
		}
		w.heartbeat, w.Healthy, w.Seen = hb, true, time.Now()
	})
	sub(subjPlace, func(m *nats.Msg) {
		var req placement.Request
		var rep placeReply
		if err := json.Unmarshal(m.Data, &req); err != nil {
			rep.Error = err.Error()
		} else if id, err := svc.Place(context.Background(), req); err != nil {
			rep.Error = err.Error()
		} else {
			mu.Lock()
			w := workers[id]
			rep.Worker = replica.WorkerRef{ID: id, Zone: w.Zone, Addr: w.Addr}
			mu.Unlock()
		}
		b, _ := json.Marshal(rep)
		m.Respond(b)
	})
	sub(subjRelease, func(m *nats.Msg) {
		var r struct {
			Worker string            `json:"worker"`
			Req    placement.Request `json:"req"`
		}
		if json.Unmarshal(m.Data, &r) == nil {
			svc.Release(r.Worker, r.Req)
		}
	})
	sub(subjDrain, func(m *nats.Msg) {
		var r struct {
			ID string `json:"id"`
		}
		json.Unmarshal(m.Data, &r)
		mu.Lock()
		w := workers[r.ID]
		if w != nil {
			w.Draining = true
			svc.Drain(r.ID)
		}
		mu.Unlock()
		if w == nil {
			m.Respond([]byte(`{"error":"unknown worker"}`))
			return
		}
		nc.Publish(replica.WorkerDrain, m.Data) // assignment stops handing out its idle envs
		m.Respond([]byte(`{}`))
	})
	sub(subjWorkers, func(m *nats.Msg) {
		booked := map[string]placement.Booking{}
		for _, b := range svc.Bookings() {
			booked[b.ID] = b
		}
		mu.Lock()
		list := make([]WorkerStatus, 0, len(workers))
		for id, w := range workers {
			ws := *w
			ws.BookedMB, ws.BookedCPU = booked[id].BookedMB, booked[id].BookedCPU
			list = append(list, ws)
		}
		mu.Unlock()
		b, _ := json.Marshal(list)
		m.Respond(b)
	})
	defer func() {
		for _, s := range subs {
			s.Unsubscribe()
		}
	}()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			mu.Lock()
			for id, w := range workers {
				if w.Healthy && now.Sub(w.Seen) > silentAfter {
					w.Healthy = false
					svc.Remove(id)
					cfg.Logger.Warn("placement: worker silent, retiring its environments", "worker", id)
					b, _ := json.Marshal(map[string]string{"id": id})
					nc.Publish(replica.WorkerDown, b)
				}
			}
			mu.Unlock()
		}
	}
}

// ---- worker ----

// openLogs opens the replicated log store (workers write it, frontends
// serve it), waiting while JetStream elects its leaders.
func openLogs(ctx context.Context, js jetstream.JetStream, cfg roleConfig) (s *logs.Store, err error) {
	err = retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		s, err = logs.Open(ctx, js, logs.Config{Replicas: cfg.Replicas, Logger: cfg.Logger})
		return err
	})
	return s, err
}

// openQueues opens the SQS-compatible queue service on the replicated
// JetStream (every frontend serves it; control planes check mappings'
// queues with it; pollers read them).
func openQueues(ctx context.Context, nc *nats.Conn, cfg roleConfig) (q *queues.Service, err error) {
	err = retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		q, err = queues.New(ctx, queues.Config{NATS: nc, Region: cfg.Region, Replicas: cfg.Replicas, Logger: cfg.Logger})
		return err
	})
	return q, err
}

// openStreams opens the Kinesis-compatible stream service, replicated
// (frontends serve it; control planes check Kinesis mappings' streams with
// it; pollers read them).
func openStreams(ctx context.Context, nc *nats.Conn, cfg roleConfig) (s *streams.Service, err error) {
	err = retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		s, err = streams.New(ctx, streams.Config{NATS: nc, Region: cfg.Region, Replicas: cfg.Replicas, Logger: cfg.Logger})
		return err
	})
	return s, err
}

func runWorker(ctx context.Context, nc *nats.Conn, cfg roleConfig, set *metrics.Set) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	code, err := cfg.codeStore(ctx, nc)
	if err != nil {
		return err
	}
	logStore, err := openLogs(ctx, js, cfg)
	if err != nil {
		return err
	}
	defer logStore.Shutdown(cfg.stopBy) // after the worker: its environments' last lines
	imgs, err := cfg.images(ctx, nc, cfg.Sandbox, filepath.Join(cfg.DataDir, "images"))
	if err != nil {
		return err
	}
	if imgs != nil {
		imgs.Register(set)
		defer imgs.Close() // after the environments that use them
	}
	// Functions reach Kiln's API through this worker, which forwards to a
	// frontend (the sandbox reaches nothing else).
	w, err := roles.NewWorker(roles.WorkerConfig{ID: cfg.Name, Region: cfg.Region, DataDir: cfg.DataDir,
		Code: code, Sandbox: cfg.Sandbox, Logs: logStore, Images: imgs.Source(), Metrics: set, Logger: cfg.Logger,
		API: proxyFound(nc, cfg.transport(), subjFrontWhere, "frontend"), Sessions: cfg.Identity.sessions()})
	if err != nil {
		return err
	}
	defer w.Close()
	ws := &workerServer{W: w, Token: cfg.Identity.Token}
	set.Register(metrics.GaugeFunc("kiln_worker_environments", "Execution environments on this worker.", nil,
		func() float64 { return float64(ws.Count()) }))
	ln, addr, err := cfg.listen("frontend", "assignment", "pollers")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: ws.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer func() { // before the worker's close: invokes in flight finish, within the role's grace
		if srv.Shutdown(cfg.stopBy) != nil {
			srv.Close()
		}
	}()
	if cfg.CPUMillis == 0 {
		cfg.CPUMillis = runtime.NumCPU() * 1000
	}
	hb := heartbeat{ID: cfg.Name, Zone: cfg.Zone, Addr: addr, MemoryMB: cfg.MemoryMB, CPUMillis: cfg.CPUMillis}
	var load hostLoad
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		hb.Envs = ws.Count()
		hb.LoadMillis = load.millis(time.Now())
		b, _ := json.Marshal(hb)
		nc.Publish(subjHeartbeat, b)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ---- control plane ----

func runControlplane(ctx context.Context, nc *nats.Conn, cfg roleConfig, set *metrics.Set) error {
	store, err := openMetadata(ctx, nc, cfg)
	if err != nil {
		return err
	}
	code, err := cfg.codeStore(ctx, nc)
	if err != nil {
		return err
	}
	keyring, accts, err := cfg.keyring(ctx, nc)
	if err != nil {
		return err
	}
	cpcfg := controlplane.Config{Store: store, Code: code, Region: cfg.Region, URLSecret: cfg.Identity.URLSecret,
		AccountConcurrency: cfg.AccountConcurrency, ImportStale: cfg.ImageImportStale}
	if cpcfg.Images, err = cfg.importer(ctx, nc, keyring); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		cpcfg.Mappings, err = esm.OpenStore(ctx, js, cfg.Replicas)
		return err
	}); err != nil {
		return err
	}
	if cpcfg.Queues, err = openQueues(ctx, nc, cfg); err != nil {
		return err
	}
	if cpcfg.Streams, err = openStreams(ctx, nc, cfg); err != nil {
		return err
	}
	cp := controlplane.New(cpcfg)
	defer cp.Close() // its image imports resume in another control plane
	roles.RegisterImports(set, cp)
	var collectKV jetstream.KeyValue
	if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		collectKV, err = roles.OpenCollectKV(ctx, js, cfg.Replicas, cfg.Collect)
		return err
	}); err != nil {
		return err
	}
	go roles.NewCollector(collectKV, cp, cfg.Collect, set, cfg.Logger).Run(ctx, nc)
	mux := http.NewServeMux()
	cp.Register(mux)
	accts.Register(mux)
	root := http.NewServeMux()
	root.Handle("/kiln/code/", cp.CodeHandler())
	root.Handle("/", auth.Middleware(keyring, roles.BodyLimit, mux))
	ln, endpoint, err := cfg.listen("frontend")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: root, ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	s1, _ := nc.Subscribe(subjCPWhere, func(m *nats.Msg) { m.Respond([]byte(endpoint)) })
	<-ctx.Done()
	s1.Unsubscribe()
	return nil
}

// ---- frontend ----

// invokePath is the synchronous invoke path of a cluster process (frontend,
// pollers): functions from the replicated metadata, environments from the
// partition leaders (replica.Client) and the workers' HTTP API.
func invokePath(ctx context.Context, nc *nats.Conn, cfg roleConfig, set *metrics.Set) (frontend.Config, func(), error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return frontend.Config{}, nil, err
	}
	store, err := metadata.Open(ctx, js, metadata.Config{Replicas: cfg.Replicas})
	if err != nil {
		return frontend.Config{}, nil, err
	}
	client, err := replica.NewClient(ctx, nc, cfg.Partitions, cfg.Replicas, cfg.workerClient())
	if err != nil {
		return frontend.Config{}, nil, err
	}
	// Concurrency is counted by the counting service's partition leaders,
	// so the account limit and reserved concurrency hold across processes.
	counter, err := slots.NewClient(slots.ClientConfig{NC: nc, Partitions: cfg.Partitions})
	if err != nil {
		client.Close()
		return frontend.Config{}, nil, err
	}
	return frontend.Config{Functions: store, Counter: counter, Assignment: client,
		Region: cfg.Region, Metrics: set, Logger: cfg.Logger}, func() { counter.Close(); client.Close() }, nil
}

// openAsync opens the async path on a NATS connection of its own, so that
// a flood of events never queues behind the invoke path's traffic.
func openAsync(ctx context.Context, cfg roleConfig, tune eventinvoke.Tuning, inFlight func() int) (*eventinvoke.Service, func(), error) {
	nc, err := cfg.connect()
	if err != nil {
		return nil, nil, fmt.Errorf("nats: %w", err)
	}
	var svc *eventinvoke.Service
	if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		svc, err = eventinvoke.New(ctx, eventinvoke.Config{NATS: nc, Region: cfg.Region, Replicas: cfg.Replicas,
			Tuning: tune, InvokesInFlight: inFlight, Logger: cfg.Logger})
		return err
	}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return svc, func() { svc.Close(); nc.Close() }, nil
}

// runFrontend serves the Lambda invoke API (sync invokes through the
// partition leaders; Event invokes enqueued on the replicated stream), the
// CloudWatch Logs API from the replicated log store, the Kinesis API on
// replicated streams, and hands management calls to a control plane.
func runFrontend(ctx context.Context, nc *nats.Conn, cfg roleConfig, set *metrics.Set) error {
	fcfg, closeClient, err := invokePath(ctx, nc, cfg, set)
	if err != nil {
		return err
	}
	defer closeClient()
	// Enqueue only: the pollers are roles of their own.
	tune := cfg.Async
	tune.Pollers = -1
	async, closeAsync, err := openAsync(ctx, cfg, tune, nil)
	if err != nil {
		return err
	}
	defer closeAsync()
	fcfg.Async = async
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	logStore, err := openLogs(ctx, js, cfg)
	if err != nil {
		return err
	}
	defer logStore.Shutdown(cfg.stopBy)
	kinesis, err := openStreams(ctx, nc, cfg)
	if err != nil {
		return err
	}
	set.Register(kinesis.Metrics())
	qs, err := openQueues(ctx, nc, cfg)
	if err != nil {
		return err
	}
	keyring, _, err := cfg.keyring(ctx, nc)
	if err != nil {
		return err
	}
	proxy := controlplaneProxy(nc, cfg.transport())
	reg, err := cfg.registry(ctx, js, keyring)
	if err != nil {
		return err
	}
	series := console.NewSeries(0)
	fcfg.Observer = series
	// This frontend's console: the series of the invokes it admitted and
	// those of the other frontends (asked over NATS); the fleet and the
	// functions as the cluster has them.
	peers := consolePeers{nc: nc, name: cfg.Name}
	var mappings *esm.Store // the pollers processes run them; the console shows their state
	if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		mappings, err = esm.OpenStore(ctx, js, cfg.Replicas)
		return err
	}); err != nil {
		return err
	}
	con := console.New(console.Config{Keyring: keyring, Region: cfg.Region, Admin: func(a string) bool { return a == cfg.Identity.AccountID },
		Functions: fcfg.Functions.(*metadata.Store) /* invokePath's */, Series: series, Fleet: &consoleFleet{nc: nc, partitions: cfg.Partitions},
		Logs: logStore, Async: async, Mappings: mappings, Peers: peers, Logger: cfg.Logger})
	answering, err := peers.answer(con)
	if err != nil {
		return err
	}
	defer answering.Unsubscribe()
	front, err := roles.NewFrontend(ctx, roles.FrontendConfig{Config: fcfg, Keyring: keyring,
		Services: roles.Services(logStore.Handler(), qs.Handler(), kinesis.Handler()),
		Management: func(signed *http.ServeMux) {
			signed.Handle("/", proxy)
		},
		Unsigned: func(root *http.ServeMux) {
			root.Handle("/kiln/code/", proxy)
			root.Handle("/v2/", reg)      // its own authentication: registry clients do not sign
			root.Handle("/console/", con) // its own sign-in; its API also takes SigV4
			root.Handle("/console", con)
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: front.Handler, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	srv.RegisterOnShutdown(con.Close)
	go srv.Serve(ln)
	// Workers find a frontend here for their functions' calls to Kiln.
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = ln.Addr().String()
	}
	where, err := nc.Subscribe(subjFrontWhere, func(m *nats.Msg) { m.Respond([]byte("http://" + advertise)) })
	if err != nil {
		return err
	}
	defer where.Unsubscribe()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(cfg.stopBy, 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// ---- pollers ----

// runPollers runs the async queue manager and pollers: they hold leases on
// the queues of the replicated event stream (a dead process's queues go to
// another when its leases expire; its unacknowledged events are
// redelivered) and invoke through the cluster's sync path, with the same
// retries, event age, destinations and dead-letter queues as kiln up.
func runPollers(ctx context.Context, nc *nats.Conn, cfg roleConfig, set *metrics.Set) error {
	fcfg, closeClient, err := invokePath(ctx, nc, cfg, set)
	if err != nil {
		return err
	}
	defer closeClient()
	front, err := frontend.New(ctx, fcfg)
	if err != nil {
		return err
	}
	tune := cfg.Async
	tune.Pollers = max(cfg.Pollers, 1)
	async, closeAsync, err := openAsync(ctx, cfg, tune, nil) // no sync invokes here to yield to
	if err != nil {
		return err
	}
	async.Start(front)
	defer closeAsync() // pollers first: they invoke through the client
	closeMappings, err := runMappings(ctx, cfg, front)
	if err != nil {
		return err
	}
	defer closeMappings()
	cfg.Logger.Info("pollers up", "pollers", tune.Pollers)
	<-ctx.Done()
	return nil
}

// runMappings runs the event source mappings' pollers, on a NATS
// connection of their own: leased per mapping with the other pollers
// processes (a dead one's mappings move here when its leases expire), they
// read Kiln queues from the replicated JetStream and invoke through the
// cluster's sync path.
func runMappings(ctx context.Context, cfg roleConfig, front esm.Invoker) (func(), error) {
	nc, err := cfg.connect()
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	qs, err := openQueues(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	kinesis, err := openStreams(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	var p *esm.Pollers
	if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		p, err = esm.New(ctx, esm.Config{NATS: nc, Invoker: front, Queues: qs, Streams: kinesis, Replicas: cfg.Replicas, Name: cfg.Name, Logger: cfg.Logger})
		return err
	}); err != nil {
		nc.Close()
		return nil, err
	}
	p.Start()
	return func() { p.Close(); nc.Close() }, nil
}

// controlplaneProxy sends management calls, untouched (their SigV4
// signature covers the Host header, which is kept), to a control plane
// found over NATS: whichever answers first, until a call to it fails.
func controlplaneProxy(nc *nats.Conn, tr http.RoundTripper) http.Handler {
	return proxyFound(nc, tr, subjCPWhere, "control plane")
}

// proxyFound sends requests, untouched, to whichever process answers
// first on subject (where), until a request to it fails.
func proxyFound(nc *nats.Conn, tr http.RoundTripper, subject, what string) http.Handler {
	var mu sync.Mutex
	var target *url.URL
	where := func() (*url.URL, error) {
		mu.Lock()
		defer mu.Unlock()
		if target != nil {
			return target, nil
		}
		msg, err := nc.Request(subject, nil, 2*time.Second)
		if err != nil {
			return nil, err
		}
		target, err = url.Parse(string(msg.Data))
		return target, err
	}
	proxy := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(r *httputil.ProxyRequest) {
			t, _ := where()
			r.SetURL(t)
			r.Out.Host = r.In.Host
			r.SetXForwarded() // the control plane's Code.Location URLs name this frontend's scheme
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			mu.Lock()
			target = nil // find it again next time
			mu.Unlock()
			api.WriteError(w, &api.Error{Status: http.StatusServiceUnavailable, Type: api.Service, Message: what + " unreachable: " + err.Error()})
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := where(); err != nil {
			api.WriteError(w, &api.Error{Status: http.StatusServiceUnavailable, Type: api.Service, Message: "no " + what + ": " + err.Error()})
			return
		}
		w.Header().Del(api.RequestIDHeader) // the control plane's answer has its own
		proxy.ServeHTTP(w, r)
	})
}
