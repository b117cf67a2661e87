package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuSplit is CPU time spent by a process tree, split between the
// platform's own processes and the function's runtime processes, and how
// many times their threads were put on a CPU (each a wake-up or a
// preemption's return: on these guests a switch costs microseconds).
type cpuSplit struct {
	Platform, Runtime         time.Duration
	PlatformRuns, RuntimeRuns float64
}

func (a cpuSplit) add(b cpuSplit) cpuSplit {
	return cpuSplit{a.Platform + b.Platform, a.Runtime + b.Runtime, a.PlatformRuns + b.PlatformRuns, a.RuntimeRuns + b.RuntimeRuns}
}

func (a cpuSplit) sub(b cpuSplit) cpuSplit {
	return cpuSplit{a.Platform - b.Platform, a.Runtime - b.Runtime, a.PlatformRuns - b.PlatformRuns, a.RuntimeRuns - b.RuntimeRuns}
}

// per is a's share of each of n requests.
func (a cpuSplit) per(n int) cpuSplit {
	return cpuSplit{a.Platform / time.Duration(n), a.Runtime / time.Duration(n), a.PlatformRuns / float64(n), a.RuntimeRuns / float64(n)}
}

// runtimeComm is the command name of the benchmark function's runtime (its
// deployment package's bootstrap).
const runtimeComm = "bootstrap"

// treeCPU reads from /proc the CPU time of root and all its descendants:
// the runtime's processes (runtimeComm) apart from everything else. Each
// live thread's schedstat counts nanoseconds, where utime and stime count
// 10 ms ticks; the warm rounds start and end no process, so what exited
// before is the same on both sides of a difference.
func treeCPU(root int) cpuSplit {
	type proc struct {
		ppid int
		comm string
	}
	procs := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		f := strings.Fields(s[closing+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		procs[pid] = proc{ppid: ppid, comm: s[open+1 : closing]}
	}
	children := map[int][]int{}
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	var out cpuSplit
	for queue := []int{root}; len(queue) > 0; queue = queue[1:] {
		pid := queue[0]
		queue = append(queue, children[pid]...)
		cpu, runs := processSched(pid)
		if procs[pid].comm == runtimeComm {
			out.Runtime, out.RuntimeRuns = out.Runtime+cpu, out.RuntimeRuns+runs
		} else {
			out.Platform, out.PlatformRuns = out.Platform+cpu, out.PlatformRuns+runs
		}
	}
	return out
}

// processCPU sums the run time of pid's live threads.
func processCPU(pid int) time.Duration {
	cpu, _ := processSched(pid)
	return cpu
}

// processSched sums the run time of pid's live threads and the times they
// were put on a CPU (schedstat: run ns, wait ns, timeslices).
func processSched(pid int) (time.Duration, float64) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	tasks, _ := os.ReadDir(dir)
	var ns, runs int64
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) == 3 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			r, _ := strconv.ParseInt(f[2], 10, 64)
			ns, runs = ns+n, runs+r
		}
	}
	return time.Duration(ns), float64(runs)
}

// hostCPU reads from /proc/stat the CPU time all of the host's CPUs spent
// busy and idle (idle and iowait) so far, in USER_HZ ticks.
func hostCPU() (busy, idle int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n") // "cpu  user nice system idle iowait irq softirq steal ..."
	for i, f := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseInt(f, 10, 64)
		switch i {
		case 3, 4:
			idle += n
		case 8, 9: // guest time is counted in user time already
		default:
			busy += n
		}
	}
	return busy, idle
}
