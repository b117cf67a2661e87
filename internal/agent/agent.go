// Package agent is the in-sandbox agent: the first process of every execution
// environment. It opens the Runtime API's listening socket and the runtime's
// log pipe inside the environment, hands both to the worker over the one
// socket it inherited, starts the function's external extensions and its
// runtime, reaps every process of the environment, and reports how the
// runtime ends.
//
// The agent is off the invoke path: the worker serves the Runtime API on the
// socket the agent opened (package runtimeapi), so an invoke crosses the
// sandbox boundary once, not through a relay process. Only when the function
// has external extensions does the agent keep the listener, serve the
// Extensions API on it and relay the Runtime API to the worker, as Lambda's
// own agent coordinates the runtime and the extensions.
//
// Under the Linux backend (package sandbox) the agent is started in fresh
// user, pid, mount, net, ipc and uts namespaces; before anything else it
// builds the sandbox's root and drops its privileges (see SandboxConfig).
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/agentproto"
	"golang.org/x/sys/unix"
)

// agentMemoryLimit is the agent's heap limit (runtime/debug.SetMemoryLimit).
const agentMemoryLimit = 8 << 20

// Reexec runs the agent or the spawner, and exits, when this process was
// started as one: argv[0] agentproto.ExecName or agentproto.SpawnerName, the
// worker's and the Linux backend's re-executions of their own binary
// (/proc/self/exe), so `kiln` and test binaries alike carry the agent.
// Otherwise it returns at once. main calls it first, as does TestMain in
// the packages whose tests start execution environments.
func Reexec() {
	if len(os.Args) == 0 {
		return
	}
	switch os.Args[0] {
	case agentproto.ExecName:
		// A small footprint: one P (fewer threads), and no collection
		// until the heap reaches agentMemoryLimit. Most environments never
		// get there; one whose agent relays every request (with external
		// extensions) stays bounded, in the function's memory.
		runtime.GOMAXPROCS(1)
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(agentMemoryLimit)
		if err := Main(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "kiln-agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	case agentproto.SpawnerName:
		if err := Spawner(3); err != nil {
			fmt.Fprintln(os.Stderr, "kiln-spawner:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// Main runs the agent with argv as the runtime's command line (under the
// Linux backend, the command comes with the assignment instead).
func Main(argv []string) error {
	if s := os.Getenv(agentproto.EnvSandbox); s != "" {
		cfg, err := parseSandboxConfig(s)
		if err != nil {
			return err
		}
		return sandboxMain(cfg)
	}
	fd := 3
	if s := os.Getenv(agentproto.EnvConnFD); s != "" {
		var err error
		if fd, err = strconv.Atoi(s); err != nil {
			return fmt.Errorf("%s=%q: %w", agentproto.EnvConnFD, s, err)
		}
	}
	unix.CloseOnExec(fd) // the runtime must not inherit the worker socket
	listen := os.Getenv(agentproto.EnvListen)
	if listen == "" {
		listen = "127.0.0.1:9001"
	}
	return Run(fd, argv, listen, os.Getenv(agentproto.EnvExtensions))
}

// Run serves one runtime: fd is the worker socket, extDir the directory of
// external extensions ("" for none). The runtime gets the agent's
// environment.
func Run(fd int, argv []string, listen, extDir string) error {
	return run(fd, argv, os.Environ(), listen, extDir)
}

func run(fd int, argv, environ []string, listen, extDir string) error {
	pre, err := setUp(listen)
	if err != nil {
		return err
	}
	return runAs(fd, argv, environ, pre, extDir, nil)
}

// early is what an agent sets up before it knows its function: under the
// Linux backend while it waits in the pool, off the cold start's path.
type early struct {
	ln      net.Listener // the Runtime API's
	sigchld chan os.Signal
}

// setUp listens for the Runtime API on listen and takes the signals the
// agent handles (see discardSignals; SIGCHLD is for the reaper).
func setUp(listen string) (*early, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("runtime API listener: %w", err)
	}
	pre := &early{ln: ln, sigchld: make(chan os.Signal, 1)}
	// Reap from the start: every child, and as PID 1 every orphan.
	signal.Notify(pre.sigchld, syscall.SIGCHLD)
	discardSignals()
	return pre, nil
}

// runAs is run with the function's processes started as cred (nil: as the agent).
func runAs(fd int, argv, environ []string, pre *early, extDir string, cred *syscall.Credential) error {
	ln := pre.ln
	if len(argv) == 0 {
		ln.Close()
		return fmt.Errorf("no runtime command")
	}
	a := &agent{
		cred:        cred,
		pid1:        os.Getpid() == 1,
		procs:       map[int]*child{},
		runtimeDone: make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	if !a.pid1 {
		// Orphans of the runtime come to the agent, which reaps them.
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	exts := listExtensions(extDir)
	addr := ln.Addr().String()
	kilnAPI, err := listenKilnAPI(environ)
	if err != nil {
		ln.Close()
		return err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	logW := os.NewFile(uintptr(p[1]), "runtime-output")
	a.env = runtimeEnv(environ, addr, kilnAPI.addr)
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "LAMBDA_TASK_ROOT="); ok && a.dir == "" {
			a.dir = v
		}
		if v, ok := strings.CutPrefix(kv, agentproto.EnvDir+"="); ok {
			a.dir = v
		}
	}
	a.logFD = int(logW.Fd())

	go a.reap(pre.sigchld)

	if len(exts) == 0 {
		err = handOverListener(fd, ln, p[0], addr, kilnAPI)
		ln.Close()
	} else {
		a.ext, err = startExtensionServer(a, fd, ln, p[0], addr, kilnAPI)
	}
	kilnAPI.close()
	unix.Close(p[0])
	if err != nil {
		logW.Close()
		return err
	}
	// Non-blocking, the worker socket waits in the netpoller, not in a
	// thread of its own (an idle agent is a few hundred KiB, threads count).
	unix.SetNonblock(fd, true)
	a.conn = agentproto.NewConnSize(os.NewFile(uintptr(fd), "worker"), 4<<10)
	go a.readWorker()

	begun := agentproto.Monotonic()
	for _, path := range exts {
		if err := a.startExtension(path); err != nil {
			a.initFailed("Extension.LaunchError", fmt.Sprintf("extension %s: %v", filepath.Base(path), err))
			logW.Close()
			return a.finish()
		}
	}
	if a.ext != nil {
		if errType, msg := a.ext.waitRegistered(); errType != "" {
			a.initFailed(errType, msg)
			logW.Close()
			return a.finish()
		}
	}
	if err := a.startRuntime(argv); err != nil {
		logW.Close()
		a.initFailed("Runtime.InvalidEntrypoint", err.Error())
		a.conn.Write(agentproto.KindExit, agentproto.Exit{Code: 127}, nil)
		return a.finish()
	}
	a.conn.Write(agentproto.KindStarted, agentproto.Started{Begun: begun, Exec: agentproto.Monotonic()}, nil)
	logW.Close() // the runtime and the extensions hold the write end now
	if a.ext != nil && a.ext.failed() {
		// An extension failed while the runtime was being started.
		a.ext.mu.Lock()
		typ, msg, initDone := a.ext.failType, a.ext.failMsg, a.ext.initDone
		a.ext.mu.Unlock()
		if !initDone {
			a.initFailed(typ, msg)
		}
		a.killAll()
	}
	<-a.runtimeDone
	a.mu.Lock()
	status, stopping := a.runtimeStatus, a.stopping
	a.mu.Unlock()
	if stopping {
		// A shutdown is under way: the extensions keep their grace period
		// after the runtime ended.
		<-a.stopped
	}
	a.killAll()
	a.conn.Write(agentproto.KindExit, exitOf(status), nil)
	return a.finish()
}

// discardSignals makes the agent survive the signals a function can send it
// (as PID 1 it gets only those it handles). They are handled, not ignored:
// an ignored disposition would be inherited by the runtime through exec,
// while handled ones are reset to the default in every child. That also
// undoes a SIGHUP or SIGINT ignored by whoever started Kiln.
func discardSignals() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE)
	go func() {
		for range ch {
		}
	}()
}

// agent is the state of one environment's agent.
type agent struct {
	conn  *agentproto.Conn
	pid1  bool
	cred  *syscall.Credential // the function's processes', nil for the agent's own
	env   []string            // the runtime's (and the extensions') environment
	dir   string
	logFD int
	ext   *extServer // nil without external extensions

	mu            sync.Mutex
	procs         map[int]*child // children started and not yet reaped
	runtimePid    int
	runtimeStatus syscall.WaitStatus
	runtimeDone   chan struct{}
	stopping      bool
	stopped       chan struct{} // closed when stop has ended every process
	failed        bool          // init failed or an extension crashed: the agent is ending
}

type child struct {
	name      string
	extension bool
}

// finish ends the agent: as PID 1 returning ends every process left.
func (a *agent) finish() error {
	a.killAll()
	return nil
}

// initFailed reports an init failure to the worker, once.
func (a *agent) initFailed(errType, msg string) {
	a.mu.Lock()
	if a.failed {
		a.mu.Unlock()
		return
	}
	a.failed = true
	a.mu.Unlock()
	a.conn.Write(agentproto.KindInitError, agentproto.Error{ErrorType: errType}, errorDoc(errType, msg))
}

func (a *agent) startRuntime(argv []string) error {
	path := argv[0]
	if !filepath.IsAbs(path) {
		p, err := exec.LookPath(path)
		if err != nil {
			return err
		}
		path = p
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping || a.failed {
		return errors.New("the environment is shutting down")
	}
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Dir:   a.dir,
		Env:   a.env,
		Files: []uintptr{0, uintptr(a.logFD), uintptr(a.logFD)},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: a.cred},
	})
	if err != nil {
		return err
	}
	a.procs[pid] = &child{name: "runtime"}
	a.runtimePid = pid
	return nil
}

func (a *agent) startExtension(path string) error {
	name := filepath.Base(path)
	// Counted before it runs: it may register before ForkExec returns.
	a.ext.launched(name, 1)
	a.mu.Lock()
	defer a.mu.Unlock()
	pid, err := syscall.ForkExec(path, []string{path}, &syscall.ProcAttr{
		Dir:   filepath.Dir(path),
		Env:   a.env,
		Files: []uintptr{0, uintptr(a.logFD), uintptr(a.logFD)},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: a.cred},
	})
	if err != nil {
		a.ext.launched(name, -1)
		return err
	}
	a.procs[pid] = &child{name: name, extension: true}
	return nil
}

