package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"

	"github.com/kiln-dev/kiln/internal/agentproto"
	"golang.org/x/sys/unix"
)

// SandboxConfig is how the Linux backend starts an agent (in the
// KILN_AGENT_SANDBOX variable). The agent starts as root of a fresh user
// namespace (mapped to an unprivileged range of host ids), in fresh pid,
// mount, net, ipc and uts namespaces, with the pieces of its root inherited
// as detached mount trees (open_tree(2) clones the worker made, read-only).
//
// Setup has two phases, so that the worker can prepare agents before it
// knows which function they will run:
//
//  1. Prepare: attach Mounts[0] as the new root and the other trees under it,
//     mount a proc of its own, pivot into the new root and detach the
//     host's, bring up lo (the only network), set the host name, listen on
//     the Runtime API's address and take the signals it handles (off the
//     cold start's path). Then send "prepared" (or the error) on the
//     control socket CtlFD, a unix SOCK_SEQPACKET socket.
//  2. Assign: receive an Assignment on CtlFD with its descriptors: the
//     worker socket and the function's trees (code, runtime files, layers).
//     Attach them, mount the tmpfs file systems, install the seccomp filter
//     (on every thread, so every process started later inherits it), make
//     itself undumpable, answer "ok" (or the error), and run the function
//     as UID/GID with no capabilities and at most NProc processes.
//
// The worker sends the assignment once the agent is in the environment's
// cgroup, so nothing of the function runs outside it.
type SandboxConfig struct {
	Mounts   []TreeMount `json:"mounts"`
	Hostname string      `json:"hostname"`
	// UID and GID are the function's (its runtime's and extensions'),
	// NProc bounds its processes and threads (RLIMIT_NPROC) and NoFile the
	// descriptors each of them may open (RLIMIT_NOFILE; 0 keeps the
	// agent's, which is the worker's).
	UID    int `json:"uid"`
	GID    int `json:"gid"`
	NProc  int `json:"nproc"`
	NoFile int `json:"nofile,omitempty"`
	CtlFD  int `json:"ctlFd"`
	// Listen is the Runtime API's address; empty means 127.0.0.1:9001.
	Listen string `json:"listen,omitempty"`
	// NoSeccomp leaves the seccomp filter off (for diagnosis only).
	NoSeccomp bool `json:"noSeccomp,omitempty"`
}

// TreeMount is a detached mount tree and where it goes; Target "/" is the
// root, every other target is relative to it. FD is the agent's descriptor
// in SandboxConfig, the index in the message's descriptors in Assignment.
type TreeMount struct {
	FD     int    `json:"fd"`
	Target string `json:"target"`
}

// Tmpfs is a tmpfs to mount at Target.
type Tmpfs struct {
	Target  string `json:"target"`
	Options string `json:"options"` // e.g. "size=512m,mode=1777"
	NoExec  bool   `json:"noexec,omitempty"`
}

// Assignment gives a prepared agent its function. Its first descriptor is
// the worker socket; Mounts index the rest.
type Assignment struct {
	Argv   []string    `json:"argv"`
	Env    []string    `json:"env"` // the runtime's, with the agent's KILN_AGENT_* settings
	Mounts []TreeMount `json:"mounts"`
	Tmpfs  []Tmpfs     `json:"tmpfs"`
	// Root, if set, is a container image's root file system (Target
	// unused): the environment's /proc, /dev and /tmp are attached inside
	// it and it becomes the root, so the image's own runtime runs.
	Root *TreeMount `json:"root,omitempty"`
}

// Control messages of the agent on CtlFD.
const (
	CtlPrepared = "prepared"
	CtlOK       = "ok"
)

