package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/sandbox"
	"github.com/kiln-dev/kiln/internal/worker"
	"github.com/kiln-dev/kiln/internal/worker/sandboxtest"
)

// Benchmarks of the Linux backend through a real worker and an aws-lambda-go
// echo function:
//
//	go test ./internal/sandbox -run - -bench . -benchtime 200x
//
// BenchmarkColdStart        Create → runtime ready (its first /next), p50/p99
// BenchmarkColdStartPaired  Create, first and second invoke, the process backend interleaved
// BenchmarkEnvsPerSecond    environments one worker creates per second (4 at a time), kept alive
// BenchmarkIdleEnvMemory    memory per idle environment besides the function's own
// BenchmarkInvokeWarm       one warm invoke, worker → runtime → worker
// BenchmarkInvokeWarmPaired the same, both backends interleaved under the same load

func backends(b *testing.B) []struct {
	name string
	sb   worker.Sandbox
} {
	requireRoot(b)
	return []struct {
		name string
		sb   worker.Sandbox
	}{
		{"linux", linux(b)},
		{"process", worker.ProcessSandbox{}},
	}
}

func BenchmarkColdStart(b *testing.B) {
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			h := sandboxtest.NewHarness(b, be.sb)
			fn := h.AddGo(b, "echo", fntest.EchoGo)
			h.W.Destroy(context.Background(), h.Create(b, fn)) // warm the page cache and the backend
			var times []time.Duration
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				id := h.Create(b, fn)
				times = append(times, time.Since(t0))
				b.StopTimer()
				h.W.Destroy(context.Background(), id) // graceful, in the background
				b.StartTimer()
			}
			b.StopTimer()
			reportPercentiles(b, times)
			h.W.Close()
		})
	}
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(d[min(len(d)-1, len(d)*99/100)].Microseconds())/1000, "p99-ms")
}

func BenchmarkEnvsPerSecond(b *testing.B) {
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			h := sandboxtest.NewHarness(b, be.sb)
			fn := h.AddGo(b, "echo", fntest.EchoGo)
			h.W.Destroy(context.Background(), h.Create(b, fn))
			const workers = 4
			var next sync.Mutex
			left := b.N
			b.ResetTimer()
			t0 := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						next.Lock()
						if left == 0 {
							next.Unlock()
							return
						}
						left--
						next.Unlock()
						if _, err := h.W.Create(context.Background(), invoke.EnvSpec{Function: fn}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(t0)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "envs/s")
			h.W.Close()
		})
	}
}