// reap collects every child that ends: the runtime, extensions and (as
// PID 1) orphans of the environment.
func (a *agent) reap(sigchld <-chan os.Signal) { reapChildren(sigchld, a.exited) }

// reapChildren waits for every child that has ended, at each SIGCHLD, and
// passes it to exited.
func reapChildren(sigchld <-chan os.Signal, exited func(pid int, ws syscall.WaitStatus)) {
	for range sigchld {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
			exited(pid, ws)
		}
	}
}

func (a *agent) exited(pid int, ws syscall.WaitStatus) {
	a.mu.Lock()
	c := a.procs[pid]
	delete(a.procs, pid)
	if c == nil {
		a.mu.Unlock()
		return
	}
	if pid == a.runtimePid {
		a.runtimeStatus = ws
		a.mu.Unlock()
		close(a.runtimeDone)
		return
	}
	stopping := a.stopping
	a.mu.Unlock()
	if c.extension && a.ext != nil && !stopping {
		// An extension that ends outside shutdown breaks the environment,
		// as in Lambda (Extension.Crash): end it, before or after init.
		a.ext.crashed(c.name, exitText(ws))
	}
}

// readWorker takes frames from the worker: Shutdown, or the socket closing
// (the worker is gone: stop at once).
func (a *agent) readWorker() {
	for {
		f, err := a.conn.Read()
		if err != nil {
			a.stop(false, "")
			return
		}
		if f.Kind == agentproto.KindShutdown {
			var s agentproto.Shutdown
			if len(f.Header) > 0 {
				f.Decode(&s)
			}
			if s.Reason == "" {
				s.Reason = "spindown"
			}
			a.stop(true, s.Reason)
			return
		}
	}
}

