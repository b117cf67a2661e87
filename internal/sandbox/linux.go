// Package sandbox is Kiln's default isolation backend on Linux: every
// execution environment is its own set of namespaces (user, pid, mount, net,
// ipc, uts) with its own root, its own cgroup, and a seccomp filter.
//
// An environment's agent is prepared before its function is known, and kept
// in a small pool (Config.PoolSize), so that a cold start does only what
// depends on the function:
//
//  1. Prepare (ahead of time). The worker makes a cgroup (pids limit, every
//     CPU, one CPU's time, the lowest CPU weight while it waits) and the
//     pieces of the root as detached read-only mounts: a skeleton prepared
//     once by New (curated /etc, minimal /dev, mount points), as an overlay
//     (see hider), and open_tree(2) clones of the host's /usr (and /bin,
//     /lib*, /sbin where they are directories). These detached mounts need
//     no host path the sandbox could see. A small helper process
//     (the spawner, started once) forks the agent into new namespaces: in a
//     new user namespace its root maps to an unprivileged range of host ids
//     (65,536 per environment); forking the worker itself into a user
//     namespace could not use vfork and would cost milliseconds per
//     environment in page-table copies. The agent, PID 1 of its pid
//     namespace, attaches the trees, mounts its own /proc (masked as
//     container runtimes mask it), pivot_roots, detaches the host's tree
//     and brings up lo, the only network, where it listens for the Runtime
//     API. On cgroup v1 the worker then moves it into its cgroup (on v2 it
//     was started there with CLONE_INTO_CGROUP). The pool fills when the
//     backend is made and after each cold start's init; a Start that
//     finds it empty waits for the refill under way rather than preparing
//     one more agent beside it.
//  2. Start. The worker sets the function's limits (memory, with no swap;
//     CPU weight; at least one CPU until init ends; the CPUs its memory
//     buys, in its cpuset), makes overlays of the function's code
//     (/var/task), Kiln's runtime files (/var/runtime) and layers (/opt),
//     and sends them with the runtime's command to the agent, which
//     attaches them, mounts /tmp (a tmpfs of EphemeralStorage MB) and
//     /dev/shm, enters a cgroup namespace of its own, installs the seccomp
//     filter on all its threads, hands the worker the Runtime API listener
//     and starts the extensions and the runtime as uid 993, with no
//     capabilities, at most PidsMax processes (RLIMIT_NPROC) and 1,024
//     descriptors each (RLIMIT_NOFILE), under the filter. The agent itself stays uid
//     0 of its user namespace, filtered and undumpable: the function cannot
//     signal it, and it always has the headroom the cgroup's pids limit
//     keeps above the function's for its own threads.
//  3. Init done (worker.InitNotifier): CPU in proportion to memory, one vCPU
//     at 1,769 MB as in Lambda.
//  4. End. When the agent ends (killed, or after its runtime exited), its
//     pid namespace ends with it, and with it every process, mount and
//     namespace of the environment; the worker then keeps the cgroup's
//     peak memory and whether the kernel killed for the memory limit (it
//     counts that after its SIGKILL, so once usage had reached the limit
//     the count is waited for a moment), and empties and removes the
//     cgroup. Nothing of an environment is ever mounted on the host.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/agentproto"
	"github.com/kiln-dev/kiln/internal/sched"
	"github.com/kiln-dev/kiln/internal/worker"
	"golang.org/x/sys/unix"
)

