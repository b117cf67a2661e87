// Command kiln-bench measures Kiln's invoke path against a floor measured in
// the same run (see package bench). It is not part of the shipped kiln, and
// links no testing either. It builds its functions from sources embedded in
// it (kilntest/fntest, bench/functions) with the Go toolchain, in a module
// of their own; only when no kiln is given or beside it does it need the
// source tree (the working directory's) to build one.
//
//	go run ./cmd/kiln-bench [--only invoke,counting,scale,async,cluster,kinesis,images,console,url,streams,esm] [flags]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/agent"
	benchpkg "github.com/kiln-dev/kiln/internal/bench"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

func main() {
	agent.Reexec() // the scale section's in-process Kiln re-executes this binary as its agents
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "floor": // the plain-HTTP floor, run by the invoke section
		err = benchpkg.ServeFloor()
	case len(os.Args) > 1 && os.Args[1] == "flood": // the async section's Event invoke flood
		err = benchpkg.Flood(os.Args[2:])
	default:
		err = run(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiln-bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kiln-bench", flag.ExitOnError)
	kilnPath := fs.String("kiln", "", "the kiln binary measured (kiln up); empty: the kiln next to kiln-bench, else one built from the source tree of the working directory")
	invokes := fs.Int("invokes", 5000, "warm invokes per concurrency level")
	cold := fs.Int("cold", 50, "cold starts to measure")
	clients := fs.String("clients", "1,2,8", "concurrency levels of the warm invokes, comma-separated")
	isolation := fs.String("sandbox", "linux", "isolation backend of the measured Kiln (as kiln up --sandbox)")
	only := fs.String("only", "invoke,counting", "sections to run: invoke (warm and cold vs the plain-HTTP floor), counting, scale, async (sync invokes alone and under Event invoke floods), cluster (warm invokes, counting decisions and a leader's failover through a local kiln cluster vs kiln up), kinesis (Kiln streams' own put and consume rates), images (cold starts of zip and image functions), console (sequential invokes alone and with open console pages), url (warm invokes through a function URL vs the invoke API and the floor), streams (stream mappings: records/s end to end through Kinesis and Kafka mappings vs their sources' own read rate, put-to-invoke latency), esm (an SQS event source mapping end to end vs the queue's own send+receive+delete, and the pollers' CPU per message)")
	floods := fs.String("async-rates", "1000,4000,0", "event rates (per second; 0: as fast as 8 clients go) of the async section's floods")
	envs := fs.Int("scale-envs", 1000, "environments the scale section drives one function to")
	inProcessEvents := fs.Bool("in-process-events", false, "async section: run kiln up with --event-frontend=false, to compare")
	clusterInvokes := fs.Int("cluster-invokes", 2000, "cluster section: warm invokes per concurrency level, each of kiln up and the cluster")
	decisions := fs.Duration("cluster-decisions", 3*time.Second, "cluster section: how long each counting decision series runs")
	kinesisRecords := fs.Int("kinesis-records", 100000, "kinesis section: records put with PutRecords, then read back")
	imageMB := fs.Int("image-mb", 32, "images section: the file each start reads 5% of, in MiB")
	imageStarts := fs.Int("image-starts", 5, "images section: cold starts of each kind (zip, lazy image, mounted image)")
	viewers := fs.Int("console-viewers", 5, "console section: open console pages (server-sent event streams of the invoked function's page) in the loaded rounds")
	streamRecords := fs.Int("stream-records", 20000, "streams section: records per source")
	esmMessages := fs.Int("esm-messages", 2000, "esm section: messages per series")
	esmCluster := fs.Bool("esm-cluster", false, "esm section: also through a local cluster (its pollers processes' CPU)")
	peers := fs.Bool("peers", false, "invoke section: also measure AWS's runtime interface emulator running the same function, installed with go install from the module proxy into --peers-dir")
	peersDir := fs.String("peers-dir", filepath.Join(os.TempDir(), "kiln-bench-peers"), "where --peers installs the peers (kept between runs)")
	baseline := fs.String("baseline", "", "invoke section: another kiln binary (an earlier build) measured in the same rounds")
	fs.Parse(args)
	levels, err := positiveList(*clients, 1)
	if err != nil {
		return fmt.Errorf("--clients: %w", err)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	// Interrupted, the sections return and stop what they started (the
	// cluster's processes outlive this one otherwise).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kiln, cleanup, err := findKiln(*kilnPath)
	if err != nil {
		return err
	}
	defer cleanup()
	for _, section := range strings.Split(*only, ",") {
		var err error
		switch section {
		case "invoke":
			cfg := benchpkg.Config{Kiln: kiln, Invokes: *invokes, ColdStarts: *cold, Clients: levels, Sandbox: *isolation}
			if *peers {
				cfg.Peers = *peersDir
			}
			cfg.Baseline = *baseline
			err = benchpkg.Run(ctx, cfg, os.Stdout)
		case "url":
			err = benchpkg.URLs(ctx, benchpkg.Config{Kiln: kiln, Invokes: *invokes, Clients: levels, Sandbox: *isolation}, os.Stdout)
		case "cluster":
			err = benchpkg.Cluster(ctx, benchpkg.ClusterConfig{Kiln: kiln, Invokes: *clusterInvokes, Clients: levels, Sandbox: *isolation, Decisions: *decisions}, os.Stdout)
		case "kinesis":
			err = benchpkg.Kinesis(ctx, benchpkg.KinesisConfig{Kiln: kiln, Records: *kinesisRecords}, os.Stdout)
		case "console":
			err = benchpkg.Console(ctx, benchpkg.ConsoleConfig{Kiln: kiln, Sandbox: *isolation, Viewers: *viewers}, os.Stdout)
		case "streams":
			err = benchpkg.Streams(ctx, benchpkg.StreamsConfig{Records: *streamRecords}, os.Stdout)
		case "esm":
			err = benchpkg.Mappings(ctx, benchpkg.MappingsConfig{Kiln: kiln, Sandbox: *isolation, Messages: *esmMessages, Cluster: *esmCluster}, os.Stdout)
		case "counting":
			benchpkg.Counting(os.Stdout)
		case "images":
			err = benchpkg.Images(ctx, benchpkg.ImagesConfig{Kiln: kiln, Sandbox: *isolation, FileMB: *imageMB, Starts: *imageStarts}, os.Stdout)
		case "async":
			var rates []int
			if rates, err = positiveList(*floods, 0); err == nil {
				err = benchpkg.SyncUnderAsync(ctx, benchpkg.AsyncConfig{Kiln: kiln, Rates: rates, Sandbox: *isolation, InProcessEvents: *inProcessEvents}, os.Stdout)
			}
		case "scale":
			fmt.Println()
			if err = benchpkg.ScaleOut(ctx, *envs, false, os.Stdout); err == nil {
				err = benchpkg.ScaleOut(ctx, *envs, true, os.Stdout)
			}
		default:
			err = fmt.Errorf("unknown bench section %q", section)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// findKiln returns the kiln binary to measure: path, or the kiln beside
// this binary, or one built from the source tree the working directory is
// in (`go run ./cmd/kiln-bench`) into a directory that cleanup removes.
func findKiln(path string) (kiln string, cleanup func(), err error) {
	cleanup = func() {}
	if path != "" {
		return path, cleanup, nil
	}
	if self, err := os.Executable(); err == nil {
		if beside := filepath.Join(filepath.Dir(self), "kiln"); isFile(beside) {
			return beside, cleanup, nil
		}
	}
	dir, err := os.MkdirTemp("", "kiln-bench-bin-")
	if err != nil {
		return "", nil, err
	}
	fmt.Fprintln(os.Stderr, "building kiln ...")
	if kiln, err = fntest.BuildKiln(dir); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return kiln, func() { os.RemoveAll(dir) }, nil
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// positiveList parses comma-separated integers of at least min.
func positiveList(s string, min int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < min {
			return nil, fmt.Errorf("%q is not a number of at least %d", f, min)
		}
		out = append(out, n)
	}
	return out, nil
}
