package agent

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// deniedSyscalls are what a function has no business doing; they fail with
// EPERM. Namespaces (unshare, setns, clone with CLONE_NEW*) are denied as in
// Lambda; clone3 answers ENOSYS so that libcs fall back to clone, whose
// flags the filter can see.
var deniedSyscalls = append([]uintptr{
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK,
	unix.SYS_MOVE_MOUNT, unix.SYS_OPEN_TREE, unix.SYS_MOUNT_SETATTR,
	unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
	unix.SYS_PIDFD_GETFD, unix.SYS_KCMP,
	unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD, unix.SYS_REBOOT,
	unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	unix.SYS_SWAPON, unix.SYS_SWAPOFF, unix.SYS_ACCT,
	unix.SYS_QUOTACTL, unix.SYS_QUOTACTL_FD,
	unix.SYS_UNSHARE, unix.SYS_SETNS,
	unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_NAME_TO_HANDLE_AT,
	unix.SYS_SYSLOG, unix.SYS_VHANGUP, unix.SYS_LOOKUP_DCOOKIE, unix.SYS_NFSSERVCTL,
	unix.SYS_SETTIMEOFDAY, unix.SYS_CLOCK_SETTIME, unix.SYS_CLOCK_ADJTIME, unix.SYS_ADJTIMEX,
	unix.SYS_SETHOSTNAME, unix.SYS_SETDOMAINNAME,
	unix.SYS_FANOTIFY_INIT,
	unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
}, archDeniedSyscalls...)

// socketFamilies are the address families a function may open sockets of:
// what runtimes use. Others (AF_VSOCK, which network namespaces do not
// isolate, AF_PACKET, AF_ALG, ...) fail with EAFNOSUPPORT, as where the
// kernel lacks them. Netlink is limited to NETLINK_ROUTE (interfaces and
// addresses, e.g. getifaddrs), read-only without CAP_NET_ADMIN.
var socketFamilies = []uint32{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6}

const cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// seccompFilter assembles the classic BPF program.
func seccompFilter() []unix.SockFilter {
	const (
		offNr   = 0
		offArch = 4
		offArg0 = 16 // low 32 bits of args[0] (little endian)
		offArg2 = 32
	)
	retErrno := func(errno unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(errno) }
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	var prog []unix.SockFilter
	// Jumps to the shared tails are patched once their positions are known.
	type patch struct {
		at     int
		target string
	}
	var patches []patch
	jump := func(code uint16, k uint32, target string) {
		patches = append(patches, patch{len(prog), target})
		prog = append(prog, unix.SockFilter{Code: code, K: k})
	}
	prog = append(prog,
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch),
		unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, K: auditArch},
		stmt(unix.BPF_RET|unix.BPF_K, retErrno(unix.ENOSYS)), // a foreign ABI (e.g. 32-bit) gets nothing
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr),
	)
	if syscallNrLimit != 0 {
		jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, syscallNrLimit, "deny")
	}
	for _, nr := range deniedSyscalls {
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, uint32(nr), "deny")
	}
	jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.SYS_CLONE, "clone")
	jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.SYS_CLONE3, "enosys")
	jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.SYS_SOCKET, "socket")
	jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.SYS_SOCKETPAIR, "socket")
	prog = append(prog, stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW))
	labels := map[string]int{"clone": len(prog)}
	prog = append(prog, stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArg0))
	jump(unix.BPF_JMP|unix.BPF_JSET|unix.BPF_K, cloneNamespaces, "deny")
	prog = append(prog, stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW))
	labels["socket"] = len(prog)
	prog = append(prog, stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArg0))
	for _, f := range socketFamilies {
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, f, "socket-allow")
	}
	jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.AF_NETLINK, "netlink")
	jump(unix.BPF_JMP|unix.BPF_JA, 0, "eafnosupport")
	labels["netlink"] = len(prog)
	prog = append(prog, stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArg2))
	jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.NETLINK_ROUTE, "socket-allow")
	jump(unix.BPF_JMP|unix.BPF_JA, 0, "eafnosupport")
	labels["socket-allow"] = len(prog)
	prog = append(prog, stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW))
	labels["eafnosupport"] = len(prog)
	prog = append(prog, stmt(unix.BPF_RET|unix.BPF_K, retErrno(unix.EAFNOSUPPORT)))
	labels["enosys"] = len(prog)
	prog = append(prog, stmt(unix.BPF_RET|unix.BPF_K, retErrno(unix.ENOSYS)))
	labels["deny"] = len(prog)
	prog = append(prog, stmt(unix.BPF_RET|unix.BPF_K, retErrno(unix.EPERM)))
	for _, p := range patches {
		off := labels[p.target] - p.at - 1
		if off < 0 || off > 255 {
			panic("seccomp: jump to " + p.target + " out of range")
		}
		if prog[p.at].Code == unix.BPF_JMP|unix.BPF_JA {
			prog[p.at].K = uint32(off)
		} else {
			prog[p.at].Jt = uint8(off)
		}
	}
	return prog
}

// installSeccomp loads the filter on every thread of the process (TSYNC: Go
// runs many), so that every process the agent starts inherits it. The
// caller has set no_new_privs.
func installSeccomp() error {
	filter := seccompFilter()
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return errno
	}
	if r != 0 {
		return fmt.Errorf("thread %d could not be synchronized", r)
	}
	return nil
}
