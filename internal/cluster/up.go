package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/codebucket"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/kiln-dev/kiln/internal/pki"
	"github.com/kiln-dev/kiln/internal/replica"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/kiln-dev/kiln/internal/slots"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Proc is one process of a local cluster.
type Proc struct {
	Name string `json:"name"`
	Role string `json:"role"`
	Zone string `json:"zone"`
	PID  int    `json:"pid"`
	Addr string `json:"addr,omitempty"` // HTTP endpoint (frontend, control plane, worker)
	// Metrics is the Prometheus metrics URL (frontends, workers, pollers).
	Metrics string   `json:"metrics,omitempty"`
	NATS    string   `json:"nats,omitempty"`  // client URL (nats nodes)
	Route   string   `json:"route,omitempty"` // cluster route (nats nodes)
	Log     string   `json:"log"`
	Args    []string `json:"args"`
}

// File is DIR/cluster.json.
type File struct {
	Dir             string       `json:"dir"`
	Region          string       `json:"region"`
	Frontends       []string     `json:"frontends"` // Lambda API endpoints
	NATS            []string     `json:"nats"`
	Partitions      int          `json:"partitions"`
	Replicas        int          `json:"replicas"`
	Mode            replica.Mode `json:"mode"`
	AccountID       string       `json:"account_id"`
	AccessKeyID     string       `json:"access_key_id"`
	SecretAccessKey string       `json:"secret_access_key"`
	Procs           []Proc       `json:"procs"`
	Netns           *zoneNetns   `json:"netns,omitempty"` // zones as namespaces (--netns)
}

// upConfig configures a local cluster.
type upConfig struct {
	Dir        string
	Binary     string // the kiln binary; empty means this executable
	Workers    int    // 0 means 3
	Frontends  int    // 0 means 2
	Partitions int    // 0 means 6
	Mode       replica.Mode
	Lease      time.Duration // 0 means 400 ms
	Region     string
	// Netns runs each zone in its own network namespace, with its own
	// address (root and iproute2 needed).
	Netns bool
	// AccessKeyID and SecretAccessKey default to KILN_ACCESS_KEY_ID and
	// KILN_SECRET_ACCESS_KEY, else random.
	AccessKeyID, SecretAccessKey string
	// Sandbox is the workers' isolation backend (as kiln up --sandbox):
	// empty means linux.
	Sandbox string
	// Pollers is the number of async pollers processes; 0 means 2.
	Pollers int
	// AccountConcurrency is every account's concurrency limit; 0 means 1000.
	AccountConcurrency int
	// ImageS3 is a file (0600) of an S3-compatible bucket that control
	// planes and workers keep image chunks in (roleConfig.ImageS3).
	ImageS3 string
	// ImageImportStale is the control planes' roleConfig.ImageImportStale.
	ImageImportStale time.Duration
	// Progress, when set, is told each step as it happens (`kiln cluster
	// up` prints them): a process started, a wait begun.
	Progress func(step string)
}

var zones = []string{"a", "b", "c"}

var (
	pickedMu sync.Mutex
	picked   = map[int]bool{}
)

