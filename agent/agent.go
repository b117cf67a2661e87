// Package agent is the in-sandbox agent: the first process of every execution
// environment. It opens the Runtime API's listening socket and the runtime's
// log pipe inside the environment, hands both to the worker over the one
// socket it inherited, starts the runtime, and reports how the runtime ends.
//
// The agent is off the invoke path: the worker serves the Runtime API on the
// socket the agent opened (package runtimeapi), so an invoke crosses the
// sandbox boundary once, not through a relay process.
package agent

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/agentproto"
	"golang.org/x/sys/unix"
)

// Environment variables the worker sets for the agent; they are removed from
// the runtime's environment.
const (
	EnvListen = "KILN_AGENT_LISTEN" // Runtime API address, default 127.0.0.1:9001
	EnvConnFD = "KILN_AGENT_FD"     // the worker socket's descriptor, default 3
)

// ShutdownGrace is how long the runtime has between SIGTERM and SIGKILL, as Lambda's.
const ShutdownGrace = 2 * time.Second

// ExecName is the argv[0] under which a binary that links this package runs
// as the agent instead of its own main: the worker re-executes its own binary
// (/proc/self/exe) this way, so `kiln` and test binaries alike carry the agent.
const ExecName = "kiln-agent"

func init() {
	if len(os.Args) > 0 && os.Args[0] == ExecName {
		if err := Main(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "kiln-agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// Main runs the agent with argv as the runtime's command line.
func Main(argv []string) error {
	fd := 3
	if s := os.Getenv(EnvConnFD); s != "" {
		var err error
		if fd, err = strconv.Atoi(s); err != nil {
			return fmt.Errorf("%s=%q: %w", EnvConnFD, s, err)
		}
	}
	listen := os.Getenv(EnvListen)
	if listen == "" {
		listen = "127.0.0.1:9001"
	}
	return Run(fd, argv, listen)
}

// Run serves one runtime: fd is the worker socket.
func Run(fd int, argv []string, listen string) error {
	if len(argv) == 0 {
		return fmt.Errorf("no runtime command")
	}
	addr, logW, err := handOver(fd, listen)
	if err != nil {
		return err
	}
	sock := os.NewFile(uintptr(fd), "worker")
	conn := agentproto.NewConn(sock)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = runtimeEnv(os.Environ(), addr)
	cmd.Stdout, cmd.Stderr = logW, logW
	cmd.Dir = os.Getenv("LAMBDA_TASK_ROOT")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logW.Close()
		conn.Write(agentproto.KindInitError, agentproto.Error{ErrorType: "Runtime.InvalidEntrypoint"},
			[]byte(fmt.Sprintf(`{"errorMessage":%q,"errorType":"Runtime.InvalidEntrypoint"}`, err.Error())))
		conn.Write(agentproto.KindExit, agentproto.Exit{Code: 127}, nil)
		return nil
	}
	logW.Close() // the runtime holds the only write end now

	var pid atomic.Int64
	pid.Store(int64(cmd.Process.Pid))
	go func() {
		// Frames from the worker: only Shutdown (or the socket closing).
		for {
			f, err := conn.Read()
			if err != nil || f.Kind == agentproto.KindShutdown {
				stop(int(pid.Load()), err == nil)
				return
			}
		}
	}()
	waitErr := cmd.Wait()
	conn.Write(agentproto.KindExit, exitOf(cmd.ProcessState, waitErr), nil)
	return nil
}

// handOver opens the Runtime API listener and the log pipe and sends both to
// the worker with the listener's address. It returns the address and the
// pipe's write end, for the runtime.
func handOver(fd int, listen string) (string, *os.File, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", nil, fmt.Errorf("runtime API listener: %w", err)
	}
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return "", nil, err
	}
	ln.Close()
	defer lf.Close()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return "", nil, err
	}
	defer unix.Close(p[0])
	logW := os.NewFile(uintptr(p[1]), "runtime-output")
	addr := ln.Addr().String()
	if err := agentproto.SendHandover(fd, agentproto.Handover{RuntimeAPI: addr}, int(lf.Fd()), p[0]); err != nil {
		logW.Close()
		return "", nil, err
	}
	return addr, logW, nil
}

// stop ends the runtime's process group: politely first when asked to.
func stop(pid int, graceful bool) {
	if pid <= 0 {
		return
	}
	if graceful {
		unix.Kill(-pid, unix.SIGTERM)
		deadline := time.Now().Add(ShutdownGrace)
		for time.Now().Before(deadline) {
			if unix.Kill(pid, 0) != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	unix.Kill(-pid, unix.SIGKILL)
}

// runtimeEnv is the agent's environment without its own variables, plus
// AWS_LAMBDA_RUNTIME_API.
func runtimeEnv(env []string, apiAddr string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if strings.HasPrefix(kv, "KILN_AGENT_") || strings.HasPrefix(kv, "AWS_LAMBDA_RUNTIME_API=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "AWS_LAMBDA_RUNTIME_API="+apiAddr)
}

func exitOf(ps *os.ProcessState, err error) agentproto.Exit {
	if ps == nil {
		return agentproto.Exit{Code: -1, Signal: fmt.Sprint(err)}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return agentproto.Exit{Code: -1, Signal: unix.SignalName(ws.Signal())}
	}
	return agentproto.Exit{Code: ps.ExitCode()}
}
