package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/agentproto"
)

// ProcessSandbox runs the agent and runtime as plain child processes of the
// worker, in their own process group. It isolates nothing; it is the
// reference backend and the fastest way to run trusted code.
type ProcessSandbox struct{}

func (ProcessSandbox) Layout(codeDir, runtimeDir string) (string, string) { return codeDir, runtimeDir }

func (ProcessSandbox) Start(ctx context.Context, spec SandboxSpec) (Process, error) {
	if spec.ImageDir != "" {
		return nil, errors.New("the process backend cannot run container images: it has no root of its own to give them")
	}
	env := append(spec.Env, agentproto.EnvListen+"=127.0.0.1:0")
	if spec.KilnAPI {
		env = append(env, agentproto.EnvAPIListen+"=127.0.0.1:0")
	}
	if spec.OptDir != "" {
		env = append(env, agentproto.EnvExtensions+"="+filepath.Join(spec.OptDir, "extensions"))
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        append([]string{agentproto.ExecName}, spec.Argv...),
		Env:         env,
		Dir:         spec.CodeDir,
		ExtraFiles:  []*os.File{spec.Conn},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
		Stdout:      os.Stderr, // the agent's own diagnostics; the runtime's output goes through the socket
		Stderr:      os.Stderr,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	return &childProcess{cmd: cmd}, nil
}

type childProcess struct {
	cmd        *exec.Cmd
	runtimePid atomic.Int64

	// /proc/PID/status is costly to generate (it was most of an invoke's
	// CPU), so the peak is sampled at most every memSampleEvery.
	memMu   sync.Mutex
	memPeak int64
	memAt   time.Time
}

const memSampleEvery = time.Second

func (p *childProcess) Kill() error {
	// The negative pid signals the whole group: the agent, the runtime and
	// anything the runtime started.
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if pid := p.runtimePid.Load(); pid > 0 {
		syscall.Kill(-int(pid), syscall.SIGKILL) // the runtime leads a group of its own
	}
	return nil
}

func (p *childProcess) Wait() error { return p.cmd.Wait() }

// SetBackground renices the agent's and the runtime's process groups
// (every thread of every process in them).
func (p *childProcess) SetBackground(background bool) error {
	nice := 0
	if background {
		nice = 19
	}
	err := syscall.Setpriority(syscall.PRIO_PGRP, p.cmd.Process.Pid, nice)
	if pid := p.runtimePid.Load(); pid > 0 {
		err = errors.Join(err, syscall.Setpriority(syscall.PRIO_PGRP, int(pid), nice))
	}
	return err
}

// HostFootprint is the agent's pid: nothing else of the environment is the
// backend's (for tests that check nothing is left behind).
func (p *childProcess) HostFootprint() (pids []int, paths []string, namespaces []string) {
	return []int{p.cmd.Process.Pid}, nil, nil
}

// MaxMemoryUsed is the runtime's peak resident memory (VmHWM): without a
// cgroup, the runtime process itself is the best measure there is.
func (p *childProcess) MaxMemoryUsed() int64 {
	p.memMu.Lock()
	defer p.memMu.Unlock()
	if now := time.Now(); now.Sub(p.memAt) >= memSampleEvery {
		p.memPeak, p.memAt = max(p.memPeak, p.readPeak()), now
	}
	return p.memPeak
}

func (p *childProcess) readPeak() int64 {
	pid := p.runtimePid.Load()
	if pid == 0 {
		// The runtime is a child of one of the agent's threads.
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p.cmd.Process.Pid))
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			if first, _, _ := strings.Cut(strings.TrimSpace(string(b)), " "); first != "" {
				pid, _ = strconv.ParseInt(first, 10, 64)
				break
			}
		}
		if pid == 0 {
			return 0
		}
		p.runtimePid.Store(pid)
	}
	return PeakResident(int(pid))
}

// PeakResident is a process's peak resident memory (VmHWM), file pages
// included, in bytes; 0 when it is gone.
func PeakResident(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	_, rest, ok := bytes.Cut(b, []byte("VmHWM:"))
	if !ok {
		return 0
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	kb, _ := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(line), []byte("kB")))), 10, 64)
	return kb << 10
}