// BenchmarkIdleEnvMemory creates b.N idle environments (one invoke each)
// and reports what each costs the host besides the function's own memory.
// The host is shared, so system-wide counters are too noisy: the costs are
// read from cgroups. For the measurement the spawner is moved into a
// memory cgroup of its own, where the kernel charges what it allocates
// creating an environment (its namespaces: a network namespace is most of
// it) and the agent's memory until the agent joins the environment's
// cgroup; the environment's cgroup holds the rest (agent, runtime, kernel
// objects). From their sum the runtime's own memory is taken out (its
// anonymous memory, page tables and kernel stacks). The worker's side
// (Go heap and stacks for the environment's Runtime API server, log
// reader, ...) is reported apart.
//
//	platform-KiB/env  what the sandbox costs per environment, kernel included
//	agent-KiB/env     of which the agent's anonymous memory and page tables
//	runtime-KiB/env   the function's own (not counted above)
//	worker-KiB/env    the worker process's growth per environment
func BenchmarkIdleEnvMemory(b *testing.B) {
	requireRoot(b)
	for _, be := range []struct {
		name string
		sb   *sandbox.Linux
	}{
		{"small-agent", linux(b)},
		{"reexec-agent", backend(b, sandbox.Config{AgentPath: "/proc/self/exe", StateDir: filepath.Join(os.TempDir(), "kiln-sandbox-reexec")})},
	} {
		b.Run(be.name, func(b *testing.B) {
			h := sandboxtest.NewHarness(b, be.sb)
			fn := h.AddGo(b, "echo", fntest.EchoGo)
			h.W.Destroy(context.Background(), h.Create(b, fn))
			measure, restore, err := chargeSpawner(be.sb)
			if err != nil {
				b.Skip(err)
			}
			defer restore()
			be.sb.Close() // no prepared agents in the measurement
			time.Sleep(500 * time.Millisecond)
			before := measure()
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			threads0 := countThreads()
			b.ResetTimer()
			var ids []string
			for b.Loop() {
				ids = append(ids, h.Create(b, fn))
			}
			b.StopTimer()
			for _, id := range ids {
				h.Invoke(b, id, []byte(`{}`))
			}
			be.sb.Close()
			time.Sleep(time.Second)
			after := measure()
			runtime.GC()
			runtime.ReadMemStats(&ms1)
			threads1 := countThreads()
			var envs, agent, runtimeOwn int64
			for _, p := range h.Processes()[1:] {
				pids, paths, _ := p.(sandboxtest.Footprinter).HostFootprint()
				envs += readInt(filepath.Join(paths[0], "memory.usage_in_bytes"))
				agent += anonMemory(pids[0])
				for _, c := range children(pids[0]) {
					runtimeOwn += anonMemory(c) + 16<<10*threadCount(c) // kernel stacks
				}
			}
			n := int64(len(ids))
			platform := (after - before + envs - runtimeOwn) / n
			worker := (int64(ms1.HeapInuse+ms1.StackInuse) - int64(ms0.HeapInuse+ms0.StackInuse) + (threads1-threads0)*(16<<10+10<<10)) / n // + kernel stack and task per thread
			b.ReportMetric(float64(platform)/1024, "platform-KiB/env")
			b.ReportMetric(float64(agent/n)/1024, "agent-KiB/env")
			b.ReportMetric(float64(runtimeOwn/n)/1024, "runtime-KiB/env")
			b.ReportMetric(float64(worker)/1024, "worker-KiB/env")
			h.W.Close()
		})
	}
}

// chargeSpawner moves the backend's spawner into a memory cgroup of its
// own (cgroup v1) and returns how to read its usage and how to undo it.
func chargeSpawner(l *sandbox.Linux) (measure func() int64, restore func(), err error) {
	sp := spawnerPid()
	if sp == 0 {
		return nil, nil, fmt.Errorf("no spawner found")
	}
	orig := ""
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sp))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[1] == "memory" {
			orig = f[2]
		}
	}
	if orig == "" {
		return nil, nil, fmt.Errorf("no cgroup v1 memory controller")
	}
	dir := fmt.Sprintf("/sys/fs/cgroup/memory/kiln-bench-%d", os.Getpid())
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(dir+"/cgroup.procs", []byte(strconv.Itoa(sp)), 0); err != nil {
		os.Remove(dir)
		return nil, nil, err
	}
	return func() int64 { return readInt(dir + "/memory.usage_in_bytes") }, func() {
		os.WriteFile(filepath.Join("/sys/fs/cgroup/memory", orig, "cgroup.procs"), []byte(strconv.Itoa(sp)), 0)
		for i := 0; i < 100 && os.Remove(dir) != nil; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}, nil
}

// spawnerPid finds this process's kiln-spawner child.
func spawnerPid() int {
	for _, c := range children(os.Getpid()) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); strings.HasPrefix(string(b), "kiln-spawner\x00") {
			return c
		}
	}
	return 0
}

func readInt(path string) int64 {
	b, _ := os.ReadFile(path)
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func countThreads() int64 { return threadCount(os.Getpid()) }

func threadCount(pid int) int64 {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return int64(len(ents))
}

// anonMemory is a process's anonymous resident memory and page tables:
// what it costs the host besides shared file pages.
func anonMemory(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "RssAnon:" || f[0] == "VmPTE:") {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			n += v << 10
		}
	}
	return n
}