// freePort finds a port for a process to listen on, below the kernel's
// ephemeral range: a port there, free now, cannot be taken by an outgoing
// connection (of the cluster or of anything else on the host) before the
// process binds it, as one from port 0 could.
func freePort() (string, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				lo = n
			}
		}
	}
	pickedMu.Lock()
	defer pickedMu.Unlock()
	for range 100 {
		port := 1024 + mrand.IntN(lo-1024)
		if picked[port] {
			continue // handed out already, maybe not bound yet
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			picked[port] = true
			return addr, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// upCluster starts a local cluster as separate processes and writes cluster.json.
// On error it stops what it started.
func upCluster(ctx context.Context, cfg upConfig) (f *File, err error) {
	if cfg.Binary == "" {
		if cfg.Binary, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if cfg.Workers == 0 {
		cfg.Workers = 3
	}
	if cfg.Frontends == 0 {
		cfg.Frontends = 2
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 6
	}
	if cfg.Mode == "" {
		cfg.Mode = replica.Replicated
	}
	if cfg.AccountConcurrency == 0 {
		cfg.AccountConcurrency = 1000
	}
	if cfg.Lease == 0 {
		cfg.Lease = 400 * time.Millisecond
	}
	if cfg.Region == "" {
		cfg.Region = roles.DefaultRegion
	}
	if cfg.Sandbox == "" {
		cfg.Sandbox = "linux"
	}
	if cfg.Pollers == 0 {
		cfg.Pollers = 2
	}
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			cfg.Progress(fmt.Sprintf(format, args...))
		}
	}
	if cfg.AccessKeyID == "" {
		cfg.AccessKeyID, cfg.SecretAccessKey = os.Getenv("KILN_ACCESS_KEY_ID"), os.Getenv("KILN_SECRET_ACCESS_KEY")
	}
	if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		cfg.AccessKeyID, cfg.SecretAccessKey = "AKIA"+strings.ToUpper(random(8)), random(20)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	is, err := openIssuer(dir, func() clusterIdentity {
		id := newIdentity()
		id.AccessKeyID, id.SecretAccessKey = cfg.AccessKeyID, cfg.SecretAccessKey
		return id
	})
	if err != nil {
		return nil, err
	}
	id := is.secrets.Identity
	if _, err := is.issue(adminName, "admin", localHosts); err != nil {
		return nil, err
	}
	f = &File{Dir: dir, Region: cfg.Region, Partitions: cfg.Partitions, Replicas: 3, Mode: cfg.Mode, AccountID: id.AccountID,
		AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey}
	defer func() {
		if err != nil {
			f.Down()
		}
	}()
	if cfg.Netns {
		if f.Netns, err = newNetns(zones); err != nil {
			return f, err
		}
	}
	// addrIn is a free address for a listener in zone i.
	addrIn := func(zone int) (string, error) {
		a, err := freePort()
		if err != nil || f.Netns == nil {
			return a, err
		}
		_, port, _ := net.SplitHostPort(a)
		return net.JoinHostPort(f.Netns.Addrs[zone], port), nil
	}
	// start issues the process's bundle, writes its settings (args, flag
	// and value pairs, and where its bundle is) as its config file, and runs it.
	start := func(p Proc, args ...string) (Proc, error) {
		p.Log = filepath.Join(dir, "logs", p.Name+".log")
		logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return p, err
		}
		defer logf.Close()
		zone := slices.Index(zones, p.Zone)
		hosts := localHosts
		if f.Netns != nil {
			hosts = append([]string{f.Netns.Addrs[zone]}, localHosts...)
		}
		bundle, err := is.issue(p.Name, p.Role, hosts)
		if err != nil {
			return p, err
		}
		settings := bundleFlags(bundle, p.Role)
		for i := 0; i+1 < len(args); i += 2 {
			settings[strings.TrimPrefix(args[i], "--")] = args[i+1]
		}
		config, err := writeConfig(bundle, settings)
		if err != nil {
			return p, err
		}
		p.Args = []string{p.Role, "--config", config, "--name", p.Name}
		cmd := exec.Command(cfg.Binary, p.Args...)
		if f.Netns != nil {
			cmd = f.Netns.command(zone, append([]string{cfg.Binary}, p.Args...)...)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = withoutSecrets(os.Environ())
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives `kiln cluster up`
		if err := cmd.Start(); err != nil {
			return p, err
		}
		p.PID = cmd.Process.Pid
		go cmd.Wait() // reap it if it dies while we run
		f.Procs = append(f.Procs, p)
		progress("started %s (%s, zone %s, pid %d)", p.Name, p.Role, p.Zone, p.PID)
		return p, nil
	}

	// NATS JetStream nodes, one per zone.
	var clients, routes []string
	for i := range zones {
		c, err := addrIn(i)
		if err != nil {
			return f, err
		}
		r, err := addrIn(i)
		if err != nil {
			return f, err
		}
		clients, routes = append(clients, c), append(routes, r)
	}
	for i, z := range zones {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		name := "nats-" + z
		if _, err := start(Proc{Name: name, Role: "nats", Zone: z, NATS: "nats://" + clients[i], Route: routes[i]},
			"--name", name, "--listen", clients[i], "--cluster", routes[i], "--routes", strings.Join(others, ","),
			"--data", filepath.Join(dir, name)); err != nil {
			return f, err
		}
		f.NATS = append(f.NATS, "nats://"+clients[i])
	}
	progress("waiting for JetStream to elect its leaders")
	if err := f.waitJetStream(ctx, 30*time.Second); err != nil {
		return f, err
	}
	progress("creating the replicated streams and buckets")
	if err := f.prepare(ctx); err != nil {
		return f, err
	}
	natsFor := func(zone int) string { // this zone's node first
		urls := []string{f.NATS[zone]}
		for j, u := range f.NATS {
			if j != zone {
				urls = append(urls, u)
			}
		}
		return strings.Join(urls, ",")
	}
	common := func(name string, zone int) []string {
		return []string{"--name", name, "--zone", zones[zone], "--nats", natsFor(zone), "--region", cfg.Region,
			"--partitions", strconv.Itoa(cfg.Partitions), "--replicas", "3", "--data", filepath.Join(dir, name),
			"--account-concurrency", strconv.Itoa(cfg.AccountConcurrency)}
	}
	var imageS3 []string // the roles that keep image chunks
	if cfg.ImageS3 != "" {
		if imageS3, err = absFlag("--image-s3", cfg.ImageS3); err != nil {
			return f, err
		}
	}

	// withMetrics gives a role a metrics listener of its own.
	withMetrics := func(p *Proc, zone int, args []string) ([]string, error) {
		addr, err := addrIn(zone)
		if err != nil {
			return nil, err
		}
		p.Metrics = "http://" + addr + "/metrics"
		return append(args, "--metrics-listen", addr), nil
	}
	if _, err := start(Proc{Name: "placement", Role: "placement", Zone: zones[0]}, common("placement", 0)...); err != nil {
		return f, err
	}
	// The frontends' addresses first: control planes read an ImageUri
	// naming one of them from Kiln's own registry.
	feAddrs := make([]string, cfg.Frontends)
	for i := range feAddrs {
		if feAddrs[i], err = addrIn(i % len(zones)); err != nil {
			return f, err
		}
	}
	// Two control planes, in zones b and c: frontends use whichever answers.
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("controlplane-%d", i)
		cpAddr, err := addrIn(i)
		if err != nil {
			return f, err
		}
		p := Proc{Name: name, Role: "controlplane", Zone: zones[i], Addr: "https://" + cpAddr}
		args, err := withMetrics(&p, i, append(append(common(name, i), imageS3...), "--listen", cpAddr, "--registry-hosts", strings.Join(feAddrs, ","),
			"--image-import-stale", cfg.ImageImportStale.String()))
		if err != nil {
			return f, err
		}
		if _, err := start(p, args...); err != nil {
			return f, err
		}
	}
	for i, z := range zones {
		name := "assignment-" + z
		if _, err := start(Proc{Name: name, Role: "assignment", Zone: z}, append(common(name, i),
			"--index", strconv.Itoa(i), "--members", "3", "--mode", string(cfg.Mode), "--lease", cfg.Lease.String())...); err != nil {
			return f, err
		}
	}
	for i := 0; i < cfg.Workers; i++ {
		zi := i % len(zones)
		name := fmt.Sprintf("worker-%s%d", zones[zi], i/len(zones)+1)
		addr, err := addrIn(zi)
		if err != nil {
			return f, err
		}
		p := Proc{Name: name, Role: "worker", Zone: zones[zi], Addr: "https://" + addr}
		args, err := withMetrics(&p, zi, append(append(common(name, zi), imageS3...), "--listen", addr, "--sandbox", cfg.Sandbox))
		if err != nil {
			return f, err
		}
		if _, err := start(p, args...); err != nil {
			return f, err
		}
	}
	for i := 0; i < cfg.Pollers; i++ {
		zi := (i + 1) % len(zones)
		name := fmt.Sprintf("pollers-%d", i+1)
		p := Proc{Name: name, Role: "pollers", Zone: zones[zi]}
		args, err := withMetrics(&p, zi, common(name, zi))
		if err != nil {
			return f, err
		}
		if _, err := start(p, args...); err != nil {
			return f, err
		}
	}
	for i := 0; i < cfg.Frontends; i++ {
		zi := i % len(zones)
		name := fmt.Sprintf("frontend-%d", i+1)
		addr := feAddrs[i]
		p := Proc{Name: name, Role: "frontend", Zone: zones[zi], Addr: "http://" + addr}
		args, err := withMetrics(&p, zi, append(common(name, zi), "--listen", addr))
		if err != nil {
			return f, err
		}
		if _, err := start(p, args...); err != nil {
			return f, err
		}
		f.Frontends = append(f.Frontends, "http://"+addr)
	}
	if err := f.write(); err != nil {
		return f, err
	}
	// The AWS clients' files, as kiln up writes them: the first frontend
	// is the endpoint (any other serves the same).
	if err := roles.WriteAWSFiles(dir, roles.Identity{AccountID: id.AccountID, AccessKeyID: id.AccessKeyID,
		SecretAccessKey: id.SecretAccessKey}, cfg.Region, f.Frontends[0], ""); err != nil {
		return f, err
	}
	progress("waiting for the frontends, %d workers and every partition's leader", cfg.Workers)
	return f, f.waitReady(ctx, cfg.Workers, 60*time.Second)
}

