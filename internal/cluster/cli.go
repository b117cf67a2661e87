package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/pki"
	"github.com/kiln-dev/kiln/internal/replica"
	"github.com/kiln-dev/kiln/internal/roles"
)

// Commands are the subcommands this package adds to kiln.
var Commands = []string{"nats", "assignment", "placement", "worker", "controlplane", "frontend", "pollers", "cluster"}

// Usage describes them.
const Usage = `  nats          one NATS JetStream node of a cluster
  assignment    an assignment member (every partition; --zone, --nats)
  placement     the placement service
  worker        a worker (--listen for the invoke endpoint; --sandbox linux|process)
  controlplane  the Lambda management API
  frontend      the Lambda invoke API, Event invokes included, and the
                CloudWatch Logs API (--listen)
  pollers       the async queue manager and pollers (--pollers)
  cluster       up|status|drain|down a local cluster of all of them (--dir;
                drain: --worker ID, no new environments on it, idle ones retired,
                running invokes finish); certs --name N --role R --host H makes
                one process's bundle (certificate, credentials) for a real host
Each role reads --config FILE (JSON, flag name → value) and its secrets from
the files it names (--ca --cert --key --nats-creds --identity), never from
the environment.
`

// Main runs one of Commands.
func Main(cmd string, args []string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd == "cluster" {
		return clusterCmd(ctx, args)
	}
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	var cfg roleConfig
	natsURLs := fs.String("nats", "nats://127.0.0.1:4222", "NATS URLs, comma-separated (this zone's first)")
	fs.StringVar(&cfg.Name, "name", cmd, "unique name of this process")
	fs.StringVar(&cfg.Zone, "zone", "a", "availability zone")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "HTTP listen address (frontend, controlplane, worker; nats: client address)")
	fs.StringVar(&cfg.Advertise, "advertise", "", "worker, controlplane: host:port other roles reach it at (default: the listen address)")
	fs.StringVar(&cfg.DataDir, "data", ".kiln-"+cmd, "data directory")
	fs.StringVar(&cfg.Region, "region", "us-east-1", "region")
	fs.IntVar(&cfg.Partitions, "partitions", 6, "assignment partitions")
	fs.IntVar(&cfg.Replicas, "replicas", 3, "JetStream replicas of journals, leases and metadata")
	fs.IntVar(&cfg.Index, "index", 0, "assignment: this member's index (spreads initial leaders)")
	fs.IntVar(&cfg.Members, "members", 3, "assignment: members per partition")
	mode := fs.String("mode", string(replica.Replicated), "assignment: replicated | single-owner (the orphaning baseline)")
	fs.DurationVar(&cfg.Lease, "lease", 400*time.Millisecond, "assignment: leader lease")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 10*time.Minute, "assignment: idle environment lifetime")
	fs.IntVar(&cfg.AccountConcurrency, "account-concurrency", 1000, "assignment, controlplane: every account's concurrency limit, across frontends")
	fs.IntVar(&cfg.MemoryMB, "memory", 0, "worker: memory for environments in MB (0: unbounded)")
	fs.IntVar(&cfg.CPUMillis, "cpu", 0, "worker: CPU for environments in thousandths of a CPU (0: every CPU of the host)")
	isolation := fs.String("sandbox", "linux", "worker: "+roles.SandboxUsage)
	fs.IntVar(&cfg.Pollers, "pollers", 1, "pollers: async pollers in this process")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "frontend, worker, pollers, controlplane: address of the Prometheus metrics listener (/metrics); empty means none")
	registryHosts := fs.String("registry-hosts", "", "controlplane: host:port names of Kiln's own registry in an ImageUri (the frontends', or their load balancer's), comma-separated")
	fs.StringVar(&cfg.ImageS3, "image-s3", "", "controlplane, worker: file (0600) of an S3-compatible bucket (as kiln up --image-s3) to keep image chunks in, instead of the JetStream bucket")
	fs.DurationVar(&cfg.ImageImportStale, "image-import-stale", 0, "controlplane: how long the control plane running a code import (an image, or a zip being unpacked) may be silent before another takes it over (0: a minute)")
	fs.DurationVar(&cfg.Collect.Grace, "collect-grace", 0, "controlplane: how long ago an unused code package, image chunk or manifest must have been written to be collected (0: an hour)")
	fs.DurationVar(&cfg.Collect.Interval, "collect-interval", 0, "controlplane: how often one control plane collects code no function uses (0: 10 minutes)")
	clusterAddr := fs.String("cluster", "", "nats: route listen address")
	routes := fs.String("routes", "", "nats: other nodes' route addresses, comma-separated")
	config := fs.String("config", "", "JSON file of these settings by flag name; flags given here win")
	var files pki.Files
	fs.StringVar(&files.CA, "ca", "", "the cluster CA's certificate (PEM)")
	fs.StringVar(&files.Cert, "cert", "", "this process's certificate, from the CA")
	fs.StringVar(&files.Key, "key", "", "its private key (a file of mode 0600)")
	natsCreds := fs.String("nats-creds", "", "file (0600) of this role's NATS user and password")
	identity := fs.String("identity", "", "file (0600) of the account and secrets this role shares")
	users := fs.String("users", "", "nats: file (0600) of the client users, passwords bcrypt-hashed")
	routeCreds := fs.String("route-creds", "", "nats: file (0600) of the user and password routes give")
	fs.Parse(args)
	if *config != "" {
		if err := applyConfig(fs, *config); err != nil {
			return err
		}
	}
	cfg.NATS, cfg.Mode, cfg.Logger = strings.Split(*natsURLs, ","), replica.Mode(*mode), logger
	if *registryHosts != "" {
		cfg.RegistryHosts = strings.Split(*registryHosts, ",")
	}
	if files.CA == "" || files.Cert == "" || files.Key == "" {
		return fmt.Errorf("kiln %s: --ca, --cert and --key are required (kiln cluster up or kiln cluster certs makes them)", cmd)
	}
	var err error
	if cfg.TLS, err = files.Config(); err != nil {
		return err
	}
	if cmd == "nats" {
		var rs []string
		if *routes != "" {
			rs = strings.Split(*routes, ",")
		}
		nc := natsConfig{Name: cfg.Name, Dir: cfg.DataDir, Listen: cfg.Listen, Cluster: *clusterAddr, Routes: rs, TLS: cfg.TLS.Server()}
		if err := readJSONSecret(*users, &nc.Users); err != nil {
			return fmt.Errorf("kiln nats: --users: %w", err)
		}
		if err := readJSONSecret(*routeCreds, &nc.Route); err != nil {
			return fmt.Errorf("kiln nats: --route-creds: %w", err)
		}
		s, err := startNATS(nc)
		if err != nil {
			return err
		}
		logger.Info("nats node up", "name", cfg.Name, "client", s.ClientURL())
		<-ctx.Done()
		s.Shutdown()
		s.WaitForShutdown()
		return nil
	}
	if err := readJSONSecret(*natsCreds, &cfg.NATSUser); err != nil {
		return fmt.Errorf("kiln %s: --nats-creds: %w", cmd, err)
	}
	if *identity != "" {
		if err := readJSONSecret(*identity, &cfg.Identity); err != nil {
			return fmt.Errorf("kiln %s: --identity: %w", cmd, err)
		}
	}
	if cfg.Identity.Token == "" && cmd != "controlplane" && cmd != "placement" {
		return fmt.Errorf("kiln %s: no cluster token (--identity names the file; roles authenticate to workers with it)", cmd)
	}
	if cfg.Identity.AccessKeyID == "" && (cmd == "controlplane" || cmd == "frontend") {
		return fmt.Errorf("kiln %s: no access key (--identity names the file; it serves the Lambda API with it)", cmd)
	}
	if cmd == "worker" {
		var err error
		if cfg.Sandbox, err = roles.Sandbox(*isolation); err != nil {
			return err
		}
	}
	return runRole(ctx, cmd, cfg)
}

