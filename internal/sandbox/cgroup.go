package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroups places environments in cgroups: memory (with swap off), CPU time
// in proportion to memory, the CPUs the environment may run on, and a pids
// limit. What differs between cgroup v1 (one hierarchy per controller, as
// on this project's machines) and v2 (one unified hierarchy) is behind
// hierarchy; the rest is the same for both.
type cgroups struct {
	h     hierarchy
	limit limits
	// cpus are every CPU environments may use (the cpuset of a cgroup
	// before its function comes).
	cpus []int
}

// hierarchy is cgroup v1 or v2: where environments' cgroups live and which
// files hold their limits. Every setter skips a controller the hierarchy
// lacks (a v2 parent that does not delegate it).
type hierarchy interface {
	// layout is where the cgroup name's directories are, by controller
	// (v2: the same one for every controller it delegates), and all of
	// them, the one that lists every process last. Name "" gives the
	// parents.
	layout(name string) (byController map[string]string, all []string)
	setMemory(c *cgroup, bytes int64) error
	setCPUMax(c *cgroup, quota, period int) error
	// setShares sets the CPU weight in cgroup v1's cpu.shares units.
	setShares(c *cgroup, shares int) error
	setPidsMax(c *cgroup, n int) error
	setCPUs(c *cgroup, list string) error
	// join moves pid into the cgroup; intoFD is instead the directory to
	// start it in with clone3(CLONE_INTO_CGROUP), -1 without.
	join(c *cgroup, pid int) error
	intoFD(c *cgroup) (int, error)
	// kill kills every process of the cgroup at once, false when the
	// hierarchy cannot (they are then killed one by one).
	kill(c *cgroup) bool
	// peakFile and oomFile are the memory controller's high-water mark and
	// the file with its "oom_kill N" line; limitCounter the file and the
	// key ("" for a file that is the number) counting the times usage
	// reached the limit.
	peakFile() string
	oomFile() string
	limitCounter() (file, key string)
}

// limits are the per-environment settings that do not depend on the function.
type limits struct {
	pidsMax   int
	cpuPeriod int // µs
	minCPU    int // millicores
}

// agentPids is the room the cgroup's pids limit leaves the agent above the
// function's own limit (RLIMIT_NPROC): its threads must never be refused.
const agentPids = 64

// controllers are those an environment's cgroup uses; all but cpuset are
// required on v1 (without cpuset, CPUs are kept by affinity alone).
var controllers = []string{"memory", "cpu", "pids", "cpuset"}

// detectCgroups finds the hierarchies in mountinfo. version 0 picks v1 when
// the memory controller is on a v1 hierarchy, else v2.
func detectCgroups(mountinfo []byte, version int, parent string, l limits, cpus []int) (*cgroups, error) {
	v1, unified := cgroupMounts(parseMountinfo(mountinfo), controllers)
	if parent == "" {
		parent = "kiln"
	}
	parent = strings.Trim(parent, "/")
	if version == 0 {
		version = 2
		if v1["memory"] != "" {
			version = 1
		}
	}
	cg := &cgroups{limit: l, cpus: cpus}
	var err error
	switch version {
	case 1:
		cg.h, err = newV1(v1, parent)
	case 2:
		cg.h, err = newV2(unified, parent)
	default:
		err = fmt.Errorf("cgroup version %d", version)
	}
	if err != nil {
		return nil, err
	}
	return cg, nil
}

// cgroup is one environment's.
type cgroup struct {
	m    *cgroups
	name string
	dir  map[string]string // controller → directory
	dirs []string          // every directory, the one that lists the processes last
	peak *os.File          // the memory high-water mark, kept open (nil without)
}

// cpuQuota is the CPU time per period an environment of memMB gets: one
// vCPU at 1,769 MB, as Lambda, but never under the floor. During init
// (boost) it gets at least one whole CPU: Lambda's init is not held back
// by a small memory size either.
func (m *cgroups) cpuQuota(memMB int, boost bool) int {
	q := m.limit.cpuPeriod * memMB / 1769
	if floor := m.limit.cpuPeriod * m.limit.minCPU / 1000; q < floor {
		q = floor
	}
	if boost && q < m.limit.cpuPeriod {
		q = m.limit.cpuPeriod
	}
	return max(q, 1000)
}

// newCgroup is the cgroup name, without making it.
func (m *cgroups) newCgroup(name string) *cgroup {
	dir, dirs := m.h.layout(name)
	return &cgroup{m: m, name: name, dir: dir, dirs: dirs}
}

// create makes an environment's cgroup, before its function is known:
// the pids limit, every CPU, and for the agent's setup one CPU's time at
// the lowest weight (it yields to every environment at work).
func (m *cgroups) create(name string) (*cgroup, error) {
	c := m.newCgroup(name)
	for i, d := range c.dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			c.dirs = c.dirs[:i]
			c.remove()
			return nil, fmt.Errorf("cgroup %s: %w", name, err)
		}
	}
	h := m.h
	err := errors.Join(
		h.setCPUMax(c, m.limit.cpuPeriod, m.limit.cpuPeriod),
		h.setShares(c, 2),
		h.setPidsMax(c, m.limit.pidsMax+agentPids),
		c.setCPUs(nil),
	)
	if d := c.dir["memory"]; err == nil && d != "" {
		if f, perr := os.Open(filepath.Join(d, h.peakFile())); perr == nil {
			c.peak = f
		} else if !errors.Is(perr, fs.ErrNotExist) {
			err = perr
		}
	}
	if err != nil {
		c.remove()
		return nil, fmt.Errorf("cgroup %s: %w", name, err)
	}
	return c, nil
}

