// Package worker is the server in serverless: it creates execution
// environments through an isolation backend (Sandbox), hands each invoke to
// the environment's agent, enforces the function's timeout, and keeps the
// invoke's log.
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/agentproto"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/kiln-dev/kiln/internal/runtimeapi"
	"github.com/kiln-dev/kiln/internal/runtimes"
)

// CodeSource gives the directory holding a function's unpacked code.
type CodeSource interface {
	Dir(ctx context.Context, codeSha256 string) (string, error)
}

// LayerSource is a CodeSource that also gives a function's layers (their
// zips' digests, in order) merged into one directory, its /opt.
type LayerSource interface {
	Layers(ctx context.Context, codeSha256s []string) (string, error)
}

// Config configures a worker. Code is required; other zero values work.
type Config struct {
	ID         string
	Region     string
	RuntimeDir string // where runtimes.Install put the bootstraps
	Code       CodeSource
	// Images presents image functions' code; nil runs zip functions only.
	Images  ImageSource
	Sandbox Sandbox // zero: ProcessSandbox
	// Logs receives every log line; nil keeps only each invoke's tail.
	Logs logline.Sink
	// LogRate and LogBurst bound, in bytes per second and bytes at once,
	// what a function's environments on this worker send to Logs (their
	// platform lines pass); lines over the limit are dropped and counted
	// in the invoke's REPORT and LogDropped. Zero means DefaultLogRate and
	// DefaultLogBurst; a negative LogRate means no limit.
	LogRate, LogBurst int64
	// InitTimeout bounds the init phase; zero means Lambda's 10 s.
	InitTimeout time.Duration
	// API, when set, is Kiln's API as functions reach it: each environment
	// gets a socket inside its sandbox (AWS_ENDPOINT_URL) that this worker
	// serves with API, and nothing else of Kiln. Credentials gives each
	// environment its temporary credentials, as environment variables
	// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
	API         http.Handler
	Credentials func(account, function string) []string
	Logger      *slog.Logger
}

// Worker runs execution environments.
type Worker struct {
	cfg        Config
	seq        atomic.Uint64
	logDropped atomic.Uint64
	mu         sync.Mutex
	envs       map[string]*env
	logLimits  map[string]*logLimit // account/function → its log limit here
}

