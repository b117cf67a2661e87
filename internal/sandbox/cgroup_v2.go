package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroupV2 is the unified hierarchy: one directory per environment, with
// the controllers its parent delegates.
type cgroupV2 struct {
	dir string          // holds the environments
	has map[string]bool // the controllers it delegates to them
}

func newV2(unified, parent string) (*cgroupV2, error) {
	if unified == "" {
		return nil, errors.New("cgroup v2: no unified hierarchy mounted")
	}
	dir := filepath.Join(unified, parent)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup v2: %w", err)
	}
	// Delegate what the hierarchy has, level by level from its root.
	avail, _ := os.ReadFile(filepath.Join(unified, "cgroup.controllers"))
	var want []string
	for _, c := range strings.Fields(string(avail)) {
		for _, w := range controllers {
			if c == w {
				want = append(want, "+"+c)
			}
		}
	}
	if len(want) > 0 {
		p := unified
		for _, part := range strings.Split(parent, "/") {
			os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0)
			p = filepath.Join(p, part)
		}
		os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0)
	}
	h := &cgroupV2{dir: dir, has: map[string]bool{}}
	got, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	for _, c := range strings.Fields(string(got)) {
		h.has[c] = true
	}
	return h, nil
}

func (h *cgroupV2) layout(name string) (map[string]string, []string) {
	d := filepath.Join(h.dir, name)
	dir := map[string]string{}
	for c := range h.has {
		dir[c] = d
	}
	return dir, []string{d}
}

func (h *cgroupV2) setMemory(c *cgroup, bytes int64) error {
	d := c.dir["memory"]
	if d == "" {
		return nil
	}
	return errors.Join(
		writeString(d, "memory.max", strconv.FormatInt(bytes, 10)),
		writeIfExists(d, "memory.swap.max", 0),
		writeIfExists(d, "memory.oom.group", 1), // an OOM kill ends the whole environment
	)
}

// The burst may not exceed the quota: clear it, set the quota, then it.
func (h *cgroupV2) setCPUMax(c *cgroup, quota, period int) error {
	d := c.dir["cpu"]
	if d == "" {
		return nil
	}
	return errors.Join(
		writeIfExists(d, "cpu.max.burst", 0),
		writeString(d, "cpu.max", strconv.Itoa(quota)+" "+strconv.Itoa(period)),
		writeIfExists(d, "cpu.max.burst", int64(min(quota, period))))
}

func (h *cgroupV2) setShares(c *cgroup, shares int) error {
	d := c.dir["cpu"]
	if d == "" {
		return nil
	}
	return write(d, "cpu.weight", int64(weight(shares)))
}

// weight is v2's cpu.weight (100 for one vCPU, 1 to 10,000) for v1's
// cpu.shares (1,024 for one vCPU, 2 to 262,144).
func weight(shares int) int { return min(10000, max(1, shares*100/1024)) }

func (h *cgroupV2) setPidsMax(c *cgroup, n int) error {
	if d := c.dir["pids"]; d != "" {
		return write(d, "pids.max", int64(n))
	}
	return nil
}

func (h *cgroupV2) setCPUs(c *cgroup, list string) error {
	if d := c.dir["cpuset"]; d != "" {
		return writeString(d, "cpuset.cpus", list)
	}
	return nil
}

func (h *cgroupV2) join(*cgroup, int) error { return nil } // started in it

func (h *cgroupV2) intoFD(c *cgroup) (int, error) {
	return unix.Open(c.dirs[0], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

func (h *cgroupV2) kill(c *cgroup) bool {
	return writeString(c.dirs[0], "cgroup.kill", "1") == nil
}

func (h *cgroupV2) peakFile() string { return "memory.peak" }
func (h *cgroupV2) oomFile() string  { return "memory.events" }

func (h *cgroupV2) limitCounter() (string, string) { return "memory.events", "max" }
