package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/slots"
)

// ClusterConfig sizes the cluster section. The zero value is the default
// run but for Kiln, which is required.
type ClusterConfig struct {
	Kiln    string // the kiln binary: kiln up, and kiln cluster up/down
	Invokes int    // warm invokes per concurrency level; 0 means 2000
	Clients []int  // concurrency levels; nil means 1, 8
	Sandbox string // kiln up --sandbox and kiln cluster up --sandbox; empty: their default
	// Decisions is how long each counting series runs; 0 means 3 s.
	Decisions time.Duration
}

// Cluster measures, in one run, warm invokes through a local cluster
// (`kiln cluster up`, invokes spread over its frontends) against `kiln up`
// in interleaved rounds, counting decisions across frontends against the
// in-process counter, and the time to the first successful invoke after
// the function's partition leader is killed. It prints ratios cluster/up.
func Cluster(ctx context.Context, cfg ClusterConfig, out io.Writer) error {
	if cfg.Invokes == 0 {
		cfg.Invokes = 2000
	}
	if cfg.Clients == nil {
		cfg.Clients = []int{1, 8}
	}
	if cfg.Decisions == 0 {
		cfg.Decisions = 3 * time.Second
	}
	payload := []byte(echoPayload)
	dir, zip, s, done, err := upWithEcho(ctx, cfg.Kiln, cfg.Sandbox, "kiln-bench-cluster-", out)
	if err != nil {
		return err
	}
	defer done()
	fmt.Fprintln(out, "starting a local cluster (kiln cluster up) ...")
	f, down, err := clusterUp(ctx, cfg.Kiln, filepath.Join(dir, "cluster"), cfg.Sandbox)
	if err != nil {
		return err
	}
	defer down()
	fmt.Fprintf(out, "cluster up: %d processes, frontends %v\n", len(f.Procs), f.Frontends)

	// At a full vCPU, 8 environments would not fit the local cluster's
	// workers on a small host (placement counts CPU): a third of one each.
	const fn, memory = "bench-warm", 590
	if err := s.createEcho(ctx, fn, zip, memory); err != nil {
		return err
	}
	if err := atEndpoint(f.Frontends[0]).createEcho(ctx, fn, zip, memory); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	var fronts []target
	for _, e := range f.Frontends {
		fronts = append(fronts, signedClient(e, fn, payload, 1).target("cluster"))
	}
	targets := []target{signedClient(s.endpoint, fn, payload, 1).target("kiln up"), spread("kiln cluster", fronts)}

	fmt.Fprintf(out, "\nwarm invokes: %d per level in %d interleaved rounds, payload %d bytes; cluster callers spread over %d frontends\n",
		cfg.Invokes, rounds, len(payload), len(f.Frontends))
	err = measureLevels(ctx, out, targets, cfg.Clients, cfg.Invokes, func(c int, st []Stats) {
		printRatio(out, c, "cluster/up", st[1], st[0])
	})
	if err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "measuring counting decisions (%s per series) ...\n", cfg.Decisions)
	if err := clusterDecisions(ctx, f, cfg.Decisions, out); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "killing the function's partition leader ...")
	return failover(ctx, f, fn, signedClient(f.Frontends[0], fn, payload, 1), out)
}

// spread is one target made of several, caller i using ts[i%len(ts)].
func spread(name string, ts []target) target {
	return target{name: name,
		prepare: func(clients int) error {
			for _, t := range ts {
				if err := t.prepare(clients); err != nil {
					return err
				}
			}
			return nil
		},
		call: func(ctx context.Context, i int) (time.Duration, error) { return ts[i%len(ts)].call(ctx, i) }}
}