// stop ends the environment: gracefully (SHUTDOWN to extensions, SIGTERM to
// the runtime, agentproto.ShutdownGrace for both to end) when asked to, then SIGKILL.
func (a *agent) stop(graceful bool, reason string) {
	a.mu.Lock()
	if a.stopping {
		a.mu.Unlock()
		return
	}
	a.stopping = true
	rt := a.runtimePid
	a.mu.Unlock()
	defer close(a.stopped)
	if graceful {
		deadline := time.Now().Add(agentproto.ShutdownGrace)
		if a.ext != nil {
			a.ext.shutdown(reason, deadline)
		}
		if rt > 0 {
			unix.Kill(-rt, unix.SIGTERM)
		}
		for time.Now().Before(deadline) && a.live() > 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	a.killAll()
	if rt == 0 {
		// No runtime to wait for: end here.
		a.conn.Write(agentproto.KindExit, agentproto.Exit{Code: -1, Signal: "killed"}, nil)
		os.Exit(0)
	}
}

// live counts children not yet reaped.
func (a *agent) live() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.procs)
}

// killAll sends SIGKILL to every process of the environment the agent knows.
func (a *agent) killAll() {
	if a.pid1 {
		unix.Kill(-1, unix.SIGKILL) // every process of the pid namespace but PID 1
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for pid := range a.procs {
		unix.Kill(-pid, unix.SIGKILL)
		unix.Kill(pid, unix.SIGKILL)
	}
}

// handOverListener opens the log pipe's read end and the listener to the
// worker, which then serves the Runtime API itself.
func handOverListener(fd int, ln net.Listener, logR int, addr string, kilnAPI apiListener) error {
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return err
	}
	defer lf.Close()
	return agentproto.SendHandover(fd, agentproto.Handover{RuntimeAPI: addr, KilnAPI: kilnAPI.addr}, int(lf.Fd()), logR, kilnAPI.fds()...)
}