// prepare creates the replicated streams and buckets one at a time, before
// a dozen processes ask for them at once.
func (f *File) prepare(ctx context.Context) error {
	nc, err := f.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	steps := []func(context.Context) error{
		func(ctx context.Context) error { _, err := replica.LeaseKV(ctx, js, 3); return err },
		func(ctx context.Context) error { _, err := slots.LeaseKV(ctx, js, 3); return err },
		func(ctx context.Context) error {
			_, err := metadata.Open(ctx, js, metadata.Config{Replicas: 3})
			return err
		},
		func(ctx context.Context) error { _, err := codebucket.Open(ctx, js, 3); return err },
		func(ctx context.Context) error { _, err := openChunks(ctx, js, 3); return err },
		func(ctx context.Context) error { _, err := openRegistryStore(ctx, js, 3); return err },
		func(ctx context.Context) error {
			_, err := roles.OpenCollectKV(ctx, js, 3, roles.CollectConfig{})
			return err
		},
		func(ctx context.Context) error {
			s, err := logs.Open(ctx, js, logs.Config{Replicas: 3})
			if err == nil {
				s.Close()
			}
			return err
		},
		func(ctx context.Context) error {
			s, err := eventinvoke.New(ctx, eventinvoke.Config{NATS: nc, Replicas: 3, Tuning: eventinvoke.Tuning{Pollers: -1}})
			if err == nil {
				s.Close()
			}
			return err
		},
	}
	for p := 0; p < f.Partitions; p++ {
		steps = append(steps, func(ctx context.Context) error { return replica.CreateJournal(ctx, js, p, 3) })
	}
	for _, step := range steps {
		if err := retryFor(ctx, 30*time.Second, step); err != nil {
			return err
		}
	}
	return nil
}