// sandboxMain is Main under the Linux backend.
func sandboxMain(cfg *SandboxConfig) error {
	// The cgroup namespace (see assign) is the calling thread's: this
	// goroutine keeps the thread that enters it, and starts the extensions
	// and the runtime from it, so that they inherit it.
	runtime.LockOSThread()
	ctl := cfg.CtlFD
	unix.CloseOnExec(ctl)
	defer unix.Close(ctl)
	if err := prepareSandbox(cfg); err != nil {
		agentproto.SendMsg(ctl, err.Error())
		return fmt.Errorf("sandbox: %w", err)
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:9001"
	}
	pre, err := setUp(listen)
	if err != nil {
		agentproto.SendMsg(ctl, err.Error())
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := agentproto.SendMsg(ctl, CtlPrepared); err != nil {
		return err
	}
	var as Assignment
	fds, err := agentproto.RecvMsg(ctl, make([]byte, 128<<10), &as)
	if errors.Is(err, agentproto.ErrPeerClosed) {
		return nil // a prepared agent the worker no longer needs
	}
	if err != nil {
		return fmt.Errorf("sandbox: waiting for a function: %w", err)
	}
	conn, err := assign(cfg, &as, fds)
	if err != nil {
		agentproto.SendMsg(ctl, err.Error())
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := agentproto.SendMsg(ctl, CtlOK); err != nil {
		return err
	}
	unix.Close(ctl)
	env := map[string]string{}
	for _, kv := range as.Env {
		if k, v, ok := cutEnv(kv); ok {
			env[k] = v
		}
	}
	extDir, ok := env[agentproto.EnvExtensions]
	if !ok {
		extDir = "/opt/extensions"
	}
	return runAs(conn, as.Argv, as.Env, pre, extDir,
		&syscall.Credential{Uid: uint32(cfg.UID), Gid: uint32(cfg.GID), Groups: []uint32{}})
}

func cutEnv(kv string) (string, string, bool) { return strings.Cut(kv, "=") }

func prepareSandbox(cfg *SandboxConfig) error {
	if len(cfg.Mounts) == 0 || cfg.Mounts[0].Target != "/" {
		return errors.New("no root mount")
	}
	err := mountRoot(cfg.Mounts)
	for _, m := range cfg.Mounts {
		unix.Close(m.FD)
	}
	if err != nil {
		return err
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	return nil
}

// assign attaches the function's pieces and locks the agent down; it
// returns the worker socket.
func assign(cfg *SandboxConfig, as *Assignment, fds []int) (int, error) {
	defer func() {
		for _, fd := range fds[1:] {
			unix.Close(fd)
		}
	}()
	if len(fds) == 0 {
		return -1, errors.New("assignment without the worker socket")
	}
	conn := fds[0]
	unix.CloseOnExec(conn)
	for _, m := range as.Mounts {
		if m.FD < 1 || m.FD >= len(fds) {
			return conn, fmt.Errorf("assignment: no descriptor %d for %s", m.FD, m.Target)
		}
		if err := unix.MoveMount(fds[m.FD], "", unix.AT_FDCWD, "/"+m.Target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return conn, fmt.Errorf("attach %s: %w", m.Target, err)
		}
	}
	for _, t := range as.Tmpfs {
		flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
		if t.NoExec {
			flags |= unix.MS_NOEXEC
		}
		if err := unix.Mount("tmpfs", "/"+t.Target, "tmpfs", flags, t.Options); err != nil {
			return conn, fmt.Errorf("tmpfs %s: %w", t.Target, err)
		}
	}
	if as.Root != nil {
		if as.Root.FD < 1 || as.Root.FD >= len(fds) {
			return conn, fmt.Errorf("assignment: no descriptor %d for the image root", as.Root.FD)
		}
		if err := imageRoot(fds[as.Root.FD]); err != nil {
			return conn, fmt.Errorf("image root: %w", err)
		}
	}
	// A cgroup namespace rooted at the environment's cgroup (the worker
	// moved the agent there before it sent the assignment): /proc/self/cgroup
	// shows "/", not the worker's names. It is this thread's only, which
	// sandboxMain keeps.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return conn, fmt.Errorf("cgroup namespace: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return conn, fmt.Errorf("no_new_privs: %w", err)
	}
	if !cfg.NoSeccomp {
		if err := installSeccomp(); err != nil {
			return conn, fmt.Errorf("seccomp: %w", err)
		}
	}
	// The function runs as UID/GID, with no capabilities, and at most
	// NProc processes and threads: RLIMIT_NPROC counts per uid and user
	// namespace, so a fork bomb stops there while the agent, uid 0 of the
	// namespace, keeps the headroom the cgroup's pids limit leaves it (it
	// must still be able to start a thread, or the Go runtime aborts).
	// The agent keeps its capabilities, which reach only the namespaces of
	// this environment, minus what the seccomp filter denies: it signals
	// the runtime at shutdown, and the function cannot signal it.
	// Descriptors: the function's own limit, not the worker's (which the
	// agent inherited); the agent holds a few and never needs more.
	for _, r := range []struct {
		res  int
		name string
		n    int
	}{{unix.RLIMIT_NPROC, "nproc", cfg.NProc}, {unix.RLIMIT_NOFILE, "nofile", cfg.NoFile}} {
		if r.n > 0 {
			lim := &syscall.Rlimit{Cur: uint64(r.n), Max: uint64(r.n)}
			if err := syscall.Setrlimit(r.res, lim); err != nil {
				return conn, fmt.Errorf("rlimit %s: %w", r.name, err)
			}
		}
	}
	// Undumpable: nothing in the sandbox can ptrace, read the memory of, or
	// take descriptors from PID 1.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return conn, fmt.Errorf("dumpable: %w", err)
	}
	return conn, nil
}

// stagingDirs are where the new root is attached before pivot_root: any
// directory of the host's tree works, as the mount namespace is private.
var stagingDirs = []string{"/tmp", "/mnt", "/var/tmp", "/run"}

func mountRoot(mounts []TreeMount) error {
	// Nothing we mount may propagate back to the host, nor the host's
	// mounts to us.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	var staging string
	for _, d := range stagingDirs {
		if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
			staging = d
			break
		}
	}
	if staging == "" {
		return errors.New("no directory to stage the root at")
	}
	if err := unix.MoveMount(mounts[0].FD, "", unix.AT_FDCWD, staging, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach root: %w", err)
	}
	if err := unix.Chdir(staging); err != nil {
		return err
	}
	for _, m := range mounts[1:] {
		if err := unix.MoveMount(m.FD, "", unix.AT_FDCWD, m.Target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("attach %s: %w", m.Target, err)
		}
	}
	if err := unix.Mount("proc", "proc", "proc", procFlags, ""); err != nil {
		return fmt.Errorf("proc: %w", err)
	}
	if err := maskProc("proc"); err != nil {
		return fmt.Errorf("proc: %w", err)
	}
	// pivot_root(".", "."): the old root ends up under the new one, where
	// the lazy unmount detaches it (and everything of the host's) at once.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	return unix.Chdir("/")
}

