// Package bench measures Kiln's invoke path against a floor measured in the
// same run: a plain Go net/http echo server on loopback. Figures are medians
// and ratios, never absolute pass/fail thresholds (these machines are shared).
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// Config sizes a run. The zero value is the documented default run.
type Config struct {
	Invokes    int   // warm invokes per concurrency level; 0 means 5000
	Clients    []int // concurrency levels; nil means 1, 2, 8
	ColdStarts int   // 0 means 50
	Payload    []byte
	Sandbox    string // kiln up --sandbox; empty means its default
	Kiln       string // the kiln binary measured (kiln up); required
	// DataDir holds the benchmark Kiln's data; empty means a temporary directory.
	DataDir string
	// Peers, when set, is where other platforms are installed (go install
	// from the module proxy) to be measured beside Kiln: AWS's runtime
	// interface emulator.
	Peers string
	// Baseline, when set, is another kiln binary (an earlier build)
	// measured in the same rounds, so that a change is compared under the
	// same noise.
	Baseline string
}

// Stats summarizes one measured series.
type Stats struct {
	P50, P99   time.Duration
	Throughput float64 // per second
	// CPU is the CPU time per request of the target's processes, when the
	// target can say (see target.cpu).
	CPU cpuSplit
	// Bench is this process's CPU time per request: the clients (and the
	// runtime-only target's Runtime API servers). Busy is the share of the
	// host's CPU time that was busy during the target's turns, anyone's:
	// near 1, throughput is bound by CPU, not by waiting.
	Bench time.Duration
	Busy  float64
}