// Config configures the Linux backend. The zero value works.
type Config struct {
	// AgentPath is the binary to run as the spawner and the agent. Empty
	// means kiln-agent next to the running executable if there is one
	// that only root (or this user) can change (see trusted; the small
	// agent, see package internal/sandbox/kiln-agent), else the running executable
	// itself.
	AgentPath string
	// StateDir holds the prepared root skeleton; empty means
	// /run/kiln-sandbox, or the temporary directory without /run.
	StateDir string
	// CgroupParent is the cgroup (under each hierarchy's root) that holds
	// the environments' cgroups; empty means "kiln".
	CgroupParent string
	// CgroupVersion forces cgroup v1 or v2; 0 detects (v1 when the memory
	// controller is on a v1 hierarchy).
	CgroupVersion int
	// PidsMax bounds the processes and threads of the function (as
	// Lambda's 1,024); 0 means 1024. The environment's cgroup allows a few
	// more, for the agent.
	PidsMax int
	// MinCPU is the least CPU an environment gets, in thousandths of a
	// CPU; 0 means 50. Above it, CPU is memory/1769 CPUs.
	MinCPU int
	// CPUPeriod is the CFS period; 0 means 20 ms (shorter periods make
	// throttling stalls shorter).
	CPUPeriod time.Duration
	// NoSeccomp leaves the seccomp filter off (for diagnosis).
	NoSeccomp bool
	// PoolSize is how many agents are kept prepared ahead of time (in
	// their namespaces and cgroup, root built, waiting for a function), so
	// that a cold start only attaches the function and starts it; 0 means
	// 3 (with 2, back-to-back cold starts on a busy host sometimes found
	// it empty while the one refill was slow), negative none.
	PoolSize int
}

// Linux is the Linux namespaces backend (a worker.Sandbox). New prepares
// it; Close ends the agents it prepared ahead of time.
type Linux struct {
	cfg       Config
	skel      *skeleton
	hide      *hider
	cg        *cgroups
	agentPath string
	cpus      *cpuSet

	mu sync.Mutex
	sp *spawnerClient

	pool    chan *prepared
	poolMu  sync.Mutex // guards poolGen changes and refill
	poolGen atomic.Uint64
	refill  chan struct{} // closed when the refill under way ends; nil when none
}

// Layout: the code at /var/task and Kiln's runtime files at /var/runtime,
// as in Lambda.
func (*Linux) Layout(codeDir, runtimeDir string) (string, string) { return "/var/task", "/var/runtime" }

const (
	cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
		syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	idsPerEnv = 65536
	// uidBase..uidBase+uidSlots*idsPerEnv are the host ids of sandboxes.
	uidBase  = 1 << 29
	uidSlots = 4096
	// noFile is the descriptors each process of a function may open, as
	// Lambda's 1,024: not the worker's own limit, which the agent inherits.
	noFile = 1024
)

var (
	// envSeq numbers environments in the names of their cgroups.
	envSeq atomic.Uint64
	// ids hands out environments' ranges of host ids, for every backend of
	// the process; Kilns on one host start at different slots.
	ids = newIDRanges(uidSlots, os.Getpid()*7919)
)

// New prepares the backend: the root skeleton, the cgroup parent (and
// removes the cgroups of workers that died without cleaning up), and the
// CPUs environments share. It needs root.
func New(cfg Config) (*Linux, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("sandbox: the Linux backend needs root")
	}
	l := &Linux{cfg: cfg}
	size := cfg.PoolSize
	if size == 0 {
		size = 3
	}
	l.pool = make(chan *prepared, max(0, size))
	dir := cfg.StateDir
	if dir == "" {
		dir = "/run/kiln-sandbox"
		if fi, err := os.Stat("/run"); err != nil || !fi.IsDir() {
			dir = filepath.Join(os.TempDir(), "kiln-sandbox")
		}
	}
	var err error
	if l.skel, err = buildSkeleton(dir); err != nil {
		return nil, err
	}
	if l.hide, err = newHider(l.skel.dir+".empty", l.skel.dir); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	lim := limits{pidsMax: cfg.PidsMax, minCPU: cfg.MinCPU, cpuPeriod: int(cfg.CPUPeriod / time.Microsecond)}
	if lim.pidsMax == 0 {
		lim.pidsMax = 1024
	}
	if lim.minCPU == 0 {
		lim.minCPU = 50
	}
	if lim.cpuPeriod == 0 {
		lim.cpuPeriod = 20000
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return nil, fmt.Errorf("sandbox: CPUs: %w", err)
	}
	var cpus []int
	for c := range 64 * len(allowed) { // every bit of the set
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	l.cpus = newCPUSet(cpus)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if l.cg, err = detectCgroups(mi, cfg.CgroupVersion, cfg.CgroupParent, lim, cpus); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	// Cgroups of workers that died without cleaning up.
	l.cg.sweep(func(name string) bool {
		pid, _, ok := strings.Cut(name, "-")
		n, err := strconv.Atoi(pid)
		return ok && err == nil && n != os.Getpid() && !processAlive(n)
	})
	l.agentPath = cfg.AgentPath
	if l.agentPath == "" {
		l.agentPath = "/proc/self/exe"
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "kiln-agent"); isExecutable(p) {
				if err := trusted(p); err != nil {
					slog.Warn("kiln-agent not used: it runs as root, and others could change it; running kiln itself as the agent", "err", err)
				} else {
					l.agentPath = p
				}
			}
		}
	}
	// The pool fills now, not at the first Start: the first cold start
	// after a worker starts finds an agent ready too.
	l.startRefill()
	return l, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func (l *Linux) spawner() (*spawnerClient, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sp == nil || l.sp.isDead() {
		sp, err := startSpawner(l.agentPath)
		if err != nil {
			return nil, err
		}
		l.sp = sp
	}
	return l.sp, nil
}

