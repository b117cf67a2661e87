package sandbox_test

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/sandbox"
	"github.com/kiln-dev/kiln/internal/worker"
	"github.com/kiln-dev/kiln/internal/worker/sandboxtest"
)

// TestMain lets this test binary be the agent of the environments its
// tests start (the worker re-executes its own binary as the agent).
func TestMain(m *testing.M) {
	agent.Reexec()
	os.Exit(m.Run())
}

func requireRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("the Linux backend needs root")
	}
}

// linux is the backend as tests run it: with the small agent binary.
func linux(t testing.TB) *sandbox.Linux {
	return backend(t, sandbox.Config{})
}

var (
	backendsMu sync.Mutex
	backendsOf = map[sandbox.Config]*sandbox.Linux{}
)

// backend is one backend of cfg (with the small agent binary) for all the
// tests of this binary: each worker closes its pool when it closes, and
// the backend prepares a new one for the next.
func backend(t testing.TB, cfg sandbox.Config) *sandbox.Linux {
	requireRoot(t)
	if cfg.AgentPath == "" {
		cfg.AgentPath = sandboxtest.AgentBinary(t)
	}
	backendsMu.Lock()
	defer backendsMu.Unlock()
	if l := backendsOf[cfg]; l != nil {
		return l
	}
	l, err := sandbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	backendsOf[cfg] = l
	return l
}

func TestLinuxConformance(t *testing.T) {
	sandboxtest.Run(t, func(t *testing.T) worker.Sandbox { return linux(t) }, sandboxtest.Isolated())
}

// TestLinuxCgroupV2 runs the suite with cgroup v2 forced. On a host whose
// controllers are all on v1 hierarchies (hybrid), the unified hierarchy has
// none: this covers v2's mechanics (start in the cgroup, cgroup.kill,
// removal) but not its limits.
func TestLinuxCgroupV2(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err != nil {
			t.Skip("no cgroup v2 hierarchy")
		}
	}
	l := backend(t, sandbox.Config{CgroupVersion: 2})
	var opts = []sandboxtest.Option{sandboxtest.Isolated()}
	if !v2Controller("memory") {
		opts = append(opts, sandboxtest.Skip("Isolation/Memory"))
	}
	if !v2Controller("pids") {
		opts = append(opts, sandboxtest.Skip("Isolation/Pids"))
	}
	if !v2Controller("cpu") {
		opts = append(opts, sandboxtest.Skip("BackgroundPriority"))
	}
	if !v2Controller("cpuset") {
		opts = append(opts, sandboxtest.Skip("Isolation/CPUShare")) // affinity alone: the function can widen it
	}
	sandboxtest.Run(t, func(t *testing.T) worker.Sandbox { return l }, opts...)
}

func v2Controller(name string) bool {
	for _, p := range []string{"/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/unified/cgroup.controllers"} {
		if b, err := os.ReadFile(p); err == nil {
			for _, c := range strings.Fields(string(b)) {
				if c == name {
					return true
				}
			}
		}
	}
	return false
}

// TestAgentMemoryBounded: with external extensions the agent relays every
// Runtime API request, allocating for each; it runs with the collector off
// for a small footprint, but not without a bound (it grew with every
// request, in the function's memory, until the environment ran out).
func TestAgentMemoryBounded(t *testing.T) {
	h := sandboxtest.NewHarness(t, linux(t))
	fn := h.AddGo(t, "probe", sandboxtest.ProbeGo)
	fn.MemorySize, fn.Timeout = 1024, slowHost
	h.SetExtensions(t, "probe", map[string][]byte{"ext": fntest.GoBootstrap(t, sandboxtest.ExtensionGo)})
	env := h.Create(t, fn)
	procs := h.Processes()
	pids, _, _ := procs[len(procs)-1].(sandboxtest.Footprinter).HostFootprint()
	const n = 20000
	if got := h.Probe(t, env, map[string]any{"action": "requests", "n": n}); got != strconv.Itoa(n) {
		t.Fatalf("requests: %s", got)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pids[0]) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`RssAnon:\s+(\d+) kB`).FindSubmatch(status)
	if m == nil {
		t.Fatalf("agent status:\n%s", status)
	}
	kb, _ := strconv.Atoi(string(m[1]))
	t.Logf("the agent's anonymous memory after %d relayed requests: %d KiB", n, kb)
	if kb > 48<<10 {
		t.Errorf("the agent holds %d KiB after %d requests", kb, n)
	}
}

// A cold start's pool phase is its wait for a prepared agent, told apart
// from the sandbox phase: without a pool every Start prepares its own
// agent; with one, Starts find an agent ready (the pool fills when the
// backend is made and after each init).
func TestColdStartPoolPhase(t *testing.T) {
	create := func(t *testing.T, h *sandboxtest.Harness, fn api.FunctionConfiguration) invoke.ColdStart {
		info, err := h.W.Create(context.Background(), invoke.EnvSpec{Account: "123456789012", Function: fn})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.W.Destroy(context.Background(), info.ID); err != nil {
			t.Fatal(err)
		}
		return info.Phases
	}
	t.Run("no pool", func(t *testing.T) {
		h := sandboxtest.NewHarness(t, backend(t, sandbox.Config{PoolSize: -1}))
		fn := h.AddGo(t, "echo", fntest.EchoGo)
		if ph := create(t, h, fn); ph.Pool <= 0 || ph.Sandbox <= 0 {
			t.Errorf("phases %+v: want the wait for the agent in pool, the rest in sandbox", ph)
		}
	})
	t.Run("pool", func(t *testing.T) {
		h := sandboxtest.NewHarness(t, linux(t))
		fn := h.AddGo(t, "echo", fntest.EchoGo)
		wait.True(t, "a cold start that finds a prepared agent", func() bool {
			ph := create(t, h, fn)
			if ph.Sandbox <= 0 {
				t.Fatalf("phases %+v: no sandbox phase", ph)
			}
			return ph.Pool == 0
		})
	})
}
