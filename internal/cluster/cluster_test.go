package cluster_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/kilntest/load"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/replica"
	"github.com/kiln-dev/kiln/internal/slots"
)

var ctx = context.Background()

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
	zipOnce   sync.Once
	zipBytes  []byte
)

// kilnBinary builds cmd/kiln once per test run.
func kilnBinary(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kiln-cluster-test")
		if err != nil {
			buildErr = err
			return
		}
		binary, buildErr = fntest.BuildKiln(dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func toolkitZip(t *testing.T) []byte {
	zipOnce.Do(func() { zipBytes = fntest.GoFunctionZip(t, fntest.ToolkitGo) })
	return zipBytes
}

// up starts a cluster whose every process is stopped when the test ends,
// failing or not.
func up(t *testing.T, cfg cluster.UpConfig) *cluster.File {
	t.Helper()
	cfg.Dir = t.TempDir()
	cfg.Binary = kilnBinary(t)
	f, err := cluster.Up(ctx, cfg)
	if f != nil {
		t.Cleanup(func() {
			f.Down()
			if t.Failed() {
				for _, p := range f.Procs {
					b, _ := os.ReadFile(p.Log)
					if len(b) > 3000 {
						b = b[len(b)-3000:]
					}
					t.Logf("--- %s (%s) log tail:\n%s", p.Name, p.Zone, b)
				}
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func client(f *cluster.File, frontend int) *lambda.Client {
	return lambda.New(lambda.Options{Region: f.Region, BaseEndpoint: aws.String(f.Frontends[frontend]),
		Credentials:      credentials.NewStaticCredentialsProvider(f.AccessKeyID, f.SecretAccessKey, ""),
		RetryMaxAttempts: 1})
}

func create(t *testing.T, c *lambda.Client, name string) {
	t.Helper()
	_, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(name), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Role: aws.String(fntest.Role), Code: &types.FunctionCode{ZipFile: toolkitZip(t)},
		Timeout: aws.Int32(10)})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	fntest.WaitActive(t, c, name)
}

// setTimeout gives function name a timeout of seconds, for an invoke that
// must still run after a loaded host's seconds of status polls and
// commands.
func setTimeout(t *testing.T, c *lambda.Client, name string, seconds int32) {
	t.Helper()
	if _, err := c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String(name),
		Timeout: aws.Int32(seconds)}); err != nil {
		t.Fatalf("update %s: %v", name, err)
	}
	fntest.WaitUpdated(t, c, name)
}

type outcome struct {
	cold    bool
	phases  bool // X-Kiln-Cold-Start is well formed
	err     error
	payload string
	start   time.Time
	end     time.Time
}

func invoke(c *lambda.Client, name, payload string) outcome {
	o := outcome{start: time.Now()}
	out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(name), Payload: []byte(payload), LogType: types.LogTypeTail})
	o.end = time.Now()
	if err != nil {
		o.err = err
		return o
	}
	if out.FunctionError != nil {
		o.err = fmt.Errorf("function error %s: %s", aws.ToString(out.FunctionError), out.Payload)
	}
	log, _ := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
	o.cold = strings.Contains(string(log), "Init Duration")
	_, o.phases = kilntest.ColdStart(out)
	o.payload = string(out.Payload)
	return o
}

func TestClusterInvokeAndStatus(t *testing.T) {
	f := up(t, cluster.UpConfig{})
	if len(f.Procs) != 16 { // 3 NATS, placement, 2 control planes, 3 assignment, 3 workers, 2 pollers, 2 frontends
		t.Fatalf("%d processes", len(f.Procs))
	}
	c := client(f, 0)
	create(t, c, "echo")
	o := invoke(c, "echo", `{"hello":"cluster"}`)
	if o.err != nil || o.payload != `{"hello":"cluster"}` || !o.cold || !o.phases {
		t.Fatalf("first invoke: %+v", o)
	}
	// The other frontend reaches the same warm environment.
	var lat []time.Duration
	for i := 0; i < 50; i++ {
		o = invoke(client(f, i%2), "echo", `{"n":1}`)
		if o.err != nil || o.cold || o.phases {
			t.Fatalf("warm invoke %d: %+v", i, o)
		}
		lat = append(lat, o.end.Sub(o.start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("warm invoke through the cluster (SDK client, sequential): p50 %v p90 %v", lat[len(lat)/2], lat[len(lat)*9/10])
	// The workers run the Linux sandbox by default, as kiln up: the function
	// sees its code at /var/task, in a mount namespace of its own.
	if o = invoke(c, "echo", `{"action":"env","name":"LAMBDA_TASK_ROOT"}`); o.err != nil || o.payload != `"/var/task"` {
		t.Fatalf("task root: %+v", o)
	}
	// Frontends and workers serve their metrics.
	var invokes, envs float64
	for _, p := range f.Procs {
		switch p.Role {
		case "frontend":
			invokes += gauge(p.Metrics, `kiln_invocations_total{`+acct(f)+`function="echo",outcome="success"}`)
		case "worker":
			envs += gauge(p.Metrics, "kiln_worker_environments")
		}
	}
	if invokes != 52 || envs < 1 {
		t.Fatalf("metrics: %v invokes counted by the frontends (want 52), %v environments on the workers", invokes, envs)
	}
	st, err := f.Status(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if st.Function == nil || st.Function.Leader == "" || len(st.Members) != 3 || len(st.Workers) != 3 {
		t.Fatalf("status: %+v", st)
	}
	zones := map[string]bool{}
	for _, p := range st.Partitions {
		zones[p.Zone] = true
		if len(p.Members) != 3 {
			t.Fatalf("partition %d members %v", p.Partition, p.Members)
		}
	}
	if len(zones) != 3 {
		t.Errorf("leaders in zones %v, want spread over 3", zones)
	}
}

// leaderOf returns the process name leading fn's partition.
func leaderOf(t *testing.T, f *cluster.File, fn string) (string, int) {
	st, err := f.Status(ctx, fn)
	if err != nil {
		t.Fatal(err)
	}
	return st.Function.Leader, st.Function.Partition
}

func TestKillPartitionLeaderUnderLoad(t *testing.T) {
	f := up(t, cluster.UpConfig{})
	c := client(f, 0)
	create(t, c, "steady")
	const clients = 4
	// Warm up: clients environments.
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); invoke(c, "steady", `{"action":"sleep","ms":50}`) }()
	}
	wg.Wait()
	var mu sync.Mutex
	var results []outcome
	stop := load.Repeat(clients, func(int) {
		o := invoke(c, "steady", `{"action":"sleep","ms":5}`)
		mu.Lock()
		results = append(results, o)
		mu.Unlock()
	})
	time.Sleep(2 * time.Second) // load runs a while before the kill (the scenario)
	leader, p := leaderOf(t, f, "steady")
	killedAt := time.Now()
	if _, err := f.Kill(leader); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // and through the failover
	// On a loaded host the failover may outlast that: the callers could
	// all be in invokes issued before the kill until then, and none after.
	wait.True(t, "an invoke issued after the kill served", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(results, func(o outcome) bool { return o.err == nil && o.start.After(killedAt) })
	})
	stop()
	newLeader, _ := leaderOf(t, f, "steady")
	var before, after, errs, coldBefore, coldAfter int
	var firstServed time.Duration = -1
	var window time.Duration = 2 * time.Second
	for _, o := range results {
		switch {
		case o.end.Before(killedAt):
			before++
			if o.cold {
				coldBefore++
			}
		default:
			after++
			if o.err != nil {
				errs++
				t.Logf("invoke error during failover: %v", o.err)
			}
			if o.cold {
				coldAfter++
			}
			if o.err == nil && o.start.After(killedAt) && (firstServed < 0 || o.end.Sub(killedAt) < firstServed) {
				firstServed = o.end.Sub(killedAt)
			}
		}
	}
	// Longest pause in completions around the kill.
	var ends []time.Time
	for _, o := range results {
		if o.err == nil {
			ends = append(ends, o.end)
		}
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	var gap time.Duration
	for i := 1; i < len(ends); i++ {
		if ends[i].After(killedAt.Add(-window)) && ends[i-1].Before(killedAt.Add(window)) {
			gap = max(gap, ends[i].Sub(ends[i-1]))
		}
	}
	t.Logf("killed %s (partition %d leader); new leader %s", leader, p, newLeader)
	t.Logf("first invoke issued after the kill served %v after it; longest pause in completions %v", firstServed, gap)
	t.Logf("invokes: %d before the kill (%d cold), %d after (%d cold, %d errors)", before, coldBefore, after, coldAfter, errs)
	if newLeader == leader || newLeader == "" {
		t.Fatalf("no new leader")
	}
	// The time to the first served invoke is logged, not asserted (the
	// target, 1 s, is measured by kiln-bench --only cluster): a loaded host
	// stretches it without anything being wrong.
	if firstServed < 0 {
		t.Errorf("no invoke issued after the kill was served")
	}
	if coldAfter > coldBefore {
		t.Errorf("%d cold starts after failover (baseline %d): warm environments orphaned", coldAfter, coldBefore)
	}
	if errs > 0 {
		t.Errorf("%d invoke errors during failover", errs)
	}
}

func TestKillWorkerMidInvoke(t *testing.T) {
	f := up(t, cluster.UpConfig{})
	c := client(f, 0)
	create(t, c, "slow")
	setTimeout(t, c, "slow", 120)
	if o := invoke(c, "slow", `{}`); o.err != nil {
		t.Fatal(o.err)
	}
	st, _ := f.StatusWithEnvs(ctx)
	var workerName string
	for _, m := range st.Members {
		for _, ps := range m.Partitions {
			if ps.Leading {
				for _, e := range ps.EnvList {
					workerName = e.Worker
				}
			}
		}
	}
	if workerName == "" {
		t.Fatal("no environment found")
	}
	done := make(chan outcome)
	go func() { done <- invoke(c, "slow", `{"action":"sleep","ms":100000}`) }() // ended by the kill
	wait.For(t, "the invoke is running", func() error {
		if st := envsByWorker(t, f)[workerName]["slow"]; st != "busy" {
			return fmt.Errorf("environment %q", st)
		}
		return nil
	})
	if _, err := f.Kill(workerName); err != nil {
		t.Fatal(err)
	}
	o := <-done
	t.Logf("killed %s mid-invoke; caller got: %v (after %v)", workerName, o.err, o.end.Sub(o.start))
	if o.err == nil || !strings.Contains(o.err.Error(), "failed before the function returned") {
		t.Fatalf("want a clear worker-failure error, got %+v", o)
	}
	for i := 0; i < 5; i++ {
		o := invoke(c, "slow", `{"k":1}`)
		if o.err != nil {
			t.Fatalf("invoke %d after the worker died: %v", i, o.err)
		}
	}
}

// zoneOutage warms one environment for each of n functions, kills every
// process of zone c, and reports the share of those environments still
// usable (served warm).
func zoneOutage(t *testing.T, mode replica.Mode) (usable, total, onSurvivors int) {
	f := up(t, cluster.UpConfig{Mode: mode, Workers: 6})
	c := client(f, 0) // frontend-1 is in zone a
	const n = 12
	for i := 0; i < n; i++ {
		create(t, c, fmt.Sprintf("z%d", i))
		if o := invoke(c, fmt.Sprintf("z%d", i), `{}`); o.err != nil {
			t.Fatal(o.err)
		}
	}
	st, _ := f.StatusWithEnvs(ctx)
	envWorker := map[string]string{}
	for _, m := range st.Members {
		for _, ps := range m.Partitions {
			if ps.Leading {
				for _, e := range ps.EnvList {
					envWorker[e.Key.Function] = e.Worker
				}
			}
		}
	}
	total = len(envWorker)
	for _, p := range f.Procs {
		if p.Zone == "c" {
			if _, err := f.Kill(p.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, w := range envWorker {
		if !strings.HasPrefix(w, "worker-c") {
			onSurvivors++
		}
	}
	// Leases lapse and go to the surviving zones; placement notices the
	// silent workers.
	wait.For(t, "partitions led and workers placed in the surviving zones", func() error {
		st, err := f.Status(ctx, "")
		if err != nil {
			return err
		}
		for _, p := range st.Partitions {
			if p.Leader == "" || p.Zone == "c" {
				return fmt.Errorf("partition %d led by %q in zone %q", p.Partition, p.Leader, p.Zone)
			}
		}
		for _, w := range st.Workers {
			if w.Zone == "c" && w.Healthy {
				return fmt.Errorf("placement still takes %s", w.ID)
			}
		}
		return nil
	})
	for i := 0; i < n; i++ {
		o := invoke(c, fmt.Sprintf("z%d", i), `{}`)
		if o.err != nil {
			t.Errorf("invoke z%d after the outage: %v", i, o.err)
			continue
		}
		if !o.cold {
			usable++
		}
	}
	t.Logf("%s: %d of %d warm environments usable after zone c went down (%d were on surviving workers)", mode, usable, total, onSurvivors)
	return
}

func TestZoneOutage(t *testing.T) {
	var shares = map[replica.Mode][3]int{}
	for _, mode := range []replica.Mode{replica.Replicated, replica.SingleOwner} {
		t.Run(string(mode), func(t *testing.T) {
			u, tot, surv := zoneOutage(t, mode)
			shares[mode] = [3]int{u, tot, surv}
			if mode == replica.Replicated && u != surv {
				t.Errorf("replicated: %d usable, want every one of the %d on surviving workers", u, surv)
			}
		})
	}
	r, s := shares[replica.Replicated], shares[replica.SingleOwner]
	if r[1] > 0 && s[1] > 0 {
		t.Logf("zone outage: replicated keeps %.0f%% of warm environments usable, single-owner baseline %.0f%%",
			100*float64(r[0])/float64(r[1]), 100*float64(s[0])/float64(s[1]))
	}
}

// envsByWorker lists, from the partition leaders, each worker's
// environments (function name → status).
func envsByWorker(t *testing.T, f *cluster.File) map[string]map[string]string {
	t.Helper()
	st, err := f.StatusWithEnvs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, m := range st.Members {
		for _, ps := range m.Partitions {
			if !ps.Leading {
				continue
			}
			for _, e := range ps.EnvList {
				if out[e.Worker] == nil {
					out[e.Worker] = map[string]string{}
				}
				out[e.Worker][e.Key.Function] = e.Status.String()
			}
		}
	}
	return out
}

// TestDrainWorker: `kiln cluster drain` on a worker with a running invoke
// and idle environments: the invoke finishes normally, the idle ones are
// retired at once, the busy one when its invoke ends, and nothing new is
// placed on the worker.
func TestDrainWorker(t *testing.T) {
	f := up(t, cluster.UpConfig{})
	c := client(f, 0)
	const n = 5 // over 3 workers: one holds at least 2
	for i := 0; i < n; i++ {
		create(t, c, fmt.Sprintf("d%d", i))
		setTimeout(t, c, fmt.Sprintf("d%d", i), 30)
		if o := invoke(c, fmt.Sprintf("d%d", i), `{}`); o.err != nil {
			t.Fatal(o.err)
		}
	}
	byWorker := envsByWorker(t, f)
	var target string
	for w, envs := range byWorker {
		if len(envs) > len(byWorker[target]) {
			target = w
		}
	}
	var busyFn string
	var idleFns []string
	for fn := range byWorker[target] {
		if busyFn == "" {
			busyFn = fn
		} else {
			idleFns = append(idleFns, fn)
		}
	}
	t.Logf("draining %s: %s busy, %v idle", target, busyFn, idleFns)
	running := make(chan outcome, 1)
	// Long enough that the idle environments are seen retired while it
	// runs, however loaded the host.
	go func() { running <- invoke(c, busyFn, `{"action":"sleep","ms":15000}`) }()
	wait.For(t, "the invoke is running", func() error {
		if st := envsByWorker(t, f)[target][busyFn]; st != "busy" {
			return fmt.Errorf("%s's environment %q", busyFn, st)
		}
		return nil
	})
	// Through the command, as a user would run it.
	out, err := exec.Command(kilnBinary(t), "cluster", "drain", "--dir", f.Dir, "--worker", target).CombinedOutput()
	if err != nil {
		t.Fatalf("kiln cluster drain: %v\n%s", err, out)
	}
	drainedAt := time.Now()
	// Idle environments go at once; the busy one stays while its invoke runs.
	var left map[string]string
	for end := time.Now().Add(wait.Deadline); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		left = envsByWorker(t, f)[target]
		if len(left) == 1 {
			break
		}
	}
	if len(left) != 1 || left[busyFn] != "draining" {
		t.Fatalf("on %s after the drain: %v, want only %s draining", target, left, busyFn)
	}
	t.Logf("idle environments retired %v after the drain", time.Since(drainedAt))
	// New invokes (and new environments) go elsewhere meanwhile.
	for _, fn := range idleFns {
		if o := invoke(c, fn, `{}`); o.err != nil || !o.cold {
			t.Fatalf("invoke of %s after the drain: %+v (want a cold start elsewhere)", fn, o)
		}
	}
	o := <-running
	if o.err != nil || o.cold {
		t.Fatalf("the running invoke did not finish normally: %+v", o)
	}
	t.Logf("running invoke finished %v after the drain", o.end.Sub(drainedAt))
	for end := time.Now().Add(wait.Deadline); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if left = envsByWorker(t, f)[target]; len(left) == 0 {
			break
		}
	}
	if len(left) != 0 {
		t.Fatalf("environments left on the drained worker: %v", left)
	}
	if o := invoke(c, busyFn, `{}`); o.err != nil || !o.cold {
		t.Fatalf("invoke of %s after its environment was retired: %+v", busyFn, o)
	}
	for w, envs := range envsByWorker(t, f) {
		if w == target && len(envs) > 0 {
			t.Fatalf("placed on the drained worker: %v", envs)
		}
	}
	st, _ := f.Status(ctx, "")
	for _, w := range st.Workers {
		if w.ID == target {
			if !w.Draining {
				t.Errorf("status: %s not draining", target)
			}
			// The worker itself reports no environment left.
			for end := time.Now().Add(wait.Deadline); w.Envs > 0 && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
				st, _ = f.Status(ctx, "")
				for _, x := range st.Workers {
					if x.ID == target {
						w = x
					}
				}
			}
			if w.Envs > 0 {
				t.Errorf("worker %s still has %d environments", target, w.Envs)
			}
		}
	}
}

// TestWarmLatencyClusterVsUp measures sequential warm invokes of one
// function through a cluster frontend and through `kiln up` (one
// process), in the same run, with the same client. KILN_BENCH=1 to run.
func TestWarmLatencyClusterVsUp(t *testing.T) {
	if os.Getenv("KILN_BENCH") == "" {
		t.Skip("KILN_BENCH=1 to measure")
	}
	const n = 400
	measure := func(c *lambda.Client) (p50, p99 time.Duration) {
		create(t, c, "lat")
		for i := 0; i < 50; i++ { // cold start, then warm-up
			if o := invoke(c, "lat", `{}`); o.err != nil {
				t.Fatal(o.err)
			}
		}
		lat := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			o := invoke(c, "lat", `{}`)
			if o.err != nil || o.cold {
				t.Fatalf("warm invoke %d: %+v", i, o)
			}
			lat = append(lat, o.end.Sub(o.start))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return lat[n/2], lat[n*99/100]
	}
	// kiln up, as a child process on a free loopback port.
	const key, secret = "AKIAKILNLATENCY00000", "kiln-latency-secret"
	cmd := exec.Command(kilnBinary(t), "up", "--data", t.TempDir(), "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "KILN_ACCESS_KEY_ID="+key, "KILN_SECRET_ACCESS_KEY="+secret)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "  endpoint:"); ok {
				found <- strings.TrimSpace(rest)
				io.Copy(io.Discard, out)
				return
			}
		}
		close(found)
	}()
	var endpoint string
	select {
	case endpoint = <-found:
	case <-time.After(60 * time.Second):
	}
	if endpoint == "" {
		t.Fatal("kiln up printed no endpoint")
	}
	single := lambda.New(lambda.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(key, secret, ""), RetryMaxAttempts: 1})
	f := up(t, cluster.UpConfig{})
	upP50, upP99 := measure(single)
	clP50, clP99 := measure(client(f, 0))
	t.Logf("warm invoke, sequential, SDK client, %d invokes each:", n)
	t.Logf("  kiln up:      p50 %v  p99 %v", upP50, upP99)
	t.Logf("  kiln cluster: p50 %v  p99 %v", clP50, clP99)
	t.Logf("  ratio cluster/up: p50 %.2fx  p99 %.2fx", float64(clP50)/float64(upP50), float64(clP99)/float64(upP99))
}