// Run starts a Kiln (cfg.Kiln up) and the floor, each as a child process,
// measures both from this process, and prints a report to out.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if cfg.Invokes == 0 {
		cfg.Invokes = 5000
	}
	if cfg.Clients == nil {
		cfg.Clients = []int{1, 2, 8}
	}
	if cfg.ColdStarts == 0 {
		cfg.ColdStarts = 50
	}
	if cfg.Payload == nil {
		cfg.Payload = []byte(echoPayload)
	}
	dir := cfg.DataDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "kiln-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	// Kiln and the floor each run in a process of their own, so both are
	// measured across the same process boundary from this client.
	s, zip, err := echoKiln(ctx, out, cfg.Kiln, dir, cfg.Sandbox, "bench-warm")
	if err != nil {
		return err
	}
	defer s.stop()

	floorURL, floorPID, stopFloor, err := startChild(ctx, []string{"floor"}, "floor: ")
	if err != nil {
		return err
	}
	defer stopFloor()
	floor := &client{url: floorURL, payload: cfg.Payload}
	kiln := signedClient(s.endpoint, "bench-warm", cfg.Payload, 1)
	bare, err := newBareRuntimes(dir, zip, cfg.Payload)
	if err != nil {
		return err
	}
	defer bare.stop()
	// The same client work as kiln's (a SigV4-signed request, each
	// signature made anew with the cached signing key, as the SDKs do),
	// answered by the floor, and then the runtime's turn.
	signedFloor := signedClient(strings.TrimSuffix(floorURL, "/"), "bench-warm", cfg.Payload, 1)
	targets := []target{floor.target("plain HTTP"), bare.target(ctx), kiln.target("kiln"), bare.withClient(ctx, signedFloor, "signed+runtime")}
	targets[0].cpu = func() cpuSplit { return treeCPU(floorPID) }
	targets[2].cpu = func() cpuSplit { return treeCPU(s.pid) }
	targets[3].cpu = func() cpuSplit { return targets[0].cpu().add(targets[1].cpu()) }
	colds := []coldTarget{{name: "kiln", kiln: s, warm: kiln}}
	if cfg.Baseline != "" {
		base, err := startKiln(ctx, cfg.Baseline, filepath.Join(dir, "baseline"), cfg.Sandbox, false)
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		defer base.stop()
		if err := base.createEcho(ctx, "bench-warm", zip, oneVCPU); err != nil {
			return err
		}
		c := signedClient(base.endpoint, "bench-warm", cfg.Payload, 1)
		t := c.target("kiln baseline")
		t.cpu = func() cpuSplit { return treeCPU(base.pid) }
		targets = append(targets, t)
		colds = append(colds, coldTarget{name: "kiln baseline", kiln: base, warm: c})
	}
	if cfg.Peers != "" {
		rie, err := installPeer(ctx, cfg.Peers, rieModule)
		if err != nil {
			return err
		}
		em, err := newEmulators(rie, dir, bare.bootstrap, cfg.Payload)
		if err != nil {
			return err
		}
		defer em.stop()
		targets = append(targets, em.target(ctx))
		fmt.Fprintln(out, "peers: aws-lambda-rie (one per client; it runs one invoke at a time). OpenFaaS's of-watchdog is not measured: the module proxy refuses github.com/openfaas/of-watchdog (403)")
	}

	// Each Kiln's first invoke: the first cold start after it started.
	for i := range colds {
		if colds[i].first, err = colds[i].exchange(ctx, colds[i].warm); err != nil {
			return fmt.Errorf("%s: first invoke: %w", colds[i].name, err)
		}
	}

	fmt.Fprintf(out, "\nwarm invokes: %d per level in %d interleaved rounds, payload %d bytes\n", cfg.Invokes, rounds, len(cfg.Payload))
	fmt.Fprintln(out, "ceiling: a floor exchange + the runtime's turn (p50s added), the runtimes' own throughput (no caller; the next event queued before the runtime asks): optimistic")
	fmt.Fprintln(out, "signed ceiling: signed+runtime, measured: kiln's client's SigV4-signed request answered by the floor, then the runtime's turn")
	err = measureLevels(ctx, out, targets, cfg.Clients, cfg.Invokes, func(c int, st []Stats) {
		f, r, k, sr := st[0], st[1], st[2], st[3]
		printRatio(out, c, "ratio", k, f)
		// No platform can beat one floor exchange plus the runtime's own
		// turn, nor run invokes faster than the runtimes alone: optimistic,
		// as that throughput pays for no caller at all.
		fmt.Fprintf(out, "%-8d %-14s %9.2fx %10s %11.2fx\n", c, "ceiling", float64(f.P50+r.P50)/float64(f.P50), "", r.Throughput/f.Throughput)
		// The same bound with the caller's work kiln's callers do (a signed
		// request and its exchange), measured end to end.
		printRatio(out, c, "signed ceiling", sr, f)
		fmt.Fprintf(out, "%-8d kiln against the ceiling: p50 %.2fx, throughput %.2fx; against the signed ceiling: p50 %.2fx, throughput %.2fx\n",
			c, float64(k.P50)/float64(f.P50+r.P50), k.Throughput/r.Throughput, float64(k.P50)/float64(sr.P50), k.Throughput/sr.Throughput)
		fmt.Fprintf(out, "%-8d cpu per invoke (times on a CPU): kiln's processes %s (%.1f), its runtime %s (%.1f); runtime only %s (%.1f); signed+runtime's runtime %s (%.1f); plain HTTP server %s (%.1f)\n",
			c, round(k.CPU.Platform), k.CPU.PlatformRuns, round(k.CPU.Runtime), k.CPU.RuntimeRuns, round(r.CPU.Runtime), r.CPU.RuntimeRuns,
			round(sr.CPU.Runtime), sr.CPU.RuntimeRuns, round(f.CPU.Platform), f.CPU.PlatformRuns)
		fmt.Fprintf(out, "%-8d bench process per invoke (clients; runtime only: its Runtime API servers): kiln %s, runtime only %s, signed+runtime %s, plain HTTP %s; host CPU busy: kiln %.0f%%, runtime only %.0f%%, signed+runtime %.0f%%, plain HTTP %.0f%%\n",
			c, round(k.Bench), round(r.Bench), round(sr.Bench), round(f.Bench), 100*k.Busy, 100*r.Busy, 100*sr.Busy, 100*f.Busy)
		for i, p := range st[4:] {
			name := targets[4+i].name
			printRatio(out, c, name+"/kiln", p, k)
			fmt.Fprintf(out, "%-8d cpu per invoke: %s %s (%.1f), its runtime %s (%.1f)\n", c, name, round(p.CPU.Platform), p.CPU.PlatformRuns, round(p.CPU.Runtime), p.CPU.RuntimeRuns)
		}
	})
	if err != nil {
		return err
	}

	return coldStarts(ctx, out, colds, bare, cfg.ColdStarts, zip, cfg.Payload)
}