// assign sets the limits of a function of memMB: memory (no swap), CPU
// weight, and the CPU boost of init.
func (c *cgroup) assign(memMB int) error {
	err := errors.Join(c.m.h.setMemory(c, int64(memMB)<<20), c.setWeight(memMB, false))
	if memMB*1000/1769 >= 1000 {
		err = errors.Join(err, c.setCPU(memMB, true))
	}
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", c.name, err)
	}
	return nil
}

// setWeight sets the CPU weight of a function of memMB: in proportion to
// its memory, or the lowest in the background (running queued events).
func (c *cgroup) setWeight(memMB int, background bool) error {
	shares := max(2, 1024*memMB/1769)
	if background {
		shares = 2
	}
	return c.m.h.setShares(c, shares)
}

// setCPU sets the CPU quota of a function of memMB.
func (c *cgroup) setCPU(memMB int, boost bool) error {
	return c.m.h.setCPUMax(c, c.m.cpuQuota(memMB, boost), c.m.limit.cpuPeriod)
}

// setCPUs confines the environment to cpus (nil: every CPU environments
// may use). The kernel applies a cpuset to every thread of the cgroup and
// bounds what sched_setaffinity(2) may ask for, unlike affinity alone.
func (c *cgroup) setCPUs(cpus []int) error {
	if cpus == nil {
		cpus = c.m.cpus
	}
	return c.m.h.setCPUs(c, cpuList(cpus))
}

// hasCPUs says whether the cgroup confines CPUs (a cpuset controller).
func (c *cgroup) hasCPUs() bool { return c.dir["cpuset"] != "" }

// cpuList is a cpuset list ("0,2,3").
func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// procs lists the processes in the environment's cgroup.
func (c *cgroup) procs() []int {
	b, err := os.ReadFile(filepath.Join(c.dirs[len(c.dirs)-1], "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// kill sends SIGKILL to every process of the cgroup.
func (c *cgroup) kill() {
	if c.m.h.kill(c) {
		return
	}
	for _, pid := range c.procs() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// maxMemory is the environment's peak memory in bytes.
func (c *cgroup) maxMemory() int64 {
	if c.peak == nil {
		return 0
	}
	// One pread: the kernel renders the whole value at once, and ReadAt
	// would read again to its EOF (this runs on every invoke's REPORT).
	var b [32]byte
	n := -1
	if rc, err := c.peak.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { n, _ = unix.Pread(int(fd), b[:], 0) })
	}
	if n <= 0 {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b[:n])), 10, 64)
	return v
}

// oomKills counts the processes the kernel killed for the memory limit.
func (c *cgroup) oomKills() int { return c.memoryCounter(c.m.h.oomFile(), "oom_kill") }

// oomKilled reports whether the kernel killed a process of the cgroup for
// its memory limit. The kernel counts an OOM kill after it sends the
// SIGKILL, so the victim's death can be seen before the count (on a loaded
// host, by a wide margin): once usage has reached the limit, the count is
// waited for a moment.
func (c *cgroup) oomKilled() bool {
	file, key := c.m.h.limitCounter()
	for end := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		if c.oomKills() > 0 {
			return true
		}
		if c.memoryCounter(file, key) == 0 || time.Now().After(end) {
			return false
		}
	}
}

// memoryCounter reads a count of the memory controller: the "key N" line
// of file, or the whole file when key is "".
func (c *cgroup) memoryCounter(file, key string) int {
	d := c.dir["memory"]
	if d == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(d, file))
	if err != nil {
		return 0
	}
	if key == "" {
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// destroy kills what is left in the cgroup, waits for it to empty and
// removes it. The environment's agent has ended (its pid namespace with it),
// so this is a safety net, not the way processes end.
func (c *cgroup) destroy() error {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 20*time.Millisecond) {
		if len(c.procs()) == 0 {
			break
		}
		c.kill()
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes left after SIGKILL: %v", c.name, c.procs())
		}
		time.Sleep(wait)
	}
	return c.removeUntil(deadline)
}

func (c *cgroup) remove() { c.removeUntil(time.Now().Add(time.Second)) }

// removeUntil removes the directories, retrying while the kernel still
// counts exiting tasks in them (EBUSY).
func (c *cgroup) removeUntil(deadline time.Time) error {
	if c.peak != nil {
		c.peak.Close()
		c.peak = nil
	}
	var errs []error
	for _, d := range c.dirs {
		for wait := 50 * time.Microsecond; ; wait = min(2*wait, 20*time.Millisecond) {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(wait)
		}
	}
	return errors.Join(errs...)
}

// sweep removes the cgroups for which stale(name) holds: those of workers
// that died without cleaning up.
func (m *cgroups) sweep(stale func(name string) bool) {
	_, parents := m.h.layout("")
	for _, p := range parents {
		ents, _ := os.ReadDir(p)
		for _, e := range ents {
			if e.IsDir() && stale(e.Name()) {
				c := m.newCgroup(e.Name())
				c.kill()
				c.removeUntil(time.Now().Add(time.Second))
			}
		}
	}
}

func write(dir, file string, v int64) error {
	return writeString(dir, file, strconv.FormatInt(v, 10))
}

func writeString(dir, file, v string) error {
	f, err := os.OpenFile(filepath.Join(dir, file), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s/%s = %s: %w", dir, file, v, err)
	}
	return nil
}

func writeIfExists(dir, file string, v int64) error {
	err := write(dir, file, v)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