// setupTimeout bounds the agent's setup (it is milliseconds).
const setupTimeout = 10 * time.Second

// prepared is an agent in its namespaces and cgroup, with its root built,
// waiting for a function (see agent.SandboxConfig).
type prepared struct {
	p   *process
	ctl int // SOCK_SEQPACKET control socket
}

func (pr *prepared) discard() {
	unix.Close(pr.ctl)
	pr.p.Kill()
}

// prepare starts an agent and waits until it has built its root.
func (l *Linux) prepare() (_ *prepared, err error) {
	sp, err := l.spawner()
	if err != nil {
		return nil, err
	}
	name := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(envSeq.Add(1), 10)
	cg, err := l.cg.create(name)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	p := &process{name: name, cg: cg, started: make(chan struct{}), exitedCh: make(chan struct{}), done: make(chan struct{}), pidfd: -1}
	var fds []int // the agent's 3, 4, ...: the control socket, then the trees
	ctl := -1     // ours
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err != nil && ctl >= 0 { // before the agent started
			unix.Close(ctl)
			cg.remove()
		}
	}()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		cg.remove()
		return nil, err
	}
	ctl = pair[0]
	fds = append(fds, pair[1])
	cfg := agent.SandboxConfig{CtlFD: 3, UID: sandboxUID, GID: sandboxGID, NProc: l.cg.limit.pidsMax,
		NoFile: noFile, Hostname: "localhost", NoSeccomp: l.cfg.NoSeccomp, Listen: runtimeAPIAddr}
	addTree := func(src, target string, recursive bool, attr uint64) error {
		var fd int
		var err error
		if target == "/" {
			fd, err = l.hide.tree(src, attr)
		} else {
			fd, err = cloneTree(src, recursive, attr)
		}
		if err != nil {
			return fmt.Errorf("sandbox: %s: %w", src, err)
		}
		cfg.Mounts = append(cfg.Mounts, agent.TreeMount{FD: 3 + len(fds), Target: target})
		fds = append(fds, fd)
		return nil
	}
	err = addTree(l.skel.dir, "/", false, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID)
	for _, b := range l.skel.binds {
		if err == nil {
			if b.dev {
				err = addTree(b.src, b.target, false, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
			} else {
				err = addTree(b.src, b.target, true, readOnly)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	cfgJSON, _ := json.Marshal(cfg)
	req := &agentproto.SpawnRequest{
		Args:       []string{agentproto.ExecName},
		Env:        []string{agentproto.EnvSandbox + "=" + string(cfgJSON)},
		Cloneflags: cloneflags,
		IDCount:    idsPerEnv,
	}
	cfd, err := l.cg.h.intoFD(cg)
	if err != nil {
		return nil, fmt.Errorf("sandbox: cgroup: %w", err)
	}
	if cfd >= 0 {
		req.CgroupFD = true
		fds = append(fds, cfd)
	}
	slot, err := ids.take()
	if err != nil {
		return nil, err
	}
	p.releaseIDs = func() { ids.give(slot) }
	req.UIDBase = uint32(uidBase + slot*idsPerEnv)
	pid, pidfd, err := sp.spawn(req, p, fds)
	if err != nil {
		p.releaseIDs()
		return nil, fmt.Errorf("sandbox: start agent: %w", err)
	}
	p.pid, p.pidfd = pid, pidfd
	for _, ns := range []string{"user", "pid", "mnt", "net", "ipc", "uts"} {
		if l, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + ns); err == nil {
			p.namespaces = append(p.namespaces, l)
		}
	}
	close(p.started)
	pr := &prepared{p: p, ctl: ctl}
	ctl = -1 // the agent runs: discard cleans up from here
	// Before the function comes: the agent asks for it only after this.
	if err := l.cg.h.join(cg, pid); err != nil {
		pr.discard()
		return nil, fmt.Errorf("sandbox: cgroup: %w", err)
	}
	if msg, err := recvStatus(pr.ctl, setupTimeout); err != nil || msg != agent.CtlPrepared {
		pr.discard()
		if err == nil {
			err = errors.New(msg)
		}
		return nil, fmt.Errorf("sandbox: agent setup: %w", err)
	}
	return pr, nil
}

// recvStatus receives one control message (a JSON string).
func recvStatus(fd int, timeout time.Duration) (string, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", err
		}
		if n == 0 {
			return "", errors.New("the agent did not answer")
		}
		break
	}
	var msg string
	fds, err := agentproto.RecvMsg(fd, make([]byte, 64<<10), &msg)
	for _, f := range fds {
		unix.Close(f)
	}
	if errors.Is(err, agentproto.ErrPeerClosed) {
		return "", errors.New("the agent ended")
	}
	return msg, err
}