// clusterUp runs `kiln cluster up` on dir with the bench's keys; down runs
// `kiln cluster down`, which stops every process the cluster started.
func clusterUp(ctx context.Context, kiln, dir, sandbox string) (*cluster.File, func(), error) {
	args := []string{"cluster", "up", "--dir", dir}
	if sandbox != "" {
		args = append(args, "--sandbox", sandbox)
	}
	cmd := exec.CommandContext(ctx, kiln, args...)
	cmd.Env = append(os.Environ(), "KILN_ACCESS_KEY_ID="+benchKey, "KILN_SECRET_ACCESS_KEY="+benchSecret)
	cmd.Stderr = os.Stderr
	down := func() {
		fmt.Fprintln(os.Stderr, "stopping the cluster (kiln cluster down) ...")
		c := exec.Command(kiln, "cluster", "down", "--dir", dir)
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		if err := c.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "kiln cluster down:", err)
		}
	}
	if b, err := cmd.Output(); err != nil {
		down() // Up stops what it started on error; a cluster.json left behind is stopped too
		return nil, nil, fmt.Errorf("kiln cluster up: %w: %s", err, b)
	}
	f, err := cluster.Load(dir)
	if err != nil {
		down()
		return nil, nil, err
	}
	return f, down, nil
}

// clusterDecisions measures slot takes through the cluster's counting
// partition leaders from two clients (as two frontends) against the
// in-process counter of kiln up, in the same run.
func clusterDecisions(ctx context.Context, f *cluster.File, d time.Duration, out io.Writer) error {
	const workers = 16
	var clients []*slots.Client
	for range 2 {
		nc, err := f.Connect()
		if err != nil {
			return err
		}
		defer nc.Close()
		c, err := slots.NewClient(slots.ClientConfig{NC: nc, Partitions: f.Partitions})
		if err != nil {
			return err
		}
		defer c.Close()
		clients = append(clients, c)
	}
	key := func(g int) counting.Key {
		return counting.Key{Account: f.AccountID, Function: "bench-decision-" + strconv.Itoa(g%4)}
	}
	across, err := slots.MeasureTakes(workers, d, func(g int) (func(), error) { return clients[g%2].Take(ctx, key(g)) })
	if err != nil {
		return fmt.Errorf("counting across frontends: %w", err)
	}
	c := counting.New(counting.Config{})
	local, err := slots.MeasureTakes(workers, d, func(g int) (func(), error) { return c.Take(ctx, key(g)) })
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\ncounting decisions (take and return a slot, %d goroutines, %s each)\n", workers, d)
	fmt.Fprintf(out, "%-34s %10s %10s %12s\n", "counter", "p50", "p99", "takes/s")
	for _, r := range []struct {
		name string
		d    slots.Decisions
	}{{"cluster (leaders, 2 frontends)", across}, {"kiln up (in process)", local}} {
		// Unrounded: an in-process take is well under a microsecond.
		fmt.Fprintf(out, "%-34s %10s %10s %12.0f\n", r.name, r.d.P50, r.d.P99, r.d.PerSec)
	}
	fmt.Fprintf(out, "%-34s %9.0fx %9.0fx %11.3fx\n", "ratio cluster/up",
		float64(across.P50)/float64(local.P50), float64(across.P99)/float64(local.P99), across.PerSec/local.PerSec)
	return nil
}

// failover kills (SIGKILL) the leader of fn's partition and invokes fn
// through c until one succeeds, reporting how long that took.
func failover(ctx context.Context, f *cluster.File, fn string, c *client, out io.Writer) error {
	st, err := f.Status(ctx, fn)
	if err != nil {
		return err
	}
	if _, err := f.Kill(st.Function.Leader); err != nil {
		return err
	}
	killed := time.Now()
	var failed int
	for deadline := killed.Add(time.Minute); ; {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.invoke(ictx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if failed++; time.Now().After(deadline) {
			return fmt.Errorf("no invoke succeeded within a minute of killing %s: %w", st.Function.Leader, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(out, "\nfailover: SIGKILL of %s (leader of partition %d): first successful invoke after %s (%d failed before)\n",
		st.Function.Leader, st.Function.Partition, round(time.Since(killed)), failed)
	return nil
}