// retryFor retries fn (JetStream is busy electing stream leaders).
func retryFor(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(d)
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := fn(actx)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// adminName is the operator's bundle; localHosts what a local cluster's
// certificates are valid for.
const adminName = "admin"

var localHosts = []string{"127.0.0.1", "localhost"}

// newIdentity makes a cluster's default account and shared secrets.
func newIdentity() clusterIdentity {
	return clusterIdentity{AccountID: numeric("1" + random(6)[:11]), AccessKeyID: "AKIA" + strings.ToUpper(random(8)),
		SecretAccessKey: random(20), URLSecret: []byte(random(16)), Token: random(24), ImageKey: imageKey(),
		SessionKey: []byte(random(32))}
}

// absFlag is flag and path made absolute (roles run in their own directory).
func absFlag(flag, path string) ([]string, error) {
	abs, err := filepath.Abs(path)
	return []string{flag, abs}, err
}

// imageKey is a new master secret for the image key service.
func imageKey() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// withoutSecrets drops the access key a user may have exported for `kiln
// cluster up` from its children's environment: roles read secrets from files.
func withoutSecrets(env []string) []string {
	return slices.DeleteFunc(env, func(kv string) bool {
		return strings.HasPrefix(kv, "KILN_ACCESS_KEY_ID=") || strings.HasPrefix(kv, "KILN_SECRET_ACCESS_KEY=")
	})
}

func numeric(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] < '0' || b[i] > '9' {
			b[i] = '0' + b[i]%10
		}
	}
	return string(b)
}

