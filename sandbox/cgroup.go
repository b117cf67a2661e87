package sandbox

import (
	"bufio"
	"bytes"
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

// cgroups places environments in cgroups: memory (with swap off), CPU in
// proportion to memory, and a pids limit. It speaks cgroup v1 (one
// hierarchy per controller, as on this project's machines) and v2 (one
// unified hierarchy), whichever the host has for the controllers.
type cgroups struct {
	version int               // 1 or 2
	v1      map[string]string // controller → parent directory (v1)
	v2      string            // parent directory (v2)
	// v2Has says which controllers the v2 parent delegates to its children.
	v2Has map[string]bool
	limit limits
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

// v1Controllers are the v1 hierarchies an environment joins; "pids" is the
// one that lists every process of the environment.
var v1Controllers = []string{"memory", "cpu", "pids"}

// detectCgroups finds the hierarchies from /proc/self/mountinfo. version 0
// picks v1 when the memory controller is on a v1 hierarchy, else v2.
func detectCgroups(version int, parent string, l limits) (*cgroups, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	v1 := map[string]string{}
	var unified string
	sc := bufio.NewScanner(bytes.NewReader(mi))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(f) || len(f) < 5 {
			continue
		}
		mnt, fstype, opts := f[4], f[sep+1], f[sep+3]
		switch fstype {
		case "cgroup2":
			if unified == "" {
				unified = mnt
			}
		case "cgroup":
			for _, o := range strings.Split(opts, ",") {
				for _, c := range v1Controllers {
					if o == c && v1[c] == "" {
						v1[c] = mnt
					}
				}
			}
		}
	}
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
	cg := &cgroups{version: version, limit: l, v1: map[string]string{}, v2Has: map[string]bool{}}
	switch version {
	case 1:
		for _, c := range v1Controllers {
			if v1[c] == "" {
				return nil, fmt.Errorf("cgroup v1: no %s hierarchy", c)
			}
			dir := filepath.Join(v1[c], parent)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, fmt.Errorf("cgroup v1: %w", err)
			}
			cg.v1[c] = dir
		}
	case 2:
		if unified == "" {
			return nil, errors.New("cgroup v2: no unified hierarchy mounted")
		}
		dir := filepath.Join(unified, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup v2: %w", err)
		}
		cg.v2 = dir
		// Delegate what the hierarchy has, level by level from its root.
		avail, _ := os.ReadFile(filepath.Join(unified, "cgroup.controllers"))
		var want []string
		for _, c := range strings.Fields(string(avail)) {
			if c == "memory" || c == "cpu" || c == "pids" {
				want = append(want, "+"+c)
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
		got, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		for _, c := range strings.Fields(string(got)) {
			cg.v2Has[c] = true
		}
	default:
		return nil, fmt.Errorf("cgroup version %d", version)
	}
	return cg, nil
}

// cgroup is one environment's.
type cgroup struct {
	m    *cgroups
	name string
	dirs []string // v1: memory, cpu, pids; v2: the one directory
	mem  string   // directory with the memory files ("" without a memory controller)
	peak *os.File // memory.max_usage_in_bytes (v1) or memory.peak (v2), kept open
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

// create makes an environment's cgroup, before its function is known:
// the pids limit and (for the agent's setup) one CPU.
func (m *cgroups) create(name string) (*cgroup, error) {
	c := &cgroup{m: m, name: name}
	var err error
	switch m.version {
	case 1:
		for _, ctl := range v1Controllers {
			d := filepath.Join(m.v1[ctl], name)
			if err = os.Mkdir(d, 0o755); err != nil {
				c.remove()
				return nil, err
			}
			c.dirs = append(c.dirs, d)
		}
		c.mem = c.dirs[0]
		// Until its function comes, the agent yields to every environment
		// at work: the lowest weight.
		err = errors.Join(
			write(c.dirs[1], "cpu.cfs_period_us", int64(m.limit.cpuPeriod)),
			write(c.dirs[1], "cpu.cfs_quota_us", int64(m.limit.cpuPeriod)),
			write(c.dirs[1], "cpu.shares", 2),
			write(c.dirs[2], "pids.max", int64(m.limit.pidsMax+agentPids)),
		)
		if err == nil {
			c.peak, err = os.Open(filepath.Join(c.mem, "memory.max_usage_in_bytes"))
		}
	case 2:
		d := filepath.Join(m.v2, name)
		if err = os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
		c.dirs = []string{d}
		if m.v2Has["memory"] {
			c.mem = d
			if f, perr := os.Open(filepath.Join(d, "memory.peak")); perr == nil {
				c.peak = f
			}
		}
		if m.v2Has["cpu"] {
			err = errors.Join(writeString(d, "cpu.max", strconv.Itoa(m.limit.cpuPeriod)+" "+strconv.Itoa(m.limit.cpuPeriod)),
				write(d, "cpu.weight", 1))
		}
		if m.v2Has["pids"] {
			err = errors.Join(err, write(d, "pids.max", int64(m.limit.pidsMax+agentPids)))
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
	m := c.m
	mem := int64(memMB) << 20
	var err error
	switch m.version {
	case 1:
		err = errors.Join(
			write(c.mem, "memory.limit_in_bytes", mem), // first: memsw may not go under it
			writeIfExists(c.mem, "memory.memsw.limit_in_bytes", mem),
			writeIfExists(c.mem, "memory.swappiness", 0),
			c.setWeight(memMB, false),
		)
		if memMB*1000/1769 >= 1000 {
			err = errors.Join(err, c.setCPU(memMB, true))
		}
	case 2:
		d := c.dirs[0]
		if m.v2Has["memory"] {
			err = errors.Join(err,
				writeString(d, "memory.max", strconv.FormatInt(mem, 10)),
				writeIfExists(d, "memory.swap.max", 0),
				writeIfExists(d, "memory.oom.group", 1), // an OOM kill ends the whole environment
			)
		}
		if m.v2Has["cpu"] {
			err = errors.Join(err, c.setWeight(memMB, false))
			if memMB*1000/1769 >= 1000 {
				err = errors.Join(err, c.setCPU(memMB, true))
			}
		}
	}
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", c.name, err)
	}
	return nil
}

// setWeight sets the CPU weight of a function of memMB: in proportion to
// its memory, or the lowest in the background (running queued events).
func (c *cgroup) setWeight(memMB int, background bool) error {
	switch {
	case c.m.version == 1 && background:
		return write(c.dirs[1], "cpu.shares", 2)
	case c.m.version == 1:
		return write(c.dirs[1], "cpu.shares", int64(max(2, 1024*memMB/1769)))
	case !c.m.v2Has["cpu"]:
		return nil
	case background:
		return write(c.dirs[0], "cpu.weight", 1)
	default:
		return write(c.dirs[0], "cpu.weight", int64(min(10000, max(1, 100*memMB/1769))))
	}
}

// setCPU sets the CPU quota of a function of memMB.
func (c *cgroup) setCPU(memMB int, boost bool) error {
	m := c.m
	q := m.cpuQuota(memMB, boost)
	switch m.version {
	// The burst may not exceed the quota: clear it, set the quota, then it.
	case 1:
		return errors.Join(
			writeIfExists(c.dirs[1], "cpu.cfs_burst_us", 0),
			write(c.dirs[1], "cpu.cfs_quota_us", int64(q)),
			writeIfExists(c.dirs[1], "cpu.cfs_burst_us", int64(min(q, m.limit.cpuPeriod))))
	case 2:
		if m.v2Has["cpu"] {
			return errors.Join(
				writeIfExists(c.dirs[0], "cpu.max.burst", 0),
				writeString(c.dirs[0], "cpu.max", strconv.Itoa(q)+" "+strconv.Itoa(m.limit.cpuPeriod)),
				writeIfExists(c.dirs[0], "cpu.max.burst", int64(min(q, m.limit.cpuPeriod))))
		}
	}
	return nil
}

// dirFD opens the v2 directory for clone3(CLONE_INTO_CGROUP).
func (c *cgroup) dirFD() (int, error) {
	return unix.Open(c.dirs[0], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// add moves pid into every v1 hierarchy of the environment.
func (c *cgroup) add(pid int) error {
	for _, d := range c.dirs {
		if err := writeString(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// procs lists the processes in the environment's cgroup.
func (c *cgroup) procs() []int {
	d := c.dirs[len(c.dirs)-1] // v1: pids; v2: the one
	b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
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
	if c.m.version == 2 {
		if writeString(c.dirs[0], "cgroup.kill", "1") == nil {
			return
		}
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
	var b [32]byte
	n, err := c.peak.ReadAt(b[:], 0)
	if n == 0 && err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b[:n])), 10, 64)
	return v
}

// oomKills counts the processes the kernel killed for the memory limit.
func (c *cgroup) oomKills() int {
	if c.mem == "" {
		return 0
	}
	file := "memory.events"
	if c.m.version == 1 {
		file = "memory.oom_control"
	}
	b, err := os.ReadFile(filepath.Join(c.mem, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
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
	if c.peak != nil {
		c.peak.Close()
	}
	return c.removeUntil(deadline)
}

func (c *cgroup) remove() { c.removeUntil(time.Now().Add(time.Second)) }

// removeUntil removes the directories, retrying while the kernel still
// counts exiting tasks in them (EBUSY).
func (c *cgroup) removeUntil(deadline time.Time) error {
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

// sweep removes cgroups that processes of the given prefix test left
// behind (a worker that died without cleaning up): every directory of the
// parent for which stale(name) holds.
func (m *cgroups) sweep(stale func(name string) bool) {
	var parents []string
	if m.version == 1 {
		for _, ctl := range v1Controllers {
			parents = append(parents, m.v1[ctl])
		}
	} else {
		parents = []string{m.v2}
	}
	for _, p := range parents {
		ents, _ := os.ReadDir(p)
		for _, e := range ents {
			if !e.IsDir() || !stale(e.Name()) {
				continue
			}
			c := &cgroup{m: m, name: e.Name(), dirs: []string{filepath.Join(p, e.Name())}}
			c.kill()
			c.removeUntil(time.Now().Add(time.Second))
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
