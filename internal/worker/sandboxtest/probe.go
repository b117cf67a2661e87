package sandboxtest

// ProbeGo is an aws-lambda-go function that tries things an execution
// environment may or may not allow, one per event "action", and reports what
// happened (errors are results, not function errors):
//
//	read {path}              the file's content (at most 4 KiB), or the error
//	readall {path}           the file's whole content, or the error
//	ls {path}                the directory's entries, or the error
//	write {path, bytes}      writes bytes to path: "ok" or the error (ENOSPC, EROFS, ...)
//	connect {addr}           a TCP connection to addr: "ok" or the error
//	syscall {name}           mount, umount, unshare, ptrace, setns, bpf, keyctl,
//	                         chroot, reboot, kexec, init_module, perf_event_open,
//	                         userfaultfd, clone_newuser: "ok" or the errno's name
//	id                       uid, gid, pid, ppid, hostname, uid_map, capabilities
//	alloc {mb}               allocates and touches mb MiB, returns "ok"
//	forkbomb {n}             starts up to n sleeping child processes; reports
//	                         how many started and the first error, kills them
//	print {mb}               writes mb MiB of log lines, returns "done"
//	sleep {ms}               sleeps, returns "slept"
//	exit {code}              os.Exit(code) mid-invoke
//	getenv {name}            the variable
//	exec {argv}              runs a command and waits: its output, or the error
//	kill {code}              sends SIGTERM to pid "code": "ok" or the errno's name
//	flood {mb}               sends the Runtime API a request whose header is mb
//	                         MiB long: {"written": bytes it took, "answer": its first line}
//	conns {n}                opens up to n connections to the Runtime API and
//	                         keeps them: {"opened": how many, "error": the first error}
//	requests {n}             sends n requests (on one connection) to a path the
//	                         Runtime API does not have: how many were answered 404
//	socket {n}               socket(n, SOCK_STREAM or SOCK_RAW, 0): "ok" or the errno's name
//	badtype                  reports its invoke's error itself, typed with
//	                         bytes that are not UTF-8; the runtime then exits
//	widencpus                asks sched_setaffinity(2) for every CPU, then
//	                         returns the thread's Cpus_allowed_list (or the error)
//
// Run as PROBE_CHILD=sleep it only sleeps (the fork bomb's children).
const ProbeGo = `package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Action string ` + "`json:\"action\"`" + `
	Path   string ` + "`json:\"path\"`" + `
	Bytes  int64  ` + "`json:\"bytes\"`" + `
	Addr   string ` + "`json:\"addr\"`" + `
	Name   string ` + "`json:\"name\"`" + `
	MB     int    ` + "`json:\"mb\"`" + `
	N      int    ` + "`json:\"n\"`" + `
	Ms     int    ` + "`json:\"ms\"`" + `
	Code   int    ` + "`json:\"code\"`" + `
	Argv   []string ` + "`json:\"argv\"`" + `
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errnoName(errno)
	}
	return err.Error()
}

func errnoName(e syscall.Errno) string {
	switch e {
	case 0:
		return "ok"
	case syscall.EPERM:
		return "EPERM"
	case syscall.EACCES:
		return "EACCES"
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EROFS:
		return "EROFS"
	case syscall.ENOSPC:
		return "ENOSPC"
	case syscall.ECONNREFUSED:
		return "ECONNREFUSED"
	case syscall.ENETUNREACH:
		return "ENETUNREACH"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.ENOSYS:
		return "ENOSYS"
	case syscall.EAGAIN:
		return "EAGAIN"
	case syscall.ESRCH:
		return "ESRCH"
	case syscall.EAFNOSUPPORT:
		return "EAFNOSUPPORT"
	case syscall.EMFILE:
		return "EMFILE"
	}
	return fmt.Sprintf("errno %d (%s)", int(e), e.Error())
}

// trySyscall makes each call harmless even where it is allowed (outside a
// sandbox, as root): bad file system types, paths that are no mount points,
// a child of its own to trace, zeroed arguments.
func trySyscall(name string) string {
	var e syscall.Errno
	switch name {
	case "mount":
		e = errOf(syscall.Mount("none", "/tmp", "kiln-no-such-fs", 0, ""))
	case "umount":
		e = errOf(syscall.Unmount("/kiln-not-a-mount-point", 0))
	case "unshare":
		e = errOf(syscall.Unshare(syscall.CLONE_NEWUTS))
	case "clone_newuser":
		e = errOf(syscall.Unshare(syscall.CLONE_NEWUSER))
	case "ptrace":
		c := exec.Command("/proc/self/exe")
		c.Env = []string{"PROBE_CHILD=sleep"}
		if err := c.Start(); err != nil {
			return errText(err)
		}
		_, _, e = syscall.RawSyscall(syscall.SYS_PTRACE, syscall.PTRACE_ATTACH, uintptr(c.Process.Pid), 0)
		c.Process.Kill()
		c.Wait()
	case "setns":
		f, err := os.Open("/proc/self/ns/uts")
		if err != nil {
			return errText(err)
		}
		_, _, e = syscall.RawSyscall(308, f.Fd(), 0, 0) // setns (amd64)
		f.Close()
	case "bpf":
		_, _, e = syscall.RawSyscall(321, ^uintptr(0), 0, 0) // bad command
	case "keyctl":
		_, _, e = syscall.RawSyscall(250, ^uintptr(0), 0, 0) // bad command
	case "chroot":
		e = errOf(syscall.Chroot("/kiln-no-such-dir"))
	case "reboot":
		_, _, e = syscall.RawSyscall(syscall.SYS_REBOOT, 0, 0, 0) // bad magic
	case "kexec":
		_, _, e = syscall.RawSyscall(246, 0, 0, ^uintptr(0)) // bad flags
	case "init_module":
		_, _, e = syscall.RawSyscall(175, 0, 0, 0)
	case "perf_event_open":
		var attr [128]byte
		_, _, e = syscall.RawSyscall6(298, uintptr(unsafe.Pointer(&attr[0])), 0, ^uintptr(0), ^uintptr(0), ^uintptr(0), 0) // bad flags
	case "userfaultfd":
		_, _, e = syscall.RawSyscall(323, ^uintptr(0), 0, 0) // bad flags
	default:
		return "unknown syscall " + name
	}
	return errnoName(e)
}

func errOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EINVAL
}

var (
	hold [][]byte
	held []net.Conn
)

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var e event
	json.Unmarshal(raw, &e)
	switch e.Action {
	case "read":
		f, err := os.Open(e.Path)
		if err != nil {
			return errText(err), nil
		}
		defer f.Close()
		b := make([]byte, 4096)
		n, err := f.Read(b)
		if n == 0 && err != nil {
			return errText(err), nil
		}
		return string(b[:n]), nil
	case "readall":
		b, err := os.ReadFile(e.Path)
		if err != nil {
			return errText(err), nil
		}
		return string(b), nil
	case "ls":
		ents, err := os.ReadDir(e.Path)
		if err != nil {
			return errText(err), nil
		}
		var names []string
		for _, d := range ents {
			names = append(names, d.Name())
		}
		return strings.Join(names, " "), nil
	case "write":
		f, err := os.Create(e.Path)
		if err != nil {
			return errText(err), nil
		}
		defer os.Remove(e.Path)
		defer f.Close()
		buf := make([]byte, 1<<20)
		for left := e.Bytes; left > 0; {
			n := int64(len(buf))
			if left < n {
				n = left
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return errText(err), nil
			}
			left -= n
		}
		return errText(f.Sync()), nil
	case "connect":
		c, err := net.DialTimeout("tcp", e.Addr, 2*time.Second)
		if err != nil {
			return errText(err), nil
		}
		c.Close()
		return "ok", nil
	case "syscall":
		return trySyscall(e.Name), nil
	case "id":
		host, _ := os.Hostname()
		uidMap, _ := os.ReadFile("/proc/self/uid_map")
		status, _ := os.ReadFile("/proc/self/status")
		var capEff string
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "CapEff:") {
				capEff = strings.TrimSpace(strings.TrimPrefix(l, "CapEff:"))
			}
		}
		return map[string]any{"uid": os.Getuid(), "gid": os.Getgid(), "pid": os.Getpid(), "ppid": os.Getppid(),
			"hostname": host, "uidMap": strings.TrimSpace(string(uidMap)), "capEff": capEff}, nil
	case "alloc":
		for i := 0; i < e.MB; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			hold = append(hold, b)
		}
		return "ok", nil
	case "forkbomb":
		var cmds []*exec.Cmd
		var first error
		for i := 0; i < e.N; i++ {
			c := exec.Command("/proc/self/exe")
			c.Env = []string{"PROBE_CHILD=sleep"}
			if err := c.Start(); err != nil {
				first = err
				break
			}
			cmds = append(cmds, c)
		}
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
		return map[string]any{"started": len(cmds), "error": errText(first)}, nil
	case "print":
		line := strings.Repeat("x", 1023) + "\n"
		w := 0
		for w < e.MB<<20 {
			n, err := os.Stdout.WriteString(line)
			if err != nil {
				return errText(err), nil
			}
			w += n
		}
		return "done", nil
	case "sleep":
		time.Sleep(time.Duration(e.Ms) * time.Millisecond)
		return "slept", nil
	case "exit":
		os.Exit(e.Code)
	case "getenv":
		return os.Getenv(e.Name), nil
	case "kill":
		return errnoName(errOf(syscall.Kill(e.Code, syscall.SIGTERM))), nil
	case "flood":
		c, err := net.Dial("tcp", os.Getenv("AWS_LAMBDA_RUNTIME_API"))
		if err != nil {
			return errText(err), nil
		}
		defer c.Close()
		answer := make(chan string, 1)
		go func() {
			b := make([]byte, 64)
			n, _ := io.ReadAtLeast(c, b, 12)
			answer <- strings.SplitN(string(b[:n]), "\r\n", 2)[0]
		}()
		c.Write([]byte("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nX-Flood: "))
		chunk := []byte(strings.Repeat("a", 64<<10))
		written := 0
		for written < e.MB<<20 {
			n, err := c.Write(chunk)
			written += n
			if err != nil {
				break
			}
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		return map[string]any{"written": written, "answer": <-answer}, nil
	case "conns":
		var first error
		opened := 0
		for opened < e.N {
			c, err := net.DialTimeout("tcp", os.Getenv("AWS_LAMBDA_RUNTIME_API"), time.Second)
			if err != nil {
				first = err
				break
			}
			held = append(held, c)
			opened++
		}
		return map[string]any{"opened": opened, "error": errText(first)}, nil
	case "get": // GET Path from the endpoint the environment names for Kiln's API
		resp, err := http.Get(os.Getenv("AWS_ENDPOINT_URL") + e.Path)
		if err != nil {
			return errText(err), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	case "requests":
		answered := 0
		for range e.N {
			resp, err := http.Get("http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/nowhere")
			if err != nil {
				return errText(err), nil
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound {
				answered++
			}
		}
		return answered, nil
	case "socket":
		typ := syscall.SOCK_STREAM
		if e.N == syscall.AF_PACKET || e.N == syscall.AF_NETLINK {
			typ = syscall.SOCK_RAW
		}
		fd, err := syscall.Socket(e.N, typ, 0)
		if err == nil {
			syscall.Close(fd)
		}
		return errText(err), nil
	case "badtype":
		lc, _ := lambdacontext.FromContext(ctx)
		req, _ := http.NewRequest("POST", "http://"+os.Getenv("AWS_LAMBDA_RUNTIME_API")+"/2018-06-01/runtime/invocation/"+lc.AwsRequestID+"/error",
			strings.NewReader(` + "`" + `{"errorMessage":"bad type"}` + "`" + `))
		req.Header.Set("Lambda-Runtime-Function-Error-Type", "\xff\xfe")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return errText(err), nil
		}
		resp.Body.Close()
		os.Exit(0) // its outcome is posted: there is nothing to answer
	case "widencpus":
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var all [128]byte
		for i := range all {
			all[i] = 0xff
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, uintptr(len(all)), uintptr(unsafe.Pointer(&all[0]))); e != 0 {
			return errnoName(e), nil
		}
		status, err := os.ReadFile("/proc/thread-self/status")
		if err != nil {
			return errText(err), nil
		}
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
				return strings.TrimSpace(v), nil
			}
		}
		return "no Cpus_allowed_list", nil
	case "exec":
		out, err := exec.Command(e.Argv[0], e.Argv[1:]...).CombinedOutput()
		if err != nil {
			return string(out) + errText(err), nil
		}
		return string(out), nil
	}
	return raw, nil
}

func main() {
	if os.Getenv("PROBE_CHILD") == "sleep" {
		time.Sleep(time.Hour)
		return
	}
	lambda.Start(handle)
}
`