// New returns a worker.
func New(cfg Config) *Worker {
	if cfg.Sandbox == nil {
		cfg.Sandbox = ProcessSandbox{}
	}
	if cfg.InitTimeout == 0 {
		cfg.InitTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ID == "" {
		cfg.ID = "worker-1"
	}
	if cfg.LogRate == 0 {
		cfg.LogRate = DefaultLogRate
	}
	if cfg.LogBurst <= 0 {
		cfg.LogBurst = DefaultLogBurst
	}
	return &Worker{cfg: cfg, envs: map[string]*env{}, logLimits: map[string]*logLimit{}}
}

// LogDropped is how many lines of functions' output this worker dropped
// because a function exceeded its log rate limit.
func (w *Worker) LogDropped() uint64 { return w.logDropped.Load() }

// ID names the worker to placement.
func (w *Worker) ID() string { return w.cfg.ID }

// Create starts an execution environment and waits until its runtime is
// initialized (it asked for its first event).
func (w *Worker) Create(ctx context.Context, spec invoke.EnvSpec) (*invoke.EnvInfo, error) {
	begunMono := agentproto.Monotonic() // the phases' clock is the agent's too
	fn := spec.Function
	var (
		sb                    SandboxSpec
		rt                    runtimes.Runtime
		taskRoot, runtimeRoot string
		imageEnv              []string
		unmount               = func() {}
		err                   error
	)
	if fn.PackageType == "Image" {
		if sb, imageEnv, unmount, err = w.image(ctx, &spec); err != nil {
			return nil, err
		}
		taskRoot, runtimeRoot = "/var/task", "/var/runtime"
	} else {
		if rt, err = runtimes.Lookup(fn.Runtime); err != nil {
			return nil, err
		}
		if sb.CodeDir, err = w.cfg.Code.Dir(ctx, fn.CodeSha256); err != nil {
			return nil, fmt.Errorf("code of %s: %w", fn.FunctionName, err)
		}
		taskRoot, runtimeRoot = w.cfg.Sandbox.Layout(sb.CodeDir, w.cfg.RuntimeDir)
		sb.Argv, sb.RuntimeDir = rt.Command(runtimeRoot, taskRoot), w.cfg.RuntimeDir
		if sb.OptDir, err = w.layers(ctx, fn.Layers); err != nil {
			return nil, fmt.Errorf("layers of %s: %w", fn.FunctionName, err)
		}
	}
	id := fmt.Sprintf("%s-%d", w.cfg.ID, w.seq.Add(1))

	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		unmount()
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "agent"), os.NewFile(uintptr(pair[1]), "worker")
	e := &env{id: id, spec: spec, conn: agentproto.NewConn(ours), sock: ours, dead: make(chan struct{}),
		startedCh: make(chan struct{}), unmount: unmount}
	stream := logStreamName(fn.Version, id)
	limit, releaseLimit := w.logLimitOf(spec.Account, fn.FunctionName)
	e.releaseLimit = releaseLimit
	e.log.init(w.cfg.Logs, spec.Account, logGroupName(fn.FunctionName), stream, limit, &w.logDropped)
	started := time.Now()
	sb.ID, sb.Conn = id, theirs
	sb.Env = mergeEnv(w.runtimeEnv(spec, rt, taskRoot, runtimeRoot, w.optRoot(sb.OptDir), stream), imageEnv)
	sb.KilnAPI = w.cfg.API != nil
	sb.MemoryMB, sb.TmpMB = fn.MemorySize, ephemeralMB(fn)
	proc, err := w.cfg.Sandbox.Start(ctx, sb)
	theirs.Close()
	if err != nil {
		ours.Close()
		unmount()
		releaseLimit()
		return nil, err
	}
	e.proc = proc
	go func() {
		proc.Wait()
		// The agent is gone: its last frames (init error, exit) are still
		// to be read; readAgent ends at EOF. Close only if a descriptor the
		// agent leaked keeps the socket open.
		select {
		case <-e.dead:
		case <-time.After(time.Second):
		}
		e.sock.Close()
	}()

	timer := time.NewTimer(w.cfg.InitTimeout)
	defer timer.Stop()
	fail := func(ie *invoke.InitError) (*invoke.EnvInfo, error) {
		e.mu.Lock()
		ie.LogTail = e.log.tail()
		e.mu.Unlock()
		e.destroy()
		return nil, ie
	}
	timedOut := func() (*invoke.EnvInfo, error) {
		return fail(&invoke.InitError{ErrorType: "Runtime.InitTimeout", Document: runtimeapi.ErrorDoc("Runtime.InitTimeout",
			fmt.Sprintf("INIT_REPORT Init Duration: %.2f ms Phase: init Status: timeout", float64(w.cfg.InitTimeout.Microseconds())/1000))})
	}
	if err := e.takeHandover(ctx, timer.C, w.cfg.API); err != nil {
		if errors.Is(err, errInitTimeout) {
			return timedOut()
		}
		e.destroy()
		return nil, err
	}
	handedOver := agentproto.Monotonic()
	select {
	case <-e.api.Ready():
	case <-e.dead:
	case <-timer.C:
		return timedOut()
	case <-ctx.Done():
		e.destroy()
		return nil, ctx.Err()
	}
	ready, readyMono := time.Now(), agentproto.Monotonic()
	e.initDuration = ready.Sub(started)
	if ie := e.api.InitError(); ie != nil {
		return fail(&invoke.InitError{ErrorType: ie.ErrorType, Document: ie.Payload})
	}
	select {
	case <-e.dead:
		ie := e.initErr
		if ie == nil {
			typ := e.exitError()
			ie = &invoke.InitError{ErrorType: typ, Document: runtimeapi.ErrorDoc(typ,
				"RequestId: init Error: Runtime exited with error: "+e.exitText())}
		}
		return fail(ie)
	default:
	}
	if n, ok := proc.(InitNotifier); ok {
		n.InitDone()
	}
	w.mu.Lock()
	w.envs[id] = e
	w.mu.Unlock()
	phases := e.phases(begunMono, handedOver, readyMono)
	if a, ok := proc.(AgentWaiter); ok {
		phases.Pool = min(a.AgentWait(), phases.Sandbox) // a part of the sandbox phase, told apart
		phases.Sandbox -= phases.Pool
	}
	return &invoke.EnvInfo{ID: id, InitDuration: e.initDuration, Phases: phases}, nil
}