// throttled reports whether err is Lambda's 429 for the account limit.
func throttled(err error) bool {
	var tmr *types.TooManyRequestsException
	return errors.As(err, &tmr) && tmr.Reason == types.ThrottleReasonConcurrentInvocationLimitExceeded
}

// TestAccountLimitAcrossFrontends: two frontend processes count against
// one account limit together; a frontend killed (SIGKILL) while it holds
// the account's every slot keeps them until its lease runs out, never
// letting the other admit over the limit meanwhile, and then loses them all.
func TestAccountLimitAcrossFrontends(t *testing.T) {
	const limit = 3
	f := up(t, cluster.UpConfig{AccountConcurrency: limit})
	c0, c1 := client(f, 0), client(f, 1)
	create(t, c0, "sleepy")
	if o := invoke(c1, "sleepy", `{}`); o.err != nil {
		t.Fatal(o.err)
	}
	st, err := f.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Partitions {
		if p.Counting == "" {
			t.Fatalf("status: counting partition %d has no leader", p.Partition)
		}
	}

	// At once, through both frontends: the limit, not twice it. A slot
	// is returned without waiting, so a burst right after another may find
	// one still counted: never more than the limit, the limit on a retry.
	burst := func(n int, clients ...*lambda.Client) {
		t.Helper()
		for try := 0; ; try++ {
			var ok, refused atomic.Int64
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(c *lambda.Client) {
					defer wg.Done()
					switch o := invoke(c, "sleepy", `{"action":"sleep","ms":3000}`); {
					case o.err == nil:
						ok.Add(1)
					case throttled(o.err):
						refused.Add(1)
					default:
						t.Errorf("invoke: %v", o.err)
					}
				}(clients[i%len(clients)])
			}
			wg.Wait()
			if ok.Load() > limit || try == 3 && ok.Load() < limit {
				t.Fatalf("%d invokes at once through %d frontend(s): %d ran, %d refused; the account limit is %d",
					n, len(clients), ok.Load(), refused.Load(), limit)
			}
			if ok.Load() == limit {
				return
			}
		}
	}
	burst(8, c0, c1)

	// frontend-1 takes every slot, then is killed.
	for i := 0; i < limit; i++ {
		go func() {
			for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				if o := invoke(c0, "sleepy", `{"action":"sleep","ms":2000}`); !throttled(o.err) {
					return // ran, or frontend-1 was killed under it
				}
			}
		}()
	}
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		o := invoke(c1, "sleepy", `{}`)
		if throttled(o.err) {
			break
		}
		if o.err != nil || time.Now().After(end) {
			t.Fatalf("frontend-1's invokes never filled the account: %v", o.err)
		}
	}
	if _, err := f.Kill("frontend-1"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	refusals := 0
	for end := killed.Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		o := invoke(c1, "sleepy", `{}`)
		if o.err == nil {
			break
		}
		if !throttled(o.err) || time.Now().After(end) {
			t.Fatalf("after %d refusals: %v", refusals, o.err)
		}
		refusals++
	}
	t.Logf("frontend-1's slots came free %v after SIGKILL (lease TTL %v); %d invokes refused meanwhile",
		time.Since(killed).Round(time.Millisecond), slots.DefaultTTL, refusals)
	// All of them, and no more.
	burst(limit+1, c1)
}

