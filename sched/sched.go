// Package sched lowers a process's CPU priority, for work that must leave
// the CPUs to other work on the same machine.
package sched

import (
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// IdleSelf puts every thread of this process at idle CPU priority
// (SCHED_IDLE, or nice 19 where that is refused). Threads it starts later
// inherit the policy of the thread that starts them, so the whole process
// stays there.
func IdleSelf() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if unix.SchedSetAttr(tid, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}, 0) != nil {
			errs = append(errs, unix.Setpriority(unix.PRIO_PROCESS, tid, 19))
		}
	}
	return errors.Join(errs...)
}