var errInitTimeout = errors.New("init timed out")

// startedWait bounds the wait for the agent's word that the runtime was
// exec'd, sent right after the exec: a runtime can ask for its first event
// before the worker reads it.
const startedWait = 100 * time.Millisecond

// phases splits a cold start that began at begun, whose agent handed over
// at handedOver and whose runtime was ready at ready (CLOCK_MONOTONIC ns),
// with the agent's word of when it started the runtime.
func (e *env) phases(begun, handedOver, ready int64) invoke.ColdStart {
	select {
	case <-e.startedCh:
	case <-e.dead:
	case <-time.After(startedWait):
	}
	select {
	case <-e.startedCh:
		return splitColdStart(begun, handedOver, ready, &e.started)
	default:
		return splitColdStart(begun, handedOver, ready, nil)
	}
}

// splitColdStart is the sandbox phase until the agent began starting the
// function's processes, runtime start until the runtime's exec was done,
// and init until its first /next: the runtime's own start-up and the
// function's init code, one process (aws-lambda-go runs the function's init
// before it asks for an event; Kiln sees no boundary inside it). Without
// the agent's times, or with times out of order, the handover ends the
// sandbox phase and the rest is init.
func splitColdStart(begun, handedOver, ready int64, st *agentproto.Started) invoke.ColdStart {
	if st == nil || begun > st.Begun || st.Begun > st.Exec || st.Exec > ready {
		return invoke.ColdStart{Sandbox: time.Duration(handedOver - begun), Init: time.Duration(ready - handedOver)}
	}
	return invoke.ColdStart{Sandbox: time.Duration(st.Begun - begun), Runtime: time.Duration(st.Exec - st.Begun),
		Init: time.Duration(ready - st.Exec)}
}