// apiListener is the socket, inside the environment, where the function
// reaches Kiln's API: the worker serves it (a proxy to Kiln's API and
// nothing else), as it serves the Runtime API.
type apiListener struct {
	addr string
	f    *os.File
}

// listenKilnAPI opens it when the worker asked for it (EnvAPIListen).
func listenKilnAPI(environ []string) (apiListener, error) {
	var listen string
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, agentproto.EnvAPIListen+"="); ok {
			listen = v
		}
	}
	if listen == "" {
		return apiListener{}, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return apiListener{}, fmt.Errorf("Kiln API listener: %w", err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return apiListener{}, err
	}
	return apiListener{addr: ln.Addr().String(), f: f}, nil
}

func (l apiListener) fds() []int {
	if l.f == nil {
		return nil
	}
	return []int{int(l.f.Fd())}
}

func (l apiListener) close() {
	if l.f != nil {
		l.f.Close()
	}
}

// listExtensions returns the executables in dir, in the order Lambda starts
// them (by name).
func listExtensions(dir string) []string {
	if dir == "" {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// runtimeEnv is the agent's environment without its own variables, plus
// AWS_LAMBDA_RUNTIME_API and, when the function reaches Kiln's API,
// AWS_ENDPOINT_URL (which the AWS SDKs use for every service).
func runtimeEnv(env []string, apiAddr, kilnAPI string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if strings.HasPrefix(kv, "KILN_AGENT_") || strings.HasPrefix(kv, "AWS_LAMBDA_RUNTIME_API=") ||
			kilnAPI != "" && strings.HasPrefix(kv, "AWS_ENDPOINT_URL=") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "AWS_LAMBDA_RUNTIME_API="+apiAddr)
	if kilnAPI != "" {
		out = append(out, "AWS_ENDPOINT_URL=http://"+kilnAPI)
	}
	return out
}

func exitOf(ws syscall.WaitStatus) agentproto.Exit {
	if ws.Signaled() {
		// Go's (and Lambda's) wording: "killed", "segmentation fault", ...
		return agentproto.Exit{Code: -1, Signal: ws.Signal().String()}
	}
	return agentproto.Exit{Code: ws.ExitStatus()}
}

func exitText(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal: " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// errorDoc is Lambda's error document {"errorMessage","errorType"}.
func errorDoc(typ, msg string) []byte {
	b, _ := json.Marshal(map[string]string{"errorMessage": msg, "errorType": typ})
	return b
}