// take gives a prepared agent from the pool. When the pool is empty it
// waits for the refill under way, which had a head start, rather than
// preparing one more beside it; it prepares its own only if the refill
// ends without one (or there is no pool). A pool it leaves short is
// refilled after the environment's init (process.afterInit), so that the
// refill does not take CPU from the cold start. waited says it found
// none ready.
func (l *Linux) take() (pr *prepared, waited bool, err error) {
	for {
		select {
		case pr := <-l.pool:
			if pr = alive(pr); pr != nil {
				return pr, waited, nil
			}
			continue
		default:
		}
		waited = true
		refill := l.startRefill()
		if refill == nil {
			pr, err := l.prepare()
			return pr, waited, err
		}
		select {
		case pr := <-l.pool:
			if pr = alive(pr); pr != nil {
				return pr, waited, nil
			}
		case <-refill:
			select {
			case pr := <-l.pool:
				if pr = alive(pr); pr != nil {
					return pr, waited, nil
				}
			default:
			}
			pr, err := l.prepare() // the refill failed (this says why), or others took what it made
			return pr, waited, err
		}
	}
}

// alive is pr, or nil (and pr discarded) if its agent died waiting.
func alive(pr *prepared) *prepared {
	select {
	case <-pr.p.exitedCh:
		pr.discard()
		return nil
	default:
		return pr
	}
}

// startRefill tops the pool up in the background, one agent at a time
// (two at once made cold starts slower on a busy 2-core host), unless a
// refill is under way, and returns the channel closed when the refill ends
// (nil without a pool).
func (l *Linux) startRefill() <-chan struct{} {
	if cap(l.pool) == 0 {
		return nil
	}
	l.poolMu.Lock()
	defer l.poolMu.Unlock()
	if l.refill != nil {
		return l.refill
	}
	done := make(chan struct{})
	l.refill = done
	gen := l.poolGen.Load()
	go func() {
		defer func() {
			l.poolMu.Lock()
			l.refill = nil
			l.poolMu.Unlock()
			close(done)
		}()
		for len(l.pool) < cap(l.pool) {
			pr, err := l.prepare()
			if err != nil {
				return // the next Start prepares its own and says why
			}
			l.poolMu.Lock()
			if gen != l.poolGen.Load() {
				l.poolMu.Unlock()
				pr.discard() // Close ran meanwhile
				return
			}
			select {
			case l.pool <- pr:
				l.poolMu.Unlock()
			default:
				l.poolMu.Unlock()
				pr.discard()
				return
			}
		}
	}()
	return done
}