// takeHandover receives the agent's Runtime API listener and log pipe and
// starts serving them, and Kiln's API (with kilnAPI) on its listener.
func (e *env) takeHandover(ctx context.Context, timeout <-chan time.Time, kilnAPI http.Handler) error {
	type handover struct {
		agentproto.Received
		err error
	}
	got := make(chan handover, 1)
	go func() {
		h, err := agentproto.ReceiveHandover(int(e.sock.Fd()))
		got <- handover{h, err}
	}()
	var h handover
	select {
	case h = <-got:
	case <-timeout:
		return errInitTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
	if h.err != nil {
		return fmt.Errorf("agent handover: %w", h.err)
	}
	if h.APIListener != nil {
		err := e.serveKilnAPI(h.APIListener, kilnAPI)
		h.APIListener.Close()
		if err != nil {
			h.Listener.Close()
			h.Logs.Close()
			return err
		}
	}
	ln, err := agentproto.Listener(h.Handover, h.Listener) // the listener, or the agent's relay when it serves extensions
	h.Listener.Close()
	if err != nil {
		h.Logs.Close()
		return fmt.Errorf("runtime API listener: %w", err)
	}
	if e.logs, err = newLogPipe(h.Logs, e.output); err != nil {
		ln.Close()
		return err
	}
	e.api = runtimeapi.Serve(ln, runtimeapi.Config{Flush: func() { e.logs.flush() }})
	go e.readAgent()
	return nil
}

// serveKilnAPI serves Kiln's API on the environment's listener f until the
// environment goes.
func (e *env) serveKilnAPI(f *os.File, h http.Handler) error {
	if h == nil {
		return errors.New("the agent opened a Kiln API listener that was not asked for")
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return fmt.Errorf("Kiln API listener: %w", err)
	}
	e.kilnAPI = &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // a function hanging up is no news
	go e.kilnAPI.Serve(ln)
	return nil
}

// output takes a chunk of the runtime's stdout/stderr.
func (e *env) output(p []byte) {
	e.mu.Lock()
	e.log.write(p)
	e.mu.Unlock()
}

func ephemeralMB(fn api.FunctionConfiguration) int {
	if fn.EphemeralStorage != nil && fn.EphemeralStorage.Size > 0 {
		return fn.EphemeralStorage.Size
	}
	return 512
}

// runtimeEnv is the environment Lambda gives a function, with the
// function's own variables first so that reserved names win over them.
func (w *Worker) runtimeEnv(spec invoke.EnvSpec, rt runtimes.Runtime, taskRoot, runtimeRoot, optRoot, logStream string) []string {
	fn := spec.Function
	env := []string{}
	if fn.Environment != nil {
		for k, v := range fn.Environment.Variables {
			env = append(env, k+"="+v)
		}
	}
	// Where the runtime finds layers' libraries, as Lambda sets it (a
	// function's own value wins, as it does there).
	if name, value := layerPath(rt.Name, taskRoot, runtimeRoot, optRoot); name != "" && (fn.Environment == nil || fn.Environment.Variables[name] == "") {
		env = append(env, name+"="+value)
	}
	initType := spec.InitType
	if initType == "" {
		initType = "on-demand"
	}
	env = append(env,
		"PATH=/usr/local/bin:/usr/bin:/bin:"+optRoot+"/bin",
		"LANG=en_US.UTF-8",
		"TZ=:UTC",
		"LD_LIBRARY_PATH=/lib64:/usr/lib64:"+runtimeRoot+":"+runtimeRoot+"/lib:"+taskRoot+":"+taskRoot+"/lib:"+optRoot+"/lib",
		"_HANDLER="+fn.Handler,
		"LAMBDA_TASK_ROOT="+taskRoot,
		"LAMBDA_RUNTIME_DIR="+runtimeRoot,
		"AWS_REGION="+w.cfg.Region,
		"AWS_DEFAULT_REGION="+w.cfg.Region,
		"AWS_LAMBDA_FUNCTION_NAME="+fn.FunctionName,
		"AWS_LAMBDA_FUNCTION_VERSION="+fn.Version,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE="+strconv.Itoa(fn.MemorySize),
		"AWS_LAMBDA_LOG_GROUP_NAME="+logGroupName(fn.FunctionName),
		"AWS_LAMBDA_LOG_STREAM_NAME="+logStream,
		"AWS_LAMBDA_INITIALIZATION_TYPE="+initType,
	)
	if rt.ExecutionEnv != "" {
		env = append(env, "AWS_EXECUTION_ENV="+rt.ExecutionEnv)
	}
	if w.cfg.Credentials != nil {
		env = append(env, w.cfg.Credentials(spec.Account, fn.FunctionName)...)
	}
	return env
}

// layers merges the function's layers into its /opt; "" when it has none.
func (w *Worker) layers(ctx context.Context, layers []api.Layer) (string, error) {
	if len(layers) == 0 {
		return "", nil
	}
	src, ok := w.cfg.Code.(LayerSource)
	if !ok {
		return "", errors.New("this worker's code source has no layers")
	}
	shas := make([]string, len(layers))
	for i, l := range layers {
		shas[i] = l.KilnCodeSha256
	}
	return src.Layers(ctx, shas)
}

// optRoot is where the runtime sees the layers: /opt in a sandbox, the
// host directory itself under the process backend (which shows the host's
// paths as they are).
func (w *Worker) optRoot(optDir string) string {
	if _, ok := w.cfg.Sandbox.(ProcessSandbox); ok && optDir != "" {
		return optDir
	}
	return "/opt"
}

// layerPath is the search path variable Lambda's runtime sets for layers'
// libraries: PYTHONPATH (/opt/python/lib/pythonX.Y/site-packages, then
// /opt/python, which put them after the task root in sys.path as there),
// NODE_PATH (/opt/nodejs/nodeNN/node_modules, /opt/nodejs/node_modules,
// the runtime's, then the task root); "" for other runtimes.
func layerPath(runtime, taskRoot, runtimeRoot, optRoot string) (name, value string) {
	switch {
	case strings.HasPrefix(runtime, "python"):
		return "PYTHONPATH", optRoot + "/python/lib/" + runtime + "/site-packages:" + optRoot + "/python"
	case strings.HasPrefix(runtime, "nodejs"):
		major := strings.TrimSuffix(strings.TrimPrefix(runtime, "nodejs"), ".x")
		return "NODE_PATH", strings.Join([]string{optRoot + "/nodejs/node" + major + "/node_modules", optRoot + "/nodejs/node_modules",
			runtimeRoot + "/node_modules", runtimeRoot, taskRoot}, ":")
	}
	return "", ""
}

func logGroupName(function string) string { return "/aws/lambda/" + function }

// logStreamName follows Lambda's "YYYY/MM/DD/[VERSION]id" form.
func logStreamName(version, envID string) string {
	return time.Now().UTC().Format("2006/01/02") + "/[" + version + "]" + envID
}

// Invoke runs one invocation in environment envID. It does not give up when
// ctx ends (a caller that hangs up does not stop a running function, as in
// Lambda); the function's timeout bounds it.
func (w *Worker) Invoke(ctx context.Context, envID string, inv *invoke.Invocation) (*invoke.Result, error) {
	w.mu.Lock()
	e := w.envs[envID]
	w.mu.Unlock()
	if e == nil {
		return nil, invoke.ErrNoEnv
	}
	res, err := e.invoke(inv)
	if err != nil || !res.Reusable {
		w.forget(envID)
		e.destroy()
	}
	return res, err
}

// Destroy shuts an idle environment down (gracefully, in the background)
// and frees what it holds.
func (w *Worker) Destroy(ctx context.Context, envID string) error {
	e := w.forget(envID)
	if e == nil {
		return invoke.ErrNoEnv
	}
	go e.shutdown()
	return nil
}

// Close destroys every environment.
func (w *Worker) Close() {
	w.mu.Lock()
	envs := w.envs
	w.envs = map[string]*env{}
	w.mu.Unlock()
	for _, e := range envs {
		e.destroy()
	}
	if c, ok := w.cfg.Sandbox.(io.Closer); ok {
		c.Close() // what the backend prepared ahead of time
	}
}

func (w *Worker) forget(envID string) *env {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.envs[envID]
	delete(w.envs, envID)
	return e
}

// Count is the number of live environments.
func (w *Worker) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.envs)
}

