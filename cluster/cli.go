package cluster

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/replica"
)

// Commands are the subcommands this package adds to kiln.
var Commands = []string{"nats", "assignment", "placement", "worker", "controlplane", "frontend", "cluster"}

// Usage describes them.
const Usage = `  nats          one NATS JetStream node of a cluster
  assignment    an assignment member (every partition; --zone, --nats)
  placement     the placement service
  worker        a worker (--listen for the invoke endpoint)
  controlplane  the Lambda management API
  frontend      the Lambda invoke API (--listen)
  cluster       up|status|drain|down a local cluster of all of them (--dir;
                drain: --worker ID, no new environments on it, idle ones retired,
                running invokes finish)
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
	var cfg RoleConfig
	natsURLs := fs.String("nats", "nats://127.0.0.1:4222", "NATS URLs, comma-separated (this zone's first)")
	fs.StringVar(&cfg.Name, "name", cmd, "unique name of this process")
	fs.StringVar(&cfg.Zone, "zone", "a", "availability zone")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "HTTP listen address (frontend, controlplane, worker; nats: client address)")
	fs.StringVar(&cfg.DataDir, "data", ".kiln-"+cmd, "data directory")
	fs.StringVar(&cfg.Region, "region", "us-east-1", "region")
	fs.IntVar(&cfg.Partitions, "partitions", 6, "assignment partitions")
	fs.IntVar(&cfg.Replicas, "replicas", 3, "JetStream replicas of journals, leases and metadata")
	fs.IntVar(&cfg.Index, "index", 0, "assignment: this member's index (spreads initial leaders)")
	fs.IntVar(&cfg.Members, "members", 3, "assignment: members per partition")
	mode := fs.String("mode", string(replica.Replicated), "assignment: replicated | single-owner (the orphaning baseline)")
	fs.DurationVar(&cfg.Lease, "lease", 400*time.Millisecond, "assignment: leader lease")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 10*time.Minute, "assignment: idle environment lifetime")
	fs.IntVar(&cfg.MemoryMB, "memory", 0, "worker: memory for environments in MB (0: unbounded)")
	fs.IntVar(&cfg.CPUMillis, "cpu", 0, "worker: CPU for environments in thousandths of a CPU (0: every CPU of the host)")
	clusterAddr := fs.String("cluster", "", "nats: route listen address")
	routes := fs.String("routes", "", "nats: other nodes' route addresses, comma-separated")
	fs.Parse(args)
	cfg.NATS, cfg.Mode, cfg.Logger = strings.Split(*natsURLs, ","), replica.Mode(*mode), logger
	cfg.Identity = IdentityFromEnv()
	if cmd == "nats" {
		var rs []string
		if *routes != "" {
			rs = strings.Split(*routes, ",")
		}
		s, err := StartNATS(NATSConfig{Name: cfg.Name, Dir: cfg.DataDir, Listen: cfg.Listen, Cluster: *clusterAddr, Routes: rs})
		if err != nil {
			return err
		}
		logger.Info("nats node up", "name", cfg.Name, "client", s.ClientURL())
		<-ctx.Done()
		s.Shutdown()
		s.WaitForShutdown()
		return nil
	}
	if cfg.Identity.Token == "" && cmd != "controlplane" && cmd != "placement" {
		return fmt.Errorf("KILN_CLUSTER_TOKEN is not set (roles authenticate to workers with it)")
	}
	return Run(ctx, cmd, cfg)
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
	function := fs.String("function", "", "status: also show this function's partition")
	workerID := fs.String("worker", "", "drain: the worker to drain (its name, as in status)")
	fs.Parse(args[1:])
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	switch args[0] {
	case "up":
		f, err := Up(ctx, UpConfig{Dir: *dir, Workers: *workers, Partitions: *parts, Mode: replica.Mode(*mode)})
		if err != nil {
			return err
		}
		fmt.Printf("Kiln cluster is up (%d processes; %s/cluster.json).\n  endpoints: %s\n  account: %s\n  access key id: %s\n  secret access key: %s\n",
			len(f.Procs), f.Dir, strings.Join(f.Frontends, " "), f.AccountID, f.AccessKeyID, f.SecretAccessKey)
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
		if err := f.Drain(ctx, *workerID); err != nil {
			return err
		}
		return out.Encode(map[string]string{"drained": *workerID})
	case "down":
		f, err := Load(*dir)
		if err != nil {
			return err
		}
		return f.Down()
	}
	return fmt.Errorf("unknown: kiln cluster %s", args[0])
}