// measureLevels measures the targets at each number of clients, n
// invokes each, printing a row per target and then what ratios prints.
func measureLevels(ctx context.Context, out io.Writer, targets []target, levels []int, n int, ratios func(c int, st []Stats)) error {
	fmt.Fprintf(out, "%-8s %-14s %10s %10s %12s\n", "clients", "target", "p50", "p99", "invokes/s")
	for _, c := range levels {
		fmt.Fprintf(os.Stderr, "measuring %d clients ...\n", c)
		st, err := measure(ctx, targets, c, n)
		if err != nil {
			return err
		}
		for i, t := range targets {
			fmt.Fprintf(out, "%-8d %-14s %10s %10s %12.0f\n", c, t.name, round(st[i].P50), round(st[i].P99), st[i].Throughput)
		}
		ratios(c, st)
	}
	return nil
}

// printRatio prints a's figures over base's.
func printRatio(out io.Writer, c int, name string, a, base Stats) {
	fmt.Fprintf(out, "%-8d %-14s %9.2fx %9.2fx %11.2fx\n", c, name, float64(a.P50)/float64(base.P50), float64(a.P99)/float64(base.P99), a.Throughput/base.Throughput)
}

func round(d time.Duration) string { return d.Round(time.Microsecond).String() }

const echoPayload = `{"message":"hello from kiln-bench"}`

// upWithEcho makes a temporary directory (under prefix), builds the echo
// function's package and starts kiln up in the directory; done stops it
// and removes the directory.
func upWithEcho(ctx context.Context, kiln, sandbox, prefix string, out io.Writer) (dir string, zip []byte, s *kilnProcess, done func(), err error) {
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", nil, nil, nil, err
	}
	if zip, err = echoZip(out); err == nil {
		fmt.Fprintln(out, "starting kiln up ...")
		s, err = startKiln(ctx, kiln, filepath.Join(dir, "up"), sandbox, false)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, nil, nil, err
	}
	return dir, zip, s, func() { s.stop(); os.RemoveAll(dir) }, nil
}

// echoZip builds the deployment package of the aws-lambda-go echo
// function, saying so on out.
func echoZip(out io.Writer) ([]byte, error) {
	fmt.Fprintln(out, "building the aws-lambda-go function ...")
	bootstrap, err := fntest.BuildGo(fntest.EchoGo)
	if err != nil {
		return nil, err
	}
	return fntest.ZipFiles(map[string][]byte{"bootstrap": bootstrap})
}

// client sends one kind of request, SigV4-signed when signer is set; an
// Event invoke when event is set.
type client struct {
	url     string
	payload []byte
	signer  *v4.Signer
	creds   aws.Credentials
	region  string
	event   bool
	http    http.Client
}

func (c *client) invoke(ctx context.Context) (time.Duration, error) {
	d, _, err := c.exchange(ctx)
	return d, err
}