// env is one execution environment as the worker sees it.
type env struct {
	id   string
	spec invoke.EnvSpec
	conn *agentproto.Conn
	sock *os.File
	proc Process
	api  *runtimeapi.Server
	logs *logPipe
	// kilnAPI serves Kiln's API inside the environment (Config.API).
	kilnAPI *http.Server
	// unmount releases the environment's image (a no-op for zip code).
	unmount func()

	initDuration time.Duration
	initErr      *invoke.InitError // the agent could not start the runtime
	dead         chan struct{}     // closed when the agent is gone
	started      agentproto.Started
	startedCh    chan struct{} // closed when started is set (the runtime was exec'd)
	exit         agentproto.Exit
	exited       bool // exit was reported

	invokeMu     sync.Mutex // one invoke at a time; guards background
	background   bool       // the process runs at background priority
	mu           sync.Mutex // guards log and invokes
	log          logBuffer
	invokes      int
	destroyOnce  sync.Once
	releaseLimit func() // gives the function's log limit back
}

func (e *env) exitText() string {
	if e.exit.Signal != "" {
		return "signal: " + e.exit.Signal
	}
	if !e.exited {
		return "signal: killed" // the agent itself was killed (e.g. by the OOM killer) before it could report
	}
	return "exit status " + strconv.Itoa(e.exit.Code)
}