// Close ends the agents prepared ahead of time (the pool), and waits for a
// refill under way. Environments already started are not affected; a later
// Start prepares new agents. The worker calls it when it closes.
func (l *Linux) Close() error {
	l.poolMu.Lock()
	l.poolGen.Add(1)
	var drained []*prepared
	for len(l.pool) > 0 {
		drained = append(drained, <-l.pool)
	}
	refill := l.refill
	l.poolMu.Unlock()
	for _, pr := range drained {
		pr.discard()
	}
	if refill != nil {
		<-refill // it discards what it prepares: the generation changed
	}
	return nil
}

const readOnly = uint64(unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)

// KilnAPIAddr is where, inside the sandbox, a function reaches Kiln's API
// (beside the Runtime API's runtimeAPIAddr).
const KilnAPIAddr = "127.0.0.1:9002"

// runtimeAPIAddr is the Runtime API's address inside the sandbox, as in
// Lambda. A prepared agent listens on it before its function comes.
const runtimeAPIAddr = "127.0.0.1:9001"

func (l *Linux) Start(ctx context.Context, spec worker.SandboxSpec) (worker.Process, error) {
	memMB := spec.MemoryMB
	if memMB <= 0 {
		memMB = 128
	}
	tmpMB := spec.TmpMB
	if tmpMB <= 0 {
		tmpMB = 512
	}
	asked := time.Now()
	pr, waited, err := l.take()
	if err != nil {
		return nil, err
	}
	defer unix.Close(pr.ctl)
	p := pr.p
	if waited {
		p.agentWait = time.Since(asked)
	}
	p.memMB = memMB
	p.afterInit = sync.OnceFunc(func() { l.startRefill() })
	fail := func(err error) (worker.Process, error) {
		p.Kill()
		return nil, err
	}
	if err := p.cg.assign(memMB); err != nil {
		return fail(fmt.Errorf("sandbox: %w", err))
	}
	// Before the agent starts the runtime, which inherits its threads' CPUs.
	if p.cpus = l.cpus.take(memMB); p.cpus != nil {
		p.release = l.cpus.release
		if err := pin(p); err != nil {
			return fail(fmt.Errorf("sandbox: CPUs: %w", err))
		}
	}
	// The assignment's descriptors: the worker socket, then the trees.
	fds := []int{int(spec.Conn.Fd())}
	var trees []int
	defer func() {
		for _, fd := range trees {
			unix.Close(fd)
		}
	}()
	as := agent.Assignment{
		Argv: spec.Argv,
		Env:  append([]string(nil), spec.Env...), // KilnAPI appends
		Tmpfs: []agent.Tmpfs{
			{Target: "tmp", Options: "size=" + strconv.Itoa(tmpMB) + "m,mode=1777"},
			{Target: "dev/shm", Options: "size=" + strconv.Itoa(memMB) + "m,mode=1777", NoExec: true},
		},
	}
	if spec.KilnAPI {
		as.Env = append(as.Env, agentproto.EnvAPIListen+"="+KilnAPIAddr)
	}
	for _, t := range []struct{ src, target string }{{spec.CodeDir, "var/task"}, {spec.RuntimeDir, "var/runtime"}, {spec.OptDir, "opt"}} {
		if t.src == "" {
			continue
		}
		fd, err := l.hide.tree(t.src, readOnly)
		if err != nil {
			return fail(fmt.Errorf("sandbox: %s: %w", t.src, err))
		}
		trees = append(trees, fd)
		as.Mounts = append(as.Mounts, agent.TreeMount{FD: len(fds), Target: t.target})
		fds = append(fds, fd)
	}
	if spec.ImageDir != "" {
		fd, err := cloneTree(spec.ImageDir, false, readOnly)
		if err != nil {
			return fail(fmt.Errorf("sandbox: image %s: %w", spec.ImageDir, err))
		}
		trees = append(trees, fd)
		as.Root = &agent.TreeMount{FD: len(fds)}
		fds = append(fds, fd)
	}
	if spec.WorkDir != "" {
		as.Env = append(as.Env, agentproto.EnvDir+"="+spec.WorkDir)
	}
	if err := agentproto.SendMsg(pr.ctl, as, fds...); err != nil {
		return fail(fmt.Errorf("sandbox: assign: %w", err))
	}
	timeout := setupTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if msg, err := recvStatus(pr.ctl, timeout); err != nil || msg != agent.CtlOK {
		if err == nil {
			err = errors.New(msg)
		}
		return fail(fmt.Errorf("sandbox: agent setup: %w", err))
	}
	return p, nil
}

