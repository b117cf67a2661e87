package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Nothing kiln up started may outlive it. Each part ends its own processes
// (environments, the spawner, the event frontend), and an agent dies with
// its spawner, but a process can leave its parent: a function process that
// forks into a new session is no longer in any group Kiln signals, and
// processes whose parent ended are adopted by init. So kiln up is the
// subreaper of its tree (orphans are adopted by it instead), and once
// everything is closed it ends the children it still has.

// adoptOrphans makes this process the subreaper of its descendants.
func adoptOrphans() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// endChildren kills and reaps this process's remaining children, and the
// orphans that their ends hand over, for up to within.
func endChildren(within time.Duration, logger *slog.Logger) {
	killed := 0
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		kids := children(os.Getpid())
		if len(kids) == 0 {
			break
		}
		for _, pid := range kids {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
			syscall.Wait4(pid, nil, syscall.WNOHANG, nil)
		}
	}
	if killed > 0 {
		logger.Info("ended processes left at shutdown", "count", killed)
	}
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(p); ok && ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// parentOf reads a process's parent from /proc/PID/stat.
func parentOf(pid int) (int, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}