// exitError is the error type of a runtime that ended: Runtime.OutOfMemory
// when the sandbox saw the kernel kill for the memory limit, as Lambda.
func (e *env) exitError() string {
	// Only a SIGKILL can be the OOM killer's: any other end is not asked
	// about (the sandbox may wait a moment for the kernel's count).
	if r, ok := e.proc.(OOMReporter); ok && e.exitText() == "signal: killed" && r.OOMKilled() {
		return "Runtime.OutOfMemory"
	}
	return "Runtime.ExitError"
}

// readAgent takes the agent's frames until its socket closes.
func (e *env) readAgent() {
	defer close(e.dead)
	for {
		f, err := e.conn.Read()
		if err != nil {
			if e.logs != nil {
				e.logs.flush()
			}
			return
		}
		switch f.Kind {
		case agentproto.KindInitError:
			var r agentproto.Error
			f.Decode(&r)
			e.initErr = &invoke.InitError{ErrorType: r.ErrorType, Document: runtimeapi.JSONOr(f.Body, r.ErrorType)}
		case agentproto.KindExit:
			f.Decode(&e.exit)
			e.exited = true
		case agentproto.KindStarted:
			select {
			case <-e.startedCh: // once
			default:
				if f.Decode(&e.started) == nil {
					close(e.startedCh)
				}
			}
		}
	}
}

func (e *env) invoke(inv *invoke.Invocation) (*invoke.Result, error) {
	e.invokeMu.Lock()
	defer e.invokeMu.Unlock()
	select {
	case <-e.dead: // it ended while idle: the invoke has not started, another env may take it
		return nil, invoke.ErrNoEnv
	default:
	}
	if p, ok := e.proc.(Prioritizer); ok && inv.Background != e.background {
		// Best effort: a priority that cannot change costs speed, not correctness.
		if err := p.SetBackground(inv.Background); err == nil {
			e.background = inv.Background
		}
	}
	fn := &e.spec.Function
	timeout := time.Duration(fn.Timeout) * time.Second
	start := time.Now()
	e.mu.Lock()
	e.log.reset()
	e.log.writeString("START RequestId: " + inv.RequestID + " Version: " + fn.Version + "\n")
	first := e.invokes == 0
	e.invokes++
	e.mu.Unlock()

	ev := &runtimeapi.Event{
		RequestID:       inv.RequestID,
		DeadlineMs:      start.Add(timeout).UnixMilli(),
		FunctionArn:     inv.FunctionArn,
		TraceID:         inv.TraceID,
		ClientContext:   inv.ClientContext,
		CognitoIdentity: inv.CognitoIdentity,
		Payload:         inv.Payload,
	}
	var stream *begunStream
	if inv.Stream != nil {
		stream = &begunStream{Stream: inv.Stream}
		ev.Stream = stream
	}
	results, err := e.api.Invoke(ev)
	if err != nil {
		return nil, err
	}
	res := &invoke.Result{Reusable: true}
	timer := time.NewTimer(timeout)
	defer func() { res.Streamed = res.Streamed || stream != nil && stream.begun.Load() }()
	answer := func(o runtimeapi.Outcome) {
		res.Payload, res.ErrorType, res.Streamed = o.Payload, o.ErrorType, o.Streamed
		// Runtimes exit when the Runtime API refuses their response.
		res.Reusable = o.ErrorType != "Function.ResponseSizeTooLarge"
	}
	select {
	case o := <-results:
		answer(o)
	case <-e.dead:
		select {
		case o := <-results:
			// It answered, then exited: the answer was delivered before
			// the runtime was acknowledged, and it stands.
			answer(o)
			res.Reusable = false
		default:
			if e.api.LastDelivered() != inv.RequestID {
				timer.Stop()
				return nil, invoke.ErrNoEnv // it died before the invoke reached it
			}
			res.Reusable = false
			res.ErrorType = e.exitError()
			res.Payload = runtimeapi.ErrorDoc(res.ErrorType, "RequestId: "+inv.RequestID+" Error: Runtime exited with error: "+e.exitText())
		}
	case <-timer.C:
		e.api.Abandon()
		res.Reusable = false
		msg := fmt.Sprintf("Task timed out after %.2f seconds", timeout.Seconds())
		res.ErrorType = "Sandbox.Timedout"
		res.Payload = runtimeapi.ErrorDoc(res.ErrorType, "RequestId: "+inv.RequestID+" Error: "+msg)
		e.mu.Lock()
		e.log.writeString(time.Now().UTC().Format("2006-01-02T15:04:05.000Z") + " " + inv.RequestID + " " + msg + "\n")
		e.mu.Unlock()
	}
	timer.Stop()
	res.Duration = time.Since(start)
	e.mu.Lock()
	e.log.writeString(e.report(inv.RequestID, res, first))
	res.LogTail = e.log.tail()
	e.mu.Unlock()
	return res, nil
}

