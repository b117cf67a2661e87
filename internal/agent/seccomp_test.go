package agent

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSeccompFilter installs the filter in a child process (it cannot be
// removed) and checks what it denies and what it lets through.
func TestSeccompFilter(t *testing.T) {
	if os.Getenv("KILN_SECCOMP_CHILD") != "" {
		seccompChild()
		return
	}
	prog := seccompFilter()
	for i, f := range prog {
		off := int(f.Jt)
		if f.Code == unix.BPF_JMP|unix.BPF_JA {
			off = int(f.K)
		}
		if f.Code&0x07 == unix.BPF_JMP && off+i+1 >= len(prog) {
			t.Fatalf("instruction %d jumps out of the program", i)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestSeccompFilter$")
	cmd.Env = append(os.Environ(), "KILN_SECCOMP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"mount=EPERM", "unshare=EPERM", "unshare-user=EPERM", "ptrace=EPERM",
		"clone3=ENOSYS", "clone-newnet=EPERM", "keyctl=EPERM", "getpid=ok", "fork=ok", "socket=ok",
		"socket-unix=ok", "socket-inet6=ok", "socketpair-unix=ok", "socket-netlink-route=ok",
		"socket-vsock=EAFNOSUPPORT", "socket-packet=EAFNOSUPPORT", "socket-alg=EAFNOSUPPORT",
		"socket-netlink-audit=EAFNOSUPPORT", "socketpair-vsock=EAFNOSUPPORT"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("child lacks %q:\n%s", want, out)
		}
	}
}

func seccompChild() {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	if err := installSeccomp(); err != nil {
		panic(err)
	}
	res := func(name string, err error) {
		s := "ok"
		if err != nil {
			s = unix.ErrnoName(err.(unix.Errno))
		}
		os.Stdout.WriteString(name + "=" + s + "\n")
	}
	errno := func(_, _ uintptr, e unix.Errno) error {
		if e == 0 {
			return nil
		}
		return e
	}
	res("mount", unix.Mount("none", "/tmp", "kiln-no-such-fs", 0, ""))
	res("unshare", unix.Unshare(unix.CLONE_NEWUTS))
	res("unshare-user", unix.Unshare(unix.CLONE_NEWUSER))
	res("ptrace", errno(unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_ATTACH, uintptr(os.Getppid()), 0)))
	res("clone3", errno(unix.RawSyscall(unix.SYS_CLONE3, 0, 0, 0)))
	res("clone-newnet", errno(unix.RawSyscall6(unix.SYS_CLONE, unix.CLONE_NEWNET|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)))
	res("keyctl", errno(unix.RawSyscall(unix.SYS_KEYCTL, ^uintptr(0), 0, 0)))
	res("getpid", errno(unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)))
	res("fork", exec.Command("/bin/true").Run())
	for _, sc := range []struct {
		name              string
		family, typ, prot int
	}{
		{"socket", unix.AF_INET, unix.SOCK_STREAM, 0},
		{"socket-unix", unix.AF_UNIX, unix.SOCK_STREAM, 0},
		{"socket-inet6", unix.AF_INET6, unix.SOCK_DGRAM, 0},
		{"socket-netlink-route", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE},
		{"socket-netlink-audit", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT},
		{"socket-vsock", unix.AF_VSOCK, unix.SOCK_STREAM, 0},
		{"socket-packet", unix.AF_PACKET, unix.SOCK_RAW, 0},
		{"socket-alg", unix.AF_ALG, unix.SOCK_SEQPACKET, 0},
	} {
		fd, err := unix.Socket(sc.family, sc.typ, sc.prot)
		if err == nil {
			unix.Close(fd)
		}
		res(sc.name, err)
	}
	for _, sp := range []struct {
		name   string
		family int
	}{{"socketpair-unix", unix.AF_UNIX}, {"socketpair-vsock", unix.AF_VSOCK}} {
		fds, err := unix.Socketpair(sp.family, unix.SOCK_STREAM, 0)
		if err == nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
		}
		res(sp.name, err)
	}
}