// provisionedEnvs lists the provisioned environments of fn as the leader
// of its partition holds them.
func provisionedEnvs(t *testing.T, f *cluster.File, fn string) []string {
	t.Helper()
	st, err := f.StatusWithEnvs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range st.Members {
		for _, ps := range m.Partitions {
			for _, e := range ps.EnvList {
				if ps.Leading && e.Provisioned && e.Key.Function == fn {
					ids = append(ids, e.ID)
				}
			}
		}
	}
	sort.Strings(ids)
	return ids
}

// TestProvisionedAcrossLeaderFailover: provisioned concurrency in a cluster
// becomes READY, serves without cold starts, and after the partition
// leader is SIGKILLed the new leader keeps the very same environments:
// still READY, still no cold start.
func TestProvisionedAcrossLeaderFailover(t *testing.T) {
	const n = 2
	f := up(t, cluster.UpConfig{})
	c := client(f, 0)
	create(t, c, "prov")
	v, err := c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("prov")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutProvisionedConcurrencyConfig(ctx, &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("prov"),
		Qualifier: v.Version, ProvisionedConcurrentExecutions: aws.Int32(n)}); err != nil {
		t.Fatal(err)
	}
	ready := func(when string) {
		t.Helper()
		for end := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			out, err := c.GetProvisionedConcurrencyConfig(ctx, &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("prov"), Qualifier: v.Version})
			if err == nil && out.Status == types.ProvisionedConcurrencyStatusEnumReady && aws.ToInt32(out.AllocatedProvisionedConcurrentExecutions) == n {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: provisioned concurrency not READY: %+v %v", when, out, err)
			}
		}
	}
	warm := func(when string) {
		t.Helper()
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				o := invoke(client(f, i%2), "prov:"+aws.ToString(v.Version), `{"action":"sleep","ms":500}`)
				if o.err != nil || o.cold {
					t.Errorf("%s: invoke %d: cold %v, err %v", when, i, o.cold, o.err)
				}
			}(i)
		}
		wg.Wait()
	}
	ready("after PutProvisionedConcurrencyConfig")
	before := provisionedEnvs(t, f, "prov")
	if len(before) != n {
		t.Fatalf("provisioned environments %v, want %d", before, n)
	}
	warm("before the failover")

	leader, p := leaderOf(t, f, "prov")
	if _, err := f.Kill(leader); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if l, _ := leaderOf(t, f, "prov"); l != "" && l != leader {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("partition %d: no new leader after killing %s", p, leader)
		}
	}
	warm("after the failover")
	ready("after the failover")
	if after := provisionedEnvs(t, f, "prov"); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("provisioned environments before the failover %v, after %v", before, after)
	}
}