// applyConfig sets each flag the JSON object in file names (a string, a
// number, a boolean or a list, joined with commas) unless the command line
// set it.
func applyConfig(fs *flag.FlagSet, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var settings map[string]any
	if err := d.Decode(&settings); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for k, v := range settings {
		if given[k] {
			continue
		}
		if fs.Lookup(k) == nil || k == "config" {
			return fmt.Errorf("%s: unknown setting %q", file, k)
		}
		s := fmt.Sprint(v)
		if list, ok := v.([]any); ok {
			parts := make([]string, len(list))
			for i, x := range list {
				parts[i] = fmt.Sprint(x)
			}
			s = strings.Join(parts, ",")
		}
		if err := fs.Set(k, s); err != nil {
			return fmt.Errorf("%s: %s: %w", file, k, err)
		}
	}
	return nil
}

func clusterCmd(ctx context.Context, args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("usage: kiln cluster up|status|drain|down --dir DIR")
	}
	fs := flag.NewFlagSet("cluster "+args[0], flag.ExitOnError)
	dir := fs.String("dir", ".kiln-cluster", "cluster directory")
	workers := fs.Int("workers", 3, "up: workers")
	parts := fs.Int("partitions", 6, "up: assignment partitions")
	mode := fs.String("mode", string(replica.Replicated), "up: replicated | single-owner")
	isolation := fs.String("sandbox", "linux", "up: the workers' "+roles.SandboxUsage)
	pollers := fs.Int("pollers", 2, "up: async pollers processes")
	netns := fs.Bool("netns", false, "up: each zone in its own network namespace with its own address (root)")
	accountLimit := fs.Int("account-concurrency", 1000, "up: every account's concurrency limit, across frontends")
	imageS3 := fs.String("image-s3", "", "up: file (0600) of an S3-compatible bucket the control planes and workers keep image chunks in (as kiln up --image-s3); default the JetStream bucket")
	function := fs.String("function", "", "status: also show this function's partition")
	workerID := fs.String("worker", "", "drain: the worker to drain (its name, as in status)")
	name := fs.String("name", "", "certs: the process's name (unique)")
	role := fs.String("role", "", "certs: its role (nats, assignment, placement, worker, controlplane, frontend, admin)")
	hosts := fs.String("host", "", "certs: addresses and names it serves on, comma-separated")
	fs.Parse(args[1:])
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	switch args[0] {
	case "up":
		if *isolation != "linux" && *isolation != "process" {
			return fmt.Errorf("--sandbox %q: want linux or process", *isolation)
		}
		began := time.Now()
		f, err := upCluster(ctx, upConfig{Dir: *dir, Workers: *workers, Partitions: *parts, Mode: replica.Mode(*mode), Netns: *netns,
			Sandbox: *isolation, Pollers: *pollers, AccountConcurrency: *accountLimit, ImageS3: *imageS3,
			Progress: func(step string) { fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(began).Seconds(), step) }})
		if err != nil {
			return err
		}
		fmt.Printf("Kiln cluster is up (%d processes; %s/cluster.json).\n  endpoints: %s\n  account: %s\n  access key id: %s\n  secret access key: %s\n  console: %s/console/ (on every endpoint)\n",
			len(f.Procs), f.Dir, strings.Join(f.Frontends, " "), f.AccountID, f.AccessKeyID, f.SecretAccessKey, f.Frontends[0])
		return nil
	case "status":
		f, err := Load(*dir)
		if err != nil {
			return err
		}
		st, err := f.Status(ctx, *function)
		if err != nil {
			return err
		}
		return out.Encode(st)
	case "drain":
		if *workerID == "" {
			return fmt.Errorf("usage: kiln cluster drain --dir DIR --worker ID")
		}
		f, err := Load(*dir)
		if err != nil {
			return err
		}
		if err := f.drain(ctx, *workerID); err != nil {
			return err
		}
		return out.Encode(map[string]string{"drained": *workerID})
	case "certs":
		if *name == "" || *role == "" || *hosts == "" {
			return fmt.Errorf("usage: kiln cluster certs --dir DIR --name NAME --role ROLE --host ADDR[,ADDR]")
		}
		if !slices.Contains(append(natsRoles, "nats"), *role) {
			return fmt.Errorf("kiln cluster certs: unknown role %q", *role)
		}
		is, err := openIssuer(*dir, newIdentity)
		if err != nil {
			return err
		}
		bundle, err := is.issue(*name, *role, hostsOf(*hosts))
		if err != nil {
			return err
		}
		return out.Encode(map[string]any{"bundle": bundle, "settings": bundleFlags(bundle, *role)})
	case "down":
		f, err := Load(*dir)
		if err != nil {
			return err
		}
		return f.Down()
	}
	return fmt.Errorf("unknown: kiln cluster %s", args[0])
}
