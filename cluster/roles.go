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

	"github.com/kiln-dev/kiln/api"
	"github.com/kiln-dev/kiln/auth"
	"github.com/kiln-dev/kiln/controlplane"
	"github.com/kiln-dev/kiln/counting"
	"github.com/kiln-dev/kiln/frontend"
	"github.com/kiln-dev/kiln/metadata"
	"github.com/kiln-dev/kiln/pki"
	"github.com/kiln-dev/kiln/placement"
	"github.com/kiln-dev/kiln/replica"
	"github.com/kiln-dev/kiln/runtimes"
	"github.com/kiln-dev/kiln/slots"
	"github.com/kiln-dev/kiln/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS subjects between roles.
const (
	subjHeartbeat = "kiln.placement.heartbeat"
	subjPlace     = "kiln.placement.place"
	subjRelease   = "kiln.placement.release"
	subjDrain     = "kiln.placement.drain"
	subjWorkers   = "kiln.placement.workers"
	subjCPWhere   = "kiln.controlplane.where"
)

// Identity is the default account and the secrets roles share; each role
// reads what it needs of it from its bundle's identity.json (secrets.go).
type Identity struct {
	AccountID       string `json:"account_id"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	URLSecret       []byte `json:"url_secret"`
	Token           string `json:"cluster_token"` // authenticates roles to workers
}

// keyring verifies the account's signatures for Lambda in region.
func (id Identity) keyring(region string) *auth.Keyring {
	k := auth.NewKeyring(auth.Credential{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, Account: id.AccountID})
	k.Region = region
	k.Services = func(*http.Request) []string { return []string{"lambda"} }
	return k
}

// RoleConfig is what every role process is given.
type RoleConfig struct {
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
	Identity  Identity
	// TLS is this process's certificate and the CA it trusts: required of
	// NATS and of the peers of workers and control planes. Nil means plain
	// TCP (a cluster without the CA `kiln cluster up` makes).
	TLS *pki.Config
	// NATSUser is this role's NATS credential.
	NATSUser NATSUser
	Logger   *slog.Logger
}

func (c RoleConfig) connect() (*nats.Conn, error) {
	return natsConnect(c.NATS, c.Name, c.TLS, c.NATSUser, nats.DontRandomize(),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

// Run runs one role until ctx ends.
func Run(ctx context.Context, role string, cfg RoleConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	nc, err := cfg.connect()
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if role == "frontend" || role == "controlplane" || role == "assignment" {
		if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) error {
			_, err := metadata.Open(ctx, js, metadata.Config{Replicas: cfg.Replicas})
			return err
		}); err != nil {
			return err
		}
	}
	switch role {
	case "assignment":
		return runAssignment(ctx, nc, cfg)
	case "placement":
		return runPlacement(ctx, nc, cfg)
	case "worker":
		return runWorker(ctx, nc, cfg)
	case "controlplane":
		return runControlplane(ctx, nc, cfg)
	case "frontend":
		return runFrontend(ctx, nc, cfg)
	}
	return fmt.Errorf("unknown role %q", role)
}

// ---- assignment ----

func runAssignment(ctx context.Context, nc *nats.Conn, cfg RoleConfig) error {
	var m *replica.Member
	err := retryFor(ctx, 60*time.Second, func(actx context.Context) (err error) {
		m, err = replica.Start(actx, replica.Config{NC: nc, Member: cfg.Name, Zone: cfg.Zone, Partitions: cfg.Partitions,
			Index: cfg.Index, Members: cfg.Members, Replicas: cfg.Replicas, Mode: cfg.Mode, Lease: cfg.Lease,
			IdleTimeout: cfg.IdleTimeout, Placer: &PlacerClient{NC: nc}, Workers: cfg.workerClient(),
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

func openMetadata(ctx context.Context, nc *nats.Conn, cfg RoleConfig) (*metadata.Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return metadata.Open(ctx, js, metadata.Config{Replicas: cfg.Replicas})
}

// startCounting runs the counting service's member beside assignment's.
func startCounting(ctx context.Context, nc *nats.Conn, store *metadata.Store, cfg RoleConfig) (*slots.Member, error) {
	var m *slots.Member
	err := retryFor(ctx, 60*time.Second, func(actx context.Context) (err error) {
		m, err = slots.Start(actx, slots.Config{NC: nc, Member: cfg.Name, Partitions: cfg.Partitions, Replicas: cfg.Replicas,
			Counting: counting.Config{AccountLimit: cfg.AccountConcurrency}, Functions: store, Lease: cfg.Lease, Logger: cfg.Logger})
		return err
	})
	return m, err
}

// PlacerClient asks the placement role, over NATS.
type PlacerClient struct{ NC *nats.Conn }

type placeReply struct {
	Worker replica.WorkerRef `json:"worker"`
	Error  string            `json:"error,omitempty"`
}

func (c *PlacerClient) Place(ctx context.Context, req placement.Request) (replica.WorkerRef, error) {
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

func (c *PlacerClient) Release(workerID string, req placement.Request) {
	b, _ := json.Marshal(struct {
		Worker string            `json:"worker"`
		Req    placement.Request `json:"req"`
	}{workerID, req})
	c.NC.Publish(subjRelease, b)
}

// ---- placement ----

// Heartbeat is what a worker tells placement, every 200 ms.
type Heartbeat struct {
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
	Heartbeat
	Healthy  bool      `json:"healthy"`
	Draining bool      `json:"draining"`
	Seen     time.Time `json:"seen"`
}

// SilentAfter is how long placement waits for a worker's heartbeat before
// it marks the worker unhealthy and has assignment retire its environments.
const SilentAfter = time.Second

func runPlacement(ctx context.Context, nc *nats.Conn, cfg RoleConfig) error {
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
		var hb Heartbeat
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
		w.Heartbeat, w.Healthy, w.Seen = hb, true, time.Now()
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
		mu.Lock()
		list := make([]WorkerStatus, 0, len(workers))
		for _, w := range workers {
			list = append(list, *w)
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
				if w.Healthy && now.Sub(w.Seen) > SilentAfter {
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

func runWorker(ctx context.Context, nc *nats.Conn, cfg RoleConfig) error {
	runtimeDir := filepath.Join(cfg.DataDir, "runtimes")
	if err := runtimes.Install(runtimeDir); err != nil {
		return err
	}
	code, err := cfg.codeStore(ctx, nc)
	if err != nil {
		return err
	}
	w := worker.New(worker.Config{ID: cfg.Name, Region: cfg.Region, RuntimeDir: runtimeDir,
		Code: code, Logger: cfg.Logger})
	defer w.Close()
	ws := &WorkerServer{W: w, Token: cfg.Identity.Token}
	ln, addr, err := cfg.listen("frontend", "assignment")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: ws.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	if cfg.CPUMillis == 0 {
		cfg.CPUMillis = runtime.NumCPU() * 1000
	}
	hb := Heartbeat{ID: cfg.Name, Zone: cfg.Zone, Addr: addr, MemoryMB: cfg.MemoryMB, CPUMillis: cfg.CPUMillis}
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

func runControlplane(ctx context.Context, nc *nats.Conn, cfg RoleConfig) error {
	store, err := openMetadata(ctx, nc, cfg)
	if err != nil {
		return err
	}
	code, err := cfg.codeStore(ctx, nc)
	if err != nil {
		return err
	}
	cp := controlplane.New(controlplane.Config{Store: store, Code: code, Region: cfg.Region, URLSecret: cfg.Identity.URLSecret,
		AccountConcurrency: cfg.AccountConcurrency})
	mux := http.NewServeMux()
	cp.Register(mux)
	root := http.NewServeMux()
	root.Handle("/kiln/code/", cp.CodeHandler())
	root.Handle("/", auth.Middleware(cfg.Identity.keyring(cfg.Region), func(*http.Request) (int64, *api.Error) {
		const max = 69905067
		return max, api.Errorf(api.RequestTooLarge, "Request must be smaller than %d bytes for the operation", max)
	}, mux))
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

func runFrontend(ctx context.Context, nc *nats.Conn, cfg RoleConfig) error {
	store, err := openMetadata(ctx, nc, cfg)
	if err != nil {
		return err
	}
	client, err := replica.NewClient(ctx, nc, cfg.Partitions, cfg.Replicas, cfg.workerClient())
	if err != nil {
		return err
	}
	defer client.Close()
	counter, err := slots.NewClient(slots.ClientConfig{NC: nc, Partitions: cfg.Partitions})
	if err != nil {
		return err
	}
	defer counter.Close()
	front, err := frontend.New(ctx, frontend.Config{Functions: store, Counter: counter,
		Assignment: client, Region: cfg.Region, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	invokes := http.NewServeMux()
	front.Register(invokes)
	root := http.NewServeMux()
	root.Handle("POST /2015-03-31/functions/{name}/invocations", auth.Middleware(cfg.Identity.keyring(cfg.Region),
		func(r *http.Request) (int64, *api.Error) {
			limit, tooLarge, _ := frontend.BodyLimit(r)
			return limit, tooLarge
		}, invokes))
	root.HandleFunc("GET /kiln/health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	root.Handle("/", controlplaneProxy(nc, cfg.transport()))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: root, ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(ln)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// controlplaneProxy sends management calls, untouched (their SigV4
// signature covers the Host header, which is kept), to a control plane
// found over NATS: whichever answers first, until a call to it fails.
func controlplaneProxy(nc *nats.Conn, tr http.RoundTripper) http.Handler {
	var mu sync.Mutex
	var target *url.URL
	where := func() (*url.URL, error) {
		mu.Lock()
		defer mu.Unlock()
		if target != nil {
			return target, nil
		}
		msg, err := nc.Request(subjCPWhere, nil, 2*time.Second)
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
			api.WriteError(w, &api.Error{Status: http.StatusServiceUnavailable, Type: api.Service, Message: "control plane unreachable: " + err.Error()})
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := where(); err != nil {
			api.WriteError(w, &api.Error{Status: http.StatusServiceUnavailable, Type: api.Service, Message: "no control plane: " + err.Error()})
			return
		}
		proxy.ServeHTTP(w, r)
	})
}