// begunStream notes whether a streamed response had begun when an invoke
// ended otherwise (a timeout, a crash mid-stream): its caller has then had
// a head already, and is told of the error at the stream's end.
type begunStream struct {
	invoke.Stream
	begun atomic.Bool
}

func (b *begunStream) Begin(contentType string) {
	b.begun.Store(true)
	b.Stream.Begin(contentType)
}

// report is the END and REPORT lines Lambda writes after every invoke,
// built with appends (fmt was a tenth of the worker's share of an invoke).
func (e *env) report(requestID string, res *invoke.Result, first bool) string {
	fn := &e.spec.Function
	ms := float64(res.Duration.Microseconds()) / 1000
	b := make([]byte, 0, 256)
	b = append(b, "END RequestId: "...)
	b = append(b, requestID...)
	b = append(b, "\nREPORT RequestId: "...)
	b = append(b, requestID...)
	b = append(b, "\tDuration: "...)
	b = strconv.AppendFloat(b, ms, 'f', 2, 64)
	b = append(b, " ms\tBilled Duration: "...)
	b = strconv.AppendInt(b, int64(math.Ceil(ms)), 10)
	b = append(b, " ms\tMemory Size: "...)
	b = strconv.AppendInt(b, int64(fn.MemorySize), 10)
	b = append(b, " MB\tMax Memory Used: "...)
	b = strconv.AppendInt(b, (e.proc.MaxMemoryUsed()+(1<<20)-1)>>20, 10)
	b = append(b, " MB\t"...)
	if first && e.spec.InitType != "provisioned-concurrency" {
		b = append(b, "Init Duration: "...)
		b = strconv.AppendFloat(b, float64(e.initDuration.Microseconds())/1000, 'f', 2, 64)
		b = append(b, " ms\t"...)
	}
	if n := e.log.takeDropped(); n > 0 { // over the function's log rate limit
		b = append(b, "Log Lines Dropped: "...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, '\t')
	}
	switch res.ErrorType {
	case "Sandbox.Timedout":
		b = append(b, "Status: timeout"...)
	case "Runtime.OutOfMemory", "Runtime.ExitError":
		b = append(b, "Status: error\tError Type: "...)
		b = append(b, res.ErrorType...)
	}
	return string(append(b, '\n'))
}

// destroy ends the environment now.
func (e *env) destroy() {
	e.destroyOnce.Do(func() {
		e.proc.Kill()
		e.release()
	})
}

// shutdown ends the environment gracefully: the agent gives the runtime
// SIGTERM and its grace period, then kills it.
func (e *env) shutdown() {
	e.destroyOnce.Do(func() {
		e.conn.Write(agentproto.KindShutdown, nil, nil)
		select {
		case <-e.dead:
		case <-time.After(agentproto.ShutdownGrace + time.Second):
		}
		e.proc.Kill()
		e.release()
	})
}

func (e *env) release() {
	if e.api != nil {
		e.api.Close()
	}
	if e.kilnAPI != nil {
		e.kilnAPI.Close()
	}
	e.sock.Close()
	e.unmount()
	e.releaseLimit()
}