// imageStaging is where an image's root is attached before it becomes the
// root: a directory every skeleton has.
const imageStaging = "/var/task"

// imageRoot makes the detached tree fd (an image) the root, with the
// environment's /proc, /dev (and /dev/shm) and /tmp attached inside it (the
// image presents those directories). The skeleton root is detached after.
func imageRoot(fd int) error {
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, imageStaging, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	for _, d := range []string{"proc", "dev", "tmp"} {
		if err := unix.Mount("/"+d, imageStaging+"/"+d, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("/%s: %w", d, err)
		}
	}
	if err := unix.Chdir(imageStaging); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the skeleton: %w", err)
	}
	return unix.Chdir("/")
}

const procFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// What /proc tells of the machine beyond the environment is masked as
// container runtimes do (runc's masked and read-only paths), and so are
// the kernel's command line and the host's load. Files read as /dev/null,
// directories as an empty read-only tmpfs.
var (
	maskedProc   = []string{"acpi", "asound", "interrupts", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "scsi", "cmdline", "loadavg"}
	readOnlyProc = []string{"bus", "fs", "irq", "sys", "sysrq-trigger"}
)

// maskProc masks the paths of the proc mounted at dir (relative to the
// staged root, whose dev/null it binds).
func maskProc(dir string) error {
	for _, name := range maskedProc {
		p := dir + "/" + name
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.IsDir() {
			err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|procFlags, "size=0,mode=555")
		} else {
			err = unix.Mount("dev/null", p, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", name, err)
		}
	}
	for _, name := range readOnlyProc {
		p := dir + "/" + name
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", name, err)
		}
		// A remount keeps the flags the user namespace may not drop.
		if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|procFlags, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", name, err)
		}
	}
	return nil
}

// loopbackUp sets IFF_UP on lo.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// parseSandboxConfig reads KILN_AGENT_SANDBOX.
func parseSandboxConfig(s string) (*SandboxConfig, error) {
	var cfg SandboxConfig
	if err := json.Unmarshal([]byte(s), &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", agentproto.EnvSandbox, err)
	}
	return &cfg, nil
}