// pin keeps the environment on its CPUs: with its cpuset where the host has
// the controller (the function cannot widen it with sched_setaffinity),
// else with the affinity of its threads.
func pin(p *process) error {
	if p.cg.hasCPUs() {
		return p.cg.setCPUs(p.cpus)
	}
	return sched.Pin(p.pid, p.cpus)
}

// process is one environment as the worker holds it.
type process struct {
	name  string
	cg    *cgroup
	pid   int
	pidfd int
	memMB int
	// cpus the environment runs on (nil: all), handed back by release.
	cpus    []int
	release func([]int)
	// releaseIDs gives the host user id range back, once the agent is gone.
	releaseIDs func()
	// afterInit tops the pool up once the environment's init is over (or
	// it was killed); nil for an agent still in the pool.
	afterInit func()
	// agentWait is how long Start waited for a prepared agent (0: the pool
	// had one).
	agentWait time.Duration
	// namespaces are the agent's, as /proc/PID/ns shows them (for tests).
	namespaces []string

	started  chan struct{} // pid and pidfd are set
	exitedCh chan struct{} // the agent was reaped
	status   syscall.WaitStatus
	done     chan struct{} // and its cgroup is gone

	mu sync.Mutex // guards pidfd, cleaned and what cleanup keeps
	// cleaned: the environment has ended and its counters are read; its
	// cgroup, being removed, is not touched again.
	cleaned    bool
	peak       int64
	resident   int64 // the highest residentPeak seen, at residentAt
	residentAt time.Time
	oomKilled  bool
	killed     bool // Kill was called
	cleanupErr error
}

// exited is called (once) by the spawner client when the agent was reaped.
func (p *process) exited(ws syscall.WaitStatus) {
	p.status = ws
	close(p.exitedCh)
	go func() {
		<-p.started
		p.cleanup()
	}()
}

func (p *process) cleanup() {
	// The agent was PID 1 of its pid namespace: when it is gone, so is every
	// process of the environment, and with them its namespaces and mounts.
	// What is left is the cgroup.
	if p.release != nil {
		p.release(p.cpus)
	}
	if p.releaseIDs != nil {
		p.releaseIDs()
	}
	peak, oomKilled := max(p.cg.maxMemory(), p.resident), p.cg.oomKills() > 0
	p.mu.Lock()
	killed := p.killed
	p.mu.Unlock()
	if !oomKilled && !killed && p.status.Signaled() && p.status.Signal() == syscall.SIGKILL {
		oomKilled = p.cg.oomKilled() // the agent itself may be the OOM killer's
	}
	// Kept before the cgroup goes: a REPORT written meanwhile reads them.
	p.mu.Lock()
	p.peak, p.oomKilled, p.cleaned = peak, oomKilled, true
	p.mu.Unlock()
	err := p.cg.destroy()
	p.mu.Lock()
	p.cleanupErr = err
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	p.mu.Unlock()
	close(p.done)
}

