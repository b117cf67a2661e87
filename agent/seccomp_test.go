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
	for i, f := range seccompFilter() {
		if f.Code&0x07 == unix.BPF_JMP && int(f.Jt)+i+1 >= len(seccompFilter()) {
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
		"clone3=ENOSYS", "clone-newnet=EPERM", "keyctl=EPERM", "getpid=ok", "fork=ok", "socket=ok"} {
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
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.Close(fd)
	}
	res("socket", err)
}