// exchange makes one request and returns its latency and the response's
// header.
func (c *client) exchange(ctx context.Context) (time.Duration, http.Header, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	want := http.StatusOK
	if c.event {
		req.Header.Set("X-Amz-Invocation-Type", "Event")
		want = http.StatusAccepted
	}
	if c.signer != nil {
		sum := sha256.Sum256(c.payload)
		if err := c.signer.SignHTTP(ctx, c.creds, req, hex.EncodeToString(sum[:]), "lambda", c.region, start); err != nil {
			return 0, nil, err
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want || resp.Header.Get("X-Amz-Function-Error") != "" {
		return 0, nil, fmt.Errorf("invoke: %s: %s", resp.Status, body)
	}
	return time.Since(start), resp.Header, nil
}

// target is one measured series: prepare readies it for `clients`
// concurrent callers, call makes one request as caller i and returns its
// latency; cpu, when set, reads the CPU time its processes spent so far.
type target struct {
	name    string
	prepare func(clients int) error
	call    func(ctx context.Context, i int) (time.Duration, error)
	cpu     func() cpuSplit
}

func (c *client) target(name string) target {
	return target{name: name,
		prepare: func(clients int) error {
			c.http.Transport = &http.Transport{MaxIdleConnsPerHost: clients}
			return nil
		},
		call: func(ctx context.Context, _ int) (time.Duration, error) { return c.invoke(ctx) }}
}

// rounds is how many turns the targets take at each level: interleaving
// them exposes each to the same noise from the machine's neighbours, so
// their ratios hold even when absolute figures drift.
const rounds = 10

// measure runs n requests of each target over `clients` concurrent callers,
// in rounds taken in turn, after a warm-up that lets Kiln create one
// environment per caller.
func measure(ctx context.Context, targets []target, clients, n int) ([]Stats, error) {
	run := func(t target, per int) ([]time.Duration, time.Duration, error) {
		var mu sync.Mutex
		var all []time.Duration
		var firstErr error
		var wg sync.WaitGroup
		start := time.Now()
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := make([]time.Duration, 0, per)
				for range per {
					d, err := t.call(ctx, i)
					if err != nil {
						mu.Lock()
						firstErr = fmt.Errorf("%s: %w", t.name, err)
						mu.Unlock()
						return
					}
					local = append(local, d)
				}
				mu.Lock()
				all = append(all, local...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return all, time.Since(start), firstErr
	}
	all := make([][]time.Duration, len(targets))
	elapsed := make([]time.Duration, len(targets))
	cpu := make([]cpuSplit, len(targets))
	self := make([]time.Duration, len(targets))
	busy, idle := make([]int64, len(targets)), make([]int64, len(targets))
	sample := func(t target) cpuSplit {
		if t.cpu == nil {
			return cpuSplit{}
		}
		return t.cpu()
	}
	for _, t := range targets {
		if err := t.prepare(clients); err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		if _, _, err := run(t, max(20, n/20)); err != nil {
			return nil, err
		}
	}
	for r := range rounds {
		fmt.Fprintf(os.Stderr, "  round %d/%d\n", r+1, rounds)
		for i, t := range targets {
			before, selfBefore := sample(t), processCPU(os.Getpid())
			busyBefore, idleBefore := hostCPU()
			ds, d, err := run(t, max(1, n/rounds/clients))
			if err != nil {
				return nil, err
			}
			cpu[i] = cpu[i].add(sample(t).sub(before))
			self[i] += processCPU(os.Getpid()) - selfBefore
			b, id := hostCPU()
			busy[i], idle[i] = busy[i]+b-busyBefore, idle[i]+id-idleBefore
			all[i] = append(all[i], ds...)
			elapsed[i] += d
		}
	}
	st := make([]Stats, len(targets))
	for i := range targets {
		st[i] = summarize(all[i], elapsed[i])
		st[i].CPU = cpu[i].per(len(all[i]))
		st[i].Bench = self[i] / time.Duration(len(all[i]))
		if busy[i]+idle[i] > 0 {
			st[i].Busy = float64(busy[i]) / float64(busy[i]+idle[i])
		}
	}
	return st, nil
}

func summarize(ds []time.Duration, elapsed time.Duration) Stats {
	slices.Sort(ds)
	s := Stats{P50: ds[len(ds)/2], P99: ds[min(len(ds)-1, len(ds)*99/100)]}
	if elapsed > 0 {
		s.Throughput = float64(len(ds)) / elapsed.Seconds()
	}
	return s
}

// ServeFloor serves a plain echo handler on a free loopback port and prints
// "floor: URL": the least an HTTP exchange of the same payload costs here.
func ServeFloor() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("floor: http://%s/\n", ln.Addr())
	return http.Serve(ln, http.HandlerFunc(floorEcho))
}

// floorEcho answers with the request's body, and does nothing else.
func floorEcho(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

type kilnProcess struct {
	endpoint string
	natsURL  string // with startKiln's withNATS
	lambda   *lambda.Client
	stop     func()
	pid      int // kiln up's, when this process started it
}

const (
	benchKey    = "AKIAKILNBENCHMARK000"
	benchSecret = "kiln-bench-secret-key"
	benchRegion = "us-east-1"
)

// startKiln runs `kiln up` (the binary kiln) on dir and a free port, with
// the isolation backend sandbox (empty: its default), withNATS NATS on a
// free port for clients outside it, and upArgs.
func startKiln(ctx context.Context, kiln, dir, sandbox string, withNATS bool, upArgs ...string) (*kilnProcess, error) {
	os.Setenv("KILN_ACCESS_KEY_ID", benchKey)
	os.Setenv("KILN_SECRET_ACCESS_KEY", benchSecret)
	args := []string{"up", "--data", dir, "--listen", "127.0.0.1:0", "--metrics-listen", ""}
	prefixes := []string{"  endpoint:"}
	if withNATS {
		args = append(args, "--nats-listen", "127.0.0.1:0")
		prefixes = append(prefixes, "  NATS (Kiln queues):")
	}
	if sandbox != "" {
		args = append(args, "--sandbox", sandbox)
	}
	args = append(args, upArgs...)
	cmd, found, err := startChildLines(ctx, kiln, args, prefixes...)
	if err != nil {
		return nil, err
	}
	k := atEndpoint(found[0])
	k.pid = cmd.Process.Pid
	k.stop = func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	if withNATS {
		k.natsURL = found[1]
	}
	return k, nil
}

// echoKiln starts kiln up (the binary kiln) on dir with the echo function
// deployed as name (one vCPU), and returns it and the function's zip.
func echoKiln(ctx context.Context, out io.Writer, kiln, dir, sandbox, name string) (*kilnProcess, []byte, error) {
	zip, err := echoZip(out)
	if err != nil {
		return nil, nil, err
	}
	s, err := startKiln(ctx, kiln, dir, sandbox, false)
	if err != nil {
		return nil, nil, err
	}
	if err := s.createEcho(ctx, name, zip, oneVCPU); err != nil {
		s.stop()
		return nil, nil, err
	}
	return s, zip, nil
}

// atEndpoint is a Kiln API at endpoint, reached with the bench's keys.
func atEndpoint(endpoint string) *kilnProcess {
	return &kilnProcess{endpoint: endpoint, stop: func() {},
		lambda: lambda.New(lambda.Options{Region: benchRegion, BaseEndpoint: aws.String(endpoint),
			Credentials: credentials.NewStaticCredentialsProvider(benchKey, benchSecret, "")})}
}

// oneVCPU is the memory size at which Lambda gives a function one full vCPU.
const oneVCPU = 1769

// createEcho deploys the echo function as name with memory MB (and the
// CPU share that goes with it).
func (k *kilnProcess) createEcho(ctx context.Context, name string, zip []byte, memory int32) error {
	_, err := k.lambda.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(name),
		Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Role: aws.String(fntest.Role),
		Code: &types.FunctionCode{ZipFile: zip}, MemorySize: aws.Int32(memory)})
	if err != nil {
		return err
	}
	// A cluster may take a moment to make a new function invocable.
	return lambda.NewFunctionActiveV2Waiter(k.lambda).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)}, 2*time.Minute)
}

