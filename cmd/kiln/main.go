// Command kiln runs Kiln, a self-hosted serverless platform that speaks
// AWS Lambda's APIs.
//
//	kiln up [--data DIR] [--listen ADDR] [--tls]   every role in one process
//	kiln event-frontend                    the Event invoke frontend process, run by kiln up
//	kiln nats|assignment|placement|worker|controlplane|frontend|pollers [flags]
//	                                       one cluster role as a process
//	kiln cluster up|status|drain|down      a local cluster of role processes
//	kiln accounts create|list|keys         accounts and their keys
//
// The benchmark is a command of its own, cmd/kiln-bench.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/accounts"
	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/kiln-dev/kiln/internal/server"
)

func main() {
	agent.Reexec() // `kiln-agent` and `kiln-spawner` re-executions of this binary
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "event-frontend": // the event-invoke frontend process, run by `kiln up`
		err = eventFrontend()
	case "accounts":
		err = accounts.Main(context.Background(), os.Args[2:], os.Stdout)
	case "help", "-h", "--help":
		usage()
		return
	default:
		if slices.Contains(cluster.Commands, os.Args[1]) { // cluster mode
			err = cluster.Main(os.Args[1], os.Args[2:])
			break
		}
		fmt.Fprintf(os.Stderr, "kiln: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiln:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: kiln <command> [flags]

commands:
  up      run every Kiln role in one process (embedded NATS JetStream)
`+accounts.Usage+`

cluster mode (roles as processes over a NATS JetStream cluster):
`+cluster.Usage)
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	data := fs.String("data", ".kiln", "data directory")
	listen := fs.String("listen", "127.0.0.1:9000", "address of the Lambda API endpoint")
	region := fs.String("region", roles.DefaultRegion, "region Kiln reports")
	idle := fs.Duration("idle-timeout", 10*time.Minute, "how long an idle execution environment is kept")
	concurrency := fs.Int("account-concurrency", 1000, "account concurrency limit")
	metricsListen := fs.String("metrics-listen", "127.0.0.1:9100", "address of the Prometheus metrics listener (/metrics); empty turns it off")
	isolation := fs.String("sandbox", "linux", roles.SandboxUsage)
	separateEvents := fs.Bool("event-frontend", true, "take Event invokes in a process of their own at idle CPU priority, so that a flood of them leaves the CPUs to sync invokes")
	logMaxBytes := fs.Int64("log-max-bytes", server.DefaultLogMaxBytes, "bound on the stored logs of all functions together; the oldest go first (negative: none)")
	logRetention := fs.Int("log-retention-days", server.DefaultLogRetentionDays, "days the logs of a function without a retention policy (aws logs put-retention-policy) are kept (negative: forever)")
	natsListen := fs.String("nats-listen", "", "address where NATS clients reach the embedded JetStream, e.g. to read Kiln queues (no authentication: keep it on loopback); empty means none")
	archives := fs.String("image-archives", "", "directory of image archives (docker save or OCI layout tarballs) that ImageUri docker-archive:FILE and oci-archive:FILE name; default DATA/image-archives")
	imageS3 := fs.String("image-s3", "", "file (0600) of an S3-compatible bucket (JSON: bucket, prefix, endpoint, region, path_style, access_key_id, secret_access_key) to keep image chunks in, instead of DATA/chunks")
	var collect roles.CollectConfig
	fs.DurationVar(&collect.Grace, "collect-grace", 0, "how long ago an unused code package, image chunk or manifest must have been written to be collected (0: an hour)")
	fs.DurationVar(&collect.Interval, "collect-interval", 0, "how often code no function uses is collected (0: 10 minutes)")
	tlsOn := fs.Bool("tls", false, "serve HTTPS; without --tls-cert, with a certificate Kiln makes (DATA/tls; its CA is the AWS config file's ca_bundle)")
	tlsCert := fs.String("tls-cert", "", "PEM certificate to serve HTTPS with (with --tls-key)")
	tlsKey := fs.String("tls-key", "", "PEM private key of --tls-cert")
	pprofOn := fs.Bool("pprof", false, "also serve Go's profiles (/debug/pprof/) on the metrics listener")
	fs.Parse(args)
	box, err := roles.Sandbox(*isolation)
	if err != nil {
		return err
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := adoptOrphans(); err != nil {
		return fmt.Errorf("subreaper: %w", err)
	}
	defer endChildren(10*time.Second, logger) // after s.Close

	var eventFrontend []string
	if *separateEvents {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		eventFrontend = []string{self, "event-frontend"}
	}
	s, err := server.Start(ctx, server.Config{EventFrontend: eventFrontend,
		DataDir: *data, Listen: *listen, Region: *region, IdleTimeout: *idle, AccountConcurrency: *concurrency,
		AccessKeyID: os.Getenv("KILN_ACCESS_KEY_ID"), SecretAccessKey: os.Getenv("KILN_SECRET_ACCESS_KEY"),
		LogMaxBytes: *logMaxBytes, LogRetentionDays: *logRetention,
		NATSListen: *natsListen, Sandbox: box, MetricsListen: *metricsListen, ImageArchives: *archives, ImageS3: *imageS3, Collect: collect, Pprof: *pprofOn, Logger: logger,
		TLS: *tlsOn, TLSCert: *tlsCert, TLSKey: *tlsKey,
	})
	if err != nil {
		return err
	}
	// The secret is shown once, when it is made: later starts would put it
	// into every log that captures Kiln's output.
	secret := "in " + filepath.Join(s.DataDir, "credentials")
	if s.NewSecret {
		secret = s.Identity.SecretAccessKey + " (shown once; kept in " + filepath.Join(s.DataDir, "credentials") + ")"
	}
	fmt.Printf(`Kiln is up.
  endpoint:          %s
  region:            %s
  account:           %s
  access key id:     %s
  secret access key: %s

  export AWS_SHARED_CREDENTIALS_FILE=%s/credentials AWS_CONFIG_FILE=%s/config
  aws lambda list-functions --endpoint-url %s
`, s.Endpoint, s.Region, s.Identity.AccountID, s.Identity.AccessKeyID, secret,
		s.DataDir, s.DataDir, s.Endpoint)
	if s.NATSURL != "" {
		fmt.Printf("  NATS (Kiln queues): %s\n", s.NATSURL)
	}
	if s.MetricsEndpoint != "" {
		fmt.Printf("  metrics:            %s\n", s.MetricsEndpoint)
	}
	fmt.Printf("  console:            %s/console/\n", s.Endpoint)
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err = <-s.Done():
	}
	s.Close()
	return err
}

func eventFrontend() error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("process", "event-frontend")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return server.RunEventFrontend(ctx, logger)
}
