// Package sched sets where and how urgently a whole process runs: idle CPU
// priority for work that must leave the CPUs to other work, CPU affinity
// for work that gets a share of the CPUs.
package sched

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// IdleSelf puts every thread of this process at idle CPU priority
// (SCHED_IDLE, or nice 19 where that is refused).
func IdleSelf() error {
	return eachThread(os.Getpid(), func(tid int) error {
		if unix.SchedSetAttr(tid, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}, 0) != nil {
			return unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
		}
		return nil
	})
}

// Pin keeps every thread of process pid on cpus.
func Pin(pid int, cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	return eachThread(pid, func(tid int) error { return unix.SchedSetaffinity(tid, &set) })
}

// eachThread applies f to every thread of pid. Threads a process starts
// later inherit the policy and affinity of the thread that starts them, so
// the whole process stays where it is put.
func eachThread(pid int, f func(tid int) error) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			errs = append(errs, f(tid))
		}
	}
	return errors.Join(errs...)
}
