package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupV1 is a hierarchy per controller.
type cgroupV1 struct {
	parent map[string]string // controller → directory holding environments
	mems   string            // the memory nodes of the cpuset parent
}

// v1Order is the order of an environment's directories: pids, which lists
// every process, last.
var v1Order = []string{"memory", "cpu", "cpuset", "pids"}

func newV1(mounts map[string]string, parent string) (*cgroupV1, error) {
	h := &cgroupV1{parent: map[string]string{}}
	for _, c := range controllers {
		if mounts[c] == "" {
			if c == "cpuset" {
				continue // CPUs are then kept by affinity alone
			}
			return nil, fmt.Errorf("cgroup v1: no %s hierarchy", c)
		}
		dir := filepath.Join(mounts[c], parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup v1: %w", err)
		}
		if c == "cpuset" {
			mems, err := inheritCpuset(mounts[c], parent)
			if err != nil {
				return nil, fmt.Errorf("cgroup v1: %w", err)
			}
			h.mems = mems
		}
		h.parent[c] = dir
	}
	return h, nil
}

// inheritCpuset gives each level of parent its parent's CPUs and memory
// nodes where it has none: a v1 cpuset starts empty, and an empty one takes
// no process. It returns parent's memory nodes.
func inheritCpuset(root, parent string) (string, error) {
	p := root
	var mems string
	for _, part := range strings.Split(parent, "/") {
		child := filepath.Join(p, part)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			have, err := os.ReadFile(filepath.Join(child, f))
			if err != nil {
				return "", err
			}
			if len(strings.TrimSpace(string(have))) == 0 {
				from, err := os.ReadFile(filepath.Join(p, f))
				if err != nil {
					return "", err
				}
				if err := writeString(child, f, strings.TrimSpace(string(from))); err != nil {
					return "", err
				}
			}
		}
		p = child
	}
	b, err := os.ReadFile(filepath.Join(p, "cpuset.mems"))
	mems = strings.TrimSpace(string(b))
	return mems, err
}

func (h *cgroupV1) layout(name string) (map[string]string, []string) {
	dir := map[string]string{}
	var all []string
	for _, c := range v1Order {
		if p := h.parent[c]; p != "" {
			dir[c] = filepath.Join(p, name)
			all = append(all, dir[c])
		}
	}
	return dir, all
}

func (h *cgroupV1) setMemory(c *cgroup, bytes int64) error {
	d := c.dir["memory"]
	return errors.Join(
		write(d, "memory.limit_in_bytes", bytes), // first: memsw may not go under it
		writeIfExists(d, "memory.memsw.limit_in_bytes", bytes),
		writeIfExists(d, "memory.swappiness", 0),
	)
}

// The burst may not exceed the quota: clear it, set the quota, then it.
func (h *cgroupV1) setCPUMax(c *cgroup, quota, period int) error {
	d := c.dir["cpu"]
	return errors.Join(
		writeIfExists(d, "cpu.cfs_burst_us", 0),
		write(d, "cpu.cfs_period_us", int64(period)),
		write(d, "cpu.cfs_quota_us", int64(quota)),
		writeIfExists(d, "cpu.cfs_burst_us", int64(min(quota, period))))
}

func (h *cgroupV1) setShares(c *cgroup, shares int) error {
	return write(c.dir["cpu"], "cpu.shares", int64(shares))
}

func (h *cgroupV1) setPidsMax(c *cgroup, n int) error {
	return write(c.dir["pids"], "pids.max", int64(n))
}

func (h *cgroupV1) setCPUs(c *cgroup, list string) error {
	d := c.dir["cpuset"]
	if d == "" {
		return nil
	}
	return errors.Join(writeString(d, "cpuset.mems", h.mems), writeString(d, "cpuset.cpus", list))
}

func (h *cgroupV1) join(c *cgroup, pid int) error {
	for _, d := range c.dirs {
		if err := writeString(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

func (h *cgroupV1) intoFD(*cgroup) (int, error) { return -1, nil }
func (h *cgroupV1) kill(*cgroup) bool           { return false }
func (h *cgroupV1) peakFile() string            { return "memory.max_usage_in_bytes" }
func (h *cgroupV1) oomFile() string             { return "memory.oom_control" }

func (h *cgroupV1) limitCounter() (string, string) { return "memory.failcnt", "" }