// children are a process's descendants (children of any of its threads).
func children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, children(c)...)
			}
		}
	}
	return out
}
func BenchmarkInvokeWarm(b *testing.B) {
	for _, be := range backends(b) {
		for _, mem := range []int{1769, 128} {
			b.Run(fmt.Sprintf("%s/%dMB", be.name, mem), func(b *testing.B) {
				h := sandboxtest.NewHarness(b, be.sb)
				fn := h.AddGo(b, "echo", fntest.EchoGo)
				fn.MemorySize = mem
				id := h.Create(b, fn)
				inv := &invoke.Invocation{RequestID: "bench", Payload: []byte(`{"a":1}`)}
				var times []time.Duration
				for b.Loop() {
					t0 := time.Now()
					if _, err := h.W.Invoke(context.Background(), id, inv); err != nil {
						b.Fatal(err)
					}
					times = append(times, time.Since(t0))
				}
				reportPercentiles(b, times)
			})
		}
	}
}

// BenchmarkInvokeWarmPaired alternates invokes between a process-backend
// environment and a Linux-backend one (1,769 MB, one vCPU), so that both
// see the same machine load: on a shared host that is the only fair
// comparison of the two.
func BenchmarkInvokeWarmPaired(b *testing.B) {
	type side struct {
		name  string
		h     *sandboxtest.Harness
		id    string
		times []time.Duration
	}
	var sides []*side
	for _, be := range backends(b) {
		h := sandboxtest.NewHarness(b, be.sb)
		fn := h.AddGo(b, "echo", fntest.EchoGo)
		fn.MemorySize = 1769
		sides = append(sides, &side{name: be.name, h: h, id: h.Create(b, fn)})
	}
	inv := &invoke.Invocation{RequestID: "bench", Payload: []byte(`{"a":1}`)}
	i := 0
	for b.Loop() {
		i++
		for j := range sides {
			s := sides[(i+j)%len(sides)] // alternate who goes first
			t0 := time.Now()
			if _, err := s.h.W.Invoke(context.Background(), s.id, inv); err != nil {
				b.Fatal(err)
			}
			s.times = append(s.times, time.Since(t0))
		}
	}
	for _, s := range sides {
		b.Run(s.name, func(b *testing.B) { reportPercentiles(b, s.times) })
	}
}

// BenchmarkColdStartPaired alternates cold starts between the process
// backend (the runtime forked and executed by the worker, no isolation)
// and the Linux one, each a Create and its first two invokes, so that both
// see the same load: what the sandbox adds to each part of a cold start.
func BenchmarkColdStartPaired(b *testing.B) {
	type side struct {
		name                  string
		h                     *sandboxtest.Harness
		fn                    api.FunctionConfiguration
		create, first, second []time.Duration
	}
	var sides []*side
	for _, be := range backends(b) {
		h := sandboxtest.NewHarness(b, be.sb)
		fn := h.AddGo(b, "echo", fntest.EchoGo)
		fn.MemorySize = 1769
		h.W.Destroy(context.Background(), h.Create(b, fn)) // warm the page cache and the backend
		sides = append(sides, &side{name: be.name, h: h, fn: fn})
	}
	inv := &invoke.Invocation{RequestID: "bench", Payload: []byte(`{"a":1}`)}
	i := 0
	for b.Loop() {
		i++
		for j := range sides {
			s := sides[(i+j)%len(sides)] // alternate who goes first
			t0 := time.Now()
			id := s.h.Create(b, s.fn)
			t1 := time.Now()
			for _, d := range []*[]time.Duration{&s.first, &s.second} {
				t := time.Now()
				if _, err := s.h.W.Invoke(context.Background(), id, inv); err != nil {
					b.Fatal(err)
				}
				*d = append(*d, time.Since(t))
			}
			s.create = append(s.create, t1.Sub(t0))
			b.StopTimer()
			s.h.W.Destroy(context.Background(), id) // graceful, in the background
			b.StartTimer()
		}
	}
	for _, s := range sides {
		b.Run(s.name+"/create", func(b *testing.B) { reportPercentiles(b, s.create) })
		b.Run(s.name+"/first-invoke", func(b *testing.B) { reportPercentiles(b, s.first) })
		b.Run(s.name+"/second-invoke", func(b *testing.B) { reportPercentiles(b, s.second) })
		s.h.W.Close()
	}
}