// ExtensionGo is an external extension (for /opt/extensions): it registers
// for INVOKE and SHUTDOWN and prints one line per event,
// "EXT <name> INVOKE <requestId>" and "EXT <name> SHUTDOWN <reason>", then
// exits after SHUTDOWN. With EXT_MODE=init-error it reports an init error of
// type Extension.TestFailure instead; with EXT_MODE=crash it exits 3 before
// registering. Its name is its file name.
const ExtensionGo = `package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	name := filepath.Base(os.Args[0])
	mode := os.Getenv("EXT_MODE")
	if strings.HasSuffix(name, "-crash") {
		mode = "crash"
	}
	if strings.HasSuffix(name, "-initerror") {
		mode = "init-error"
	}
	if mode == "crash" {
		os.Exit(3)
	}
	api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2020-01-01/extension"
	req, _ := http.NewRequest("POST", api+"/register", bytes.NewReader([]byte(` + "`" + `{"events":["INVOKE","SHUTDOWN"]}` + "`" + `)))
	req.Header.Set("Lambda-Extension-Name", name)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		fmt.Println("EXT", name, "register failed", err)
		os.Exit(1)
	}
	var info map[string]string
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	id := resp.Header.Get("Lambda-Extension-Identifier")
	fmt.Println("EXT", name, "REGISTERED", info["functionName"], id != "")
	if mode == "init-error" {
		req, _ := http.NewRequest("POST", api+"/init/error", strings.NewReader(` + "`" + `{"errorMessage":"the extension cannot start","errorType":"Extension.TestFailure"}` + "`" + `))
		req.Header.Set("Lambda-Extension-Identifier", id)
		req.Header.Set("Lambda-Extension-Function-Error-Type", "Extension.TestFailure")
		http.DefaultClient.Do(req)
		os.Exit(1)
	}
	for {
		req, _ := http.NewRequest("GET", api+"/event/next", nil)
		req.Header.Set("Lambda-Extension-Identifier", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println("EXT", name, "next failed", err)
			os.Exit(1)
		}
		var ev struct {
			EventType      string ` + "`json:\"eventType\"`" + `
			RequestID      string ` + "`json:\"requestId\"`" + `
			ShutdownReason string ` + "`json:\"shutdownReason\"`" + `
			DeadlineMs     int64  ` + "`json:\"deadlineMs\"`" + `
			Arn            string ` + "`json:\"invokedFunctionArn\"`" + `
		}
		json.NewDecoder(resp.Body).Decode(&ev)
		resp.Body.Close()
		switch ev.EventType {
		case "INVOKE":
			fmt.Println("EXT", name, "INVOKE", ev.RequestID, ev.DeadlineMs > 0, ev.Arn != "")
		case "SHUTDOWN":
			fmt.Println("EXT", name, "SHUTDOWN", ev.ShutdownReason)
			os.Exit(0)
		}
	}
}
`