func (f *File) write() error {
	b, _ := json.MarshalIndent(f, "", "  ")
	return os.WriteFile(filepath.Join(f.Dir, "cluster.json"), b, 0o600)
}

// Load reads DIR/cluster.json.
// For a cluster on real hosts, the operator writes it by hand in the
// issuer's directory (`{"nats": [URLs], "partitions": 6}`): status and
// drain then connect with its admin bundle.
func Load(dir string) (*File, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return nil, err
	}
	f := File{Dir: dir}
	return &f, json.Unmarshal(b, &f)
}

func (f *File) waitJetStream(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		nc, err := f.connect()
		if err == nil {
			js, _ := jetstream.New(nc)
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = js.AccountInfo(actx)
			cancel()
			nc.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("nats cluster not ready: %v", last)
}

// Connect connects to the cluster's NATS as its operator ("admin", with
// the bundle `kiln cluster up` made in DIR/roles/admin).
func (f *File) Connect() (*nats.Conn, error) { return f.connect(nats.MaxReconnects(-1)) }

func (f *File) connect(opts ...nats.Option) (*nats.Conn, error) {
	bundle := filepath.Join(f.Dir, "roles", adminName)
	tlsc, err := pki.Files{CA: filepath.Join(bundle, bundleCA), Cert: filepath.Join(bundle, bundleCert),
		Key: filepath.Join(bundle, bundleKey)}.Config()
	if err != nil {
		return nil, err
	}
	var user natsUser
	if err := readJSONSecret(filepath.Join(bundle, bundleNATS), &user); err != nil {
		return nil, err
	}
	return natsConnect(f.NATS, adminName, tlsc, user, opts...)
}

func (f *File) waitReady(ctx context.Context, workers int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, fe := range f.Frontends {
		for {
			resp, err := http.Get(fe + "/kiln/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("frontend %s not ready: %v", fe, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Every control plane answers: the frontends' management calls need
	// one, and the cluster is not up while one is still starting (it would
	// be missed the moment the other is lost).
	nc, err := f.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	want := 0
	for _, p := range f.Procs {
		if p.Role == "controlplane" {
			want++
		}
	}
	for {
		got, err := answering(nc, subjCPWhere, 500*time.Millisecond)
		if err == nil && got >= want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d control planes ready: %v", got, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		st, err := f.Status(ctx, "")
		if err == nil && len(st.Workers) >= workers && st.allLed() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready: %v (status %+v)", err, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// answering counts the distinct replies to one request on subj within d.
func answering(nc *nats.Conn, subj string, d time.Duration) (int, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subj, inbox, nil); err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for end := time.Now().Add(d); ; {
		m, err := sub.NextMsg(time.Until(end))
		if err != nil {
			return len(seen), nil // the window is over
		}
		if m.Header.Get("Status") == "" { // not the server's "no responders"
			seen[string(m.Data)] = true
		}
	}
}

// Status is `kiln cluster status`.
type Status struct {
	Partitions []PartitionInfo        `json:"partitions"`
	Members    []replica.MemberStatus `json:"members"`
	Workers    []WorkerStatus         `json:"workers"`
	Function   *FunctionInfo          `json:"function,omitempty"`
}

// PartitionInfo is a partition's leader (from the lease bucket) and members.
type PartitionInfo struct {
	Partition int            `json:"partition"`
	Leader    string         `json:"leader"`
	Zone      string         `json:"leader_zone"`
	Epoch     uint64         `json:"epoch"`
	LeaderPID int            `json:"leader_pid"`
	Members   []string       `json:"members"`
	Envs      map[string]int `json:"envs,omitempty"` // the leader's count by state
	// Counting is the member leading the counting service's partition
	// of the same number (accounts, not functions, map to it).
	Counting string `json:"counting_leader,omitempty"`
}

// FunctionInfo says where a function's environments are decided.
type FunctionInfo struct {
	Account   string `json:"account"`
	Name      string `json:"name"`
	Partition int    `json:"partition"`
	Leader    string `json:"leader"`
}

func (s *Status) allLed() bool {
	if s == nil || len(s.Partitions) == 0 {
		return false
	}
	for _, p := range s.Partitions {
		if p.Leader == "" {
			return false
		}
	}
	return true
}

// Status asks the cluster: leases, members (scatter-gather) and workers.
func (f *File) Status(ctx context.Context, function string) (*Status, error) {
	return f.status(ctx, function, false)
}

func (f *File) status(ctx context.Context, function string, envs bool) (*Status, error) {
	nc, err := f.Connect()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	st, err := gatherStatus(ctx, nc, f.Partitions, envs)
	if err != nil {
		return nil, err
	}
	if function != "" {
		p := partition.NewRing(f.Partitions).Of(f.AccountID, function)
		st.Function = &FunctionInfo{Account: f.AccountID, Name: function, Partition: p, Leader: st.Partitions[p].Leader}
	}
	return st, nil
}

// gatherStatus asks the cluster over nc: leases, members (scatter-gather;
// with envs, every environment in the leaders' view) and workers.
func gatherStatus(ctx context.Context, nc *nats.Conn, partitions int, envs bool) (*Status, error) {
	st := &Status{}
	for p := 0; p < partitions; p++ {
		pi := PartitionInfo{Partition: p}
		// Leases are read from their bucket's stream leader: a lagging
		// replica names a leader that has lost its lease (one a test or an
		// operator then kills, or expects in a zone).
		if v, _, err := natsd.LeaderGet(ctx, nc, replica.LeaseBucket, "p"+strconv.Itoa(p)); err == nil {
			var l replica.Lease
			json.Unmarshal(v, &l)
			pi.Leader, pi.Zone, pi.Epoch, pi.LeaderPID = l.Member, l.Zone, l.Epoch, l.PID
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, err
		}
		pi.Counting = slots.Leader(ctx, nc, p)
		st.Partitions = append(st.Partitions, pi)
	}
	members, err := gatherMembers(nc, st.Partitions, envs)
	if err != nil {
		return nil, err
	}
	st.Members = members
	for i := range st.Partitions {
		pi := &st.Partitions[i]
		for _, m := range st.Members {
			pi.Members = append(pi.Members, m.Member+"@"+m.Zone)
			for _, ps := range m.Partitions {
				if ps.Partition == pi.Partition && ps.Leading {
					pi.Envs = ps.Envs
				}
			}
		}
	}
	// Generous: a loaded host answers late, and a status without its
	// workers misleads.
	if msg, err := nc.Request(subjWorkers, nil, 5*time.Second); err == nil {
		json.Unmarshal(msg.Data, &st.Workers)
	}
	return st, nil
}

// gatherMembers asks every assignment member for its status and gathers
// the answers for a moment, and longer (up to membersWait) until the leader
// of every partition (by its lease) has answered: on a loaded host a fixed
// moment missed members, and with them the leaders' environments. (A
// leader cut off from the cluster never answers: the bound keeps status
// quick enough to watch its lease move.)
func gatherMembers(nc *nats.Conn, parts []PartitionInfo, envs bool) ([]replica.MemberStatus, error) {
	const moment, membersWait = 300 * time.Millisecond, 3 * time.Second
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	q := []byte("")
	if envs {
		q = []byte("envs")
	}
	if err := nc.PublishRequest(replica.MembersSubj, inbox, q); err != nil {
		return nil, err
	}
	waiting := map[string]bool{}
	for _, p := range parts {
		if p.Leader != "" {
			waiting[p.Leader] = true
		}
	}
	var out []replica.MemberStatus
	start := time.Now()
	for {
		end := start.Add(moment)
		if len(waiting) > 0 {
			end = start.Add(membersWait)
		}
		msg, err := sub.NextMsg(max(time.Until(end), time.Millisecond))
		if err != nil {
			return out, nil
		}
		var ms replica.MemberStatus
		if json.Unmarshal(msg.Data, &ms) == nil {
			out = append(out, ms)
			delete(waiting, ms.Member)
		}
	}
}

// drain asks placement to drain a worker: nothing new is placed on it,
// assignment retires its idle environments at once and each busy one when
// its invoke ends (running invokes are not moved or cut short).
func (f *File) drain(ctx context.Context, workerID string) error {
	nc, err := f.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	b, _ := json.Marshal(map[string]string{"id": workerID})
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, subjDrain, b)
	if err != nil {
		return fmt.Errorf("drain %s: %w", workerID, err)
	}
	var rep struct {
		Error string `json:"error"`
	}
	json.Unmarshal(msg.Data, &rep)
	if rep.Error != "" {
		return fmt.Errorf("drain %s: %s", workerID, rep.Error)
	}
	return nil
}

// Down stops every process of the cluster (by the PIDs it started):
// SIGTERM, then SIGKILL to any still running after its grace.
func (f *File) Down() error {
	// The roles first, while NATS still runs: a role stopping stores its
	// last log lines and releases its leases through it (without NATS each
	// waits out its shutdown deadline, and loses them). Then the NATS nodes.
	f.stop(func(p Proc) bool { return p.Role != "nats" }, shutdownGrace+5*time.Second)
	f.stop(func(p Proc) bool { return p.Role == "nats" }, 5*time.Second)
	if f.Netns != nil {
		f.Netns.Remove()
	}
	return nil
}

// stop sends SIGTERM to the processes which, and SIGKILL to those still
// running after grace.
func (f *File) stop(which func(Proc) bool, grace time.Duration) {
	var alive []int
	for _, p := range f.Procs {
		if which(p) && p.PID > 0 && ours(p) {
			syscall.Kill(p.PID, syscall.SIGTERM)
			alive = append(alive, p.PID)
		}
	}
	for end := time.Now().Add(grace); len(alive) > 0 && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		still := alive[:0]
		for _, pid := range alive {
			if syscall.Kill(pid, 0) == nil && !zombie(pid) {
				still = append(still, pid)
			}
		}
		alive = still
	}
	for _, pid := range alive {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Kill sends SIGKILL to one process of the cluster (fault tests).
func (f *File) Kill(name string) (Proc, error) { return f.Signal(name, syscall.SIGKILL) }

// Signal sends sig to one process of the cluster, by the PID it started.
func (f *File) Signal(name string, sig syscall.Signal) (Proc, error) {
	for _, p := range f.Procs {
		if p.Name == name && ours(p) {
			return p, syscall.Kill(p.PID, sig)
		}
	}
	return Proc{}, fmt.Errorf("no running process %q", name)
}

// ours checks that a PID from cluster.json still runs the process we
// started (not a recycled PID).
func ours(p Proc) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return len(args) > 2 && args[1] == p.Role && strings.Contains(string(b), "\x00"+p.Name+"\x00")
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}