// killTimeout bounds how long Kill waits for the environment to be gone.
const killTimeout = 30 * time.Second

// Kill ends every process of the environment and waits until its cgroup is
// removed.
func (p *process) Kill() error {
	if p.afterInit != nil {
		p.afterInit()
	}
	p.mu.Lock()
	p.killed = true
	if !p.cleaned {
		if p.pidfd >= 0 {
			unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
		} else {
			unix.Kill(p.pid, unix.SIGKILL)
		}
		p.cg.kill()
	}
	p.mu.Unlock()
	select {
	case <-p.done:
	case <-time.After(killTimeout):
		return fmt.Errorf("sandbox: environment %s still there %v after SIGKILL", p.name, killTimeout)
	}
	return p.cleanupErr
}

// Wait blocks until the agent has ended and the environment is gone.
func (p *process) Wait() error {
	<-p.done
	switch ws := p.status; {
	case ws.Signaled():
		return errors.New("signal: " + ws.Signal().String())
	case ws.ExitStatus() != 0:
		return fmt.Errorf("exit status %d", ws.ExitStatus())
	}
	return nil
}

// MaxMemoryUsed is the cgroup's high-water mark (v1
// memory.max_usage_in_bytes, v2 memory.peak), or, when more, the peak
// resident memory of the environment's processes: what Lambda reports.
// The cgroup is not charged for file pages another environment brought in
// first (Node's 30 MB binary, shared by all of them), which a process's
// resident memory counts.
func (p *process) MaxMemoryUsed() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cleaned {
		return p.peak
	}
	// /proc/PID/status is costly to generate: sampled at most every second.
	if now := time.Now(); now.Sub(p.residentAt) >= time.Second {
		p.resident, p.residentAt = max(p.resident, p.residentPeak()), now
	}
	return max(p.cg.maxMemory(), p.resident)
}

// residentPeak sums the peak resident memory (VmHWM) of the processes in
// the environment's cgroup but the agent's.
func (p *process) residentPeak() int64 {
	if len(p.cg.dirs) == 0 {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(p.cg.dirs[len(p.cg.dirs)-1], "cgroup.procs"))
	if err != nil {
		return 0
	}
	var sum int64
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != p.pid {
			sum += worker.PeakResident(pid)
		}
	}
	return sum
}

// AgentWait is how long Start waited for a prepared agent: the cold
// start's pool phase.
func (p *process) AgentWait() time.Duration { return p.agentWait }

// InitDone ends the CPU boost of the init phase: from now on the
// environment gets CPU in proportion to its memory.
func (p *process) InitDone() {
	p.afterInit()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cleaned {
		p.cg.setCPU(p.memMB, false)
	}
}

// SetBackground gives the environment the lowest CPU weight while it runs
// queued events, and its own back for synchronous invokes.
func (p *process) SetBackground(background bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cleaned {
		return nil
	}
	return p.cg.setWeight(p.memMB, background)
}

// OOMKilled reports whether the kernel killed a process of the environment
// for exceeding its memory.
func (p *process) OOMKilled() bool {
	if killed, ok := p.cleanedOOM(); ok {
		return killed
	}
	killed := p.cg.oomKilled()       // without p.mu: it may wait a moment
	if k, ok := p.cleanedOOM(); ok { // the cgroup went meanwhile: cleanup's reading
		return k
	}
	return killed
}

// cleanedOOM is cleanup's reading of the OOM kill, ok once it has one.
func (p *process) cleanedOOM() (killed, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.oomKilled, p.cleaned
}

// HostFootprint tells what the environment holds on the host, for tests
// that check nothing is left behind: the agent's pid, the cgroup
// directories, and the agent's namespaces ("net:[4026532...]").
func (p *process) HostFootprint() (pids []int, paths []string, namespaces []string) {
	<-p.started
	return []int{p.pid}, append([]string(nil), p.cg.dirs...), p.namespaces
}