// signedClient invokes function on the Kiln at endpoint with the bench's
// keys, over up to conns connections.
func signedClient(endpoint, function string, payload []byte, conns int) *client {
	return &client{url: endpoint + "/2015-03-31/functions/" + function + "/invocations", payload: payload,
		signer: v4.NewSigner(), region: benchRegion,
		creds: aws.Credentials{AccessKeyID: benchKey, SecretAccessKey: benchSecret},
		http:  http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}}}
}

// startChild runs this binary with args and waits for a stdout line starting
// with prefix; the rest of that line is returned, with the child's pid.
func startChild(ctx context.Context, args []string, prefix string) (string, int, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd, found, err := startChildLines(ctx, self, args, prefix)
	if err != nil {
		return "", 0, nil, err
	}
	return found[0], cmd.Process.Pid, func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }, nil
}

// startChildLines runs the binary path with args and waits for a stdout
// line starting with each prefix, in order; it returns the rest of each line.
func startChildLines(ctx context.Context, path string, args []string, prefixes ...string) (*exec.Cmd, []string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stderr = os.Stderr
	// If the benchmark dies, its children stop too. They are stopped with
	// SIGTERM (kiln up shuts down cleanly on it): a background shell starts
	// its jobs ignoring SIGINT, and children inherit that.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	var found []string
	sc := bufio.NewScanner(out)
	for len(found) < len(prefixes) && sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefixes[len(found)]); ok {
			found = append(found, strings.TrimSpace(rest))
		}
	}
	if len(found) < len(prefixes) {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		return nil, nil, fmt.Errorf("%s %v: exited before printing %q", path, args, prefixes[len(found)])
	}
	go io.Copy(io.Discard, out)
	return cmd, found, nil
}
