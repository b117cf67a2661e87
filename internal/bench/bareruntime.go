package bench

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/runtimeapi"
	"golang.org/x/sys/unix"
)

// bareRuntimes drive the function's runtime processes straight through
// Kiln's Runtime API server, with no frontend, counting, assignment,
// sandbox or client in between, each on one CPU as in the sandbox: what
// the runtime alone costs, the least any platform running it could.
type bareRuntimes struct {
	bootstrap string
	payload   []byte
	running   []*bareRuntime
}

type bareRuntime struct {
	api *runtimeapi.Server
	cmd *exec.Cmd
}

// newBareRuntimes unpacks the deployment package's bootstrap into dir.
func newBareRuntimes(dir string, pkg, payload []byte) (*bareRuntimes, error) {
	zr, err := zip.NewReader(bytes.NewReader(pkg), int64(len(pkg)))
	if err != nil {
		return nil, err
	}
	f, err := zr.Open("bootstrap")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bin, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "bare-bootstrap")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		return nil, err
	}
	return &bareRuntimes{bootstrap: path, payload: payload}, nil
}

func (b *bareRuntimes) target(ctx context.Context) target {
	return target{name: "runtime only",
		prepare: func(clients int) error {
			return startUpTo(&b.running, clients, func() (*bareRuntime, error) { return b.start(ctx, len(b.running)%runtime.NumCPU()) })
		},
		call: func(ctx context.Context, i int) (time.Duration, error) { return b.running[i].invoke(ctx, b.payload) },
		cpu: func() cpuSplit {
			var all cpuSplit
			for _, r := range b.running {
				cpu, runs := processSched(r.cmd.Process.Pid)
				all.Runtime, all.RuntimeRuns = all.Runtime+cpu, all.RuntimeRuns+runs
			}
			return all
		}}
}

// withClient is the runtimes' target with a caller's exchange before each
// turn: c's request and response, then the event. Unlike the runtimes
// alone, whose next event is queued before the runtime asks, the runtime
// waits for its next event while the caller works, as under any platform.
func (b *bareRuntimes) withClient(ctx context.Context, c *client, name string) target {
	t, alone := c.target(name), b.target(ctx)
	prepareClient := t.prepare
	t.prepare = func(clients int) error {
		if err := alone.prepare(clients); err != nil {
			return err
		}
		return prepareClient(clients)
	}
	t.call = func(ctx context.Context, i int) (time.Duration, error) {
		start := time.Now()
		if _, err := c.invoke(ctx); err != nil {
			return 0, err
		}
		if _, err := alone.call(ctx, i); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	return t
}

// startUpTo starts instances until there is one per client: runtimes
// that serve one invoke at a time.
func startUpTo[T any](running *[]T, clients int, start func() (T, error)) error {
	for len(*running) < clients {
		r, err := start()
		if err != nil {
			return err
		}
		*running = append(*running, r)
	}
	return nil
}

// start runs one runtime process on one CPU, with nothing in its
// environment but the Runtime API's address (as a sandboxed one gets
// little more), and waits for its first /next.
func (b *bareRuntimes) start(ctx context.Context, cpu int) (*bareRuntime, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := runtimeapi.Serve(ln, runtimeapi.Config{})
	cmd := exec.CommandContext(ctx, b.bootstrap)
	cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// One vCPU from its exec on, as the sandbox gives the function at
	// 1,769 MB (its agent is pinned before it starts the runtime).
	if err := startPinned(cmd, cpu); err != nil {
		srv.Close()
		return nil, err
	}
	r := &bareRuntime{api: srv, cmd: cmd}
	select {
	case <-srv.Ready():
	case <-time.After(10 * time.Second):
		r.stop()
		return nil, errors.New("bare runtime: no /next within 10 s")
	}
	if o := srv.InitError(); o != nil {
		r.stop()
		return nil, fmt.Errorf("bare runtime: init error %s", o.Payload)
	}
	return r, nil
}

// startPinned starts cmd on one CPU: forked from a thread pinned to it
// for the moment, whose affinity the child inherits.
func startPinned(cmd *exec.Cmd, cpu int) error {
	runtime.LockOSThread()
	var was, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	err := cmd.Start()
	if rerr := unix.SchedSetaffinity(0, &was); rerr != nil {
		// The thread stays locked to this goroutine, and Go ends it
		// with the goroutine, rather than running others on one CPU.
		if err == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		return rerr
	}
	runtime.UnlockOSThread()
	return err
}

func (r *bareRuntime) invoke(ctx context.Context, payload []byte) (time.Duration, error) {
	start := time.Now()
	results, err := r.api.Invoke(&runtimeapi.Event{RequestID: api.NewUUID(), Payload: payload,
		DeadlineMs:  start.Add(time.Minute).UnixMilli(),
		FunctionArn: "arn:aws:lambda:" + benchRegion + ":000000000000:function:bare"})
	if err != nil {
		return 0, err
	}
	select {
	case o := <-results:
		if o.ErrorType != "" {
			return 0, fmt.Errorf("bare runtime: %s: %s", o.ErrorType, o.Payload)
		}
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (r *bareRuntime) stop() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.api.Close()
}

func (b *bareRuntimes) stop() {
	for _, r := range b.running {
		r.stop()
	}
}
