package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/sched"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SyncUnderAsync measures sequential sync invokes of one function alone
// and while another process floods Kiln with Event invokes of another
// function, at each rate (events/s; 0: as fast as 8 clients go). Kiln runs
// as `kiln up` (isolation backend cfg.Sandbox, empty for its default), the
// flood as `kiln-bench flood`: each its own process, as clients and server
// are in use. The flood is paused (SIGSTOP) between
// loaded rounds, and an alone round starts once the queued events are done.
//
// Last, the flood runs unbounded with no sync invokes: the rate at which
// Kiln accepts events.
func SyncUnderAsync(ctx context.Context, cfg AsyncConfig, out io.Writer) error {
	dir, err := os.MkdirTemp("", "kiln-bench-async-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(out, "\nsync invokes under an async flood:")
	zip, err := echoZip(out)
	if err != nil {
		return err
	}
	var upArgs []string
	if cfg.InProcessEvents {
		upArgs = append(upArgs, "--event-frontend=false")
	}
	k, err := startKiln(ctx, cfg.Kiln, dir, cfg.Sandbox, true, upArgs...)
	if err != nil {
		return err
	}
	defer k.stop()
	backlog, closeNATS, err := backlogOf(ctx, k.natsURL)
	if err != nil {
		return err
	}
	defer closeNATS()
	for _, name := range []string{"sync", "async"} {
		if err := k.createEcho(ctx, name, zip, oneVCPU); err != nil {
			return err
		}
	}
	syncClient := signedClient(k.endpoint, "sync", []byte(`{"message":"sync"}`), 1)
	// The A/A columns compare the alone rounds of even and odd turns: how
	// far two runs without any flood differ here, the noise the ratios
	// are read against.
	fmt.Fprintf(out, "%-10s %11s %11s %11s %11s %8s %8s %8s %8s %10s\n", "flood", "alone p50", "alone p99", "loaded p50", "loaded p99",
		"p50 ×", "p99 ×", "A/A p50", "A/A p99", "events/s")
	for _, rate := range cfg.Rates {
		countFile := filepath.Join(dir, "flood-"+strconv.Itoa(rate))
		flood, err := startFlood(ctx, k.endpoint, rate, countFile)
		if err != nil {
			return err
		}
		var alone, loaded []time.Duration
		var aloneTurns [2][]time.Duration
		var floodTime time.Duration
		for round := 0; round < 12 && err == nil; round++ {
			if err = waitDrained(ctx, backlog); err != nil {
				break
			}
			var ds []time.Duration
			if ds, err = sequential(ctx, syncClient, 250); err != nil {
				break
			}
			alone = append(alone, ds...)
			aloneTurns[round%2] = append(aloneTurns[round%2], ds...)
			flood.Process.Signal(syscall.SIGCONT)
			t0 := time.Now()
			time.Sleep(200 * time.Millisecond)
			ds, err = sequential(ctx, syncClient, 250)
			flood.Process.Signal(syscall.SIGSTOP)
			floodTime += time.Since(t0)
			loaded = append(loaded, ds...)
		}
		sent, ferr := stopFlood(flood, countFile)
		if err = errors.Join(err, ferr); err != nil {
			return err
		}
		a, l := summarize(alone, 0), summarize(loaded, 0)
		a0, a1 := summarize(aloneTurns[0], 0), summarize(aloneTurns[1], 0)
		name := "flood"
		if rate > 0 {
			name = strconv.Itoa(rate) + "/s"
		}
		fmt.Fprintf(out, "%-10s %11s %11s %11s %11s %7.2fx %7.2fx %7.2fx %7.2fx %10.0f\n", name, round(a.P50), round(a.P99), round(l.P50), round(l.P99),
			float64(l.P50)/float64(a.P50), float64(l.P99)/float64(a.P99), float64(a1.P50)/float64(a0.P50), float64(a1.P99)/float64(a0.P99),
			float64(sent)/floodTime.Seconds())
	}
	if err := waitDrained(ctx, backlog); err != nil {
		return err
	}
	flood, err := startFlood(ctx, k.endpoint, 0, filepath.Join(dir, "flood-alone"))
	if err != nil {
		return err
	}
	start := time.Now()
	flood.Process.Signal(syscall.SIGCONT)
	time.Sleep(3 * time.Second)
	sent, err := stopFlood(flood, filepath.Join(dir, "flood-alone"))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "enqueue alone (8 clients, no sync invokes): %.0f events/s\n", float64(sent)/time.Since(start).Seconds())
	return nil
}

// AsyncConfig configures SyncUnderAsync.
type AsyncConfig struct {
	// Rates of the floods, events/s; 0 is as fast as 8 clients go.
	Rates []int
	// Sandbox is kiln up's isolation backend; empty means its default.
	Sandbox string
	// InProcessEvents runs kiln up with --event-frontend=false.
	InProcessEvents bool
	// Kiln is the kiln binary measured (kiln up); required.
	Kiln string
}

// sequential runs n invokes one after another and returns their latencies.
func sequential(ctx context.Context, c *client, n int) ([]time.Duration, error) {
	ds := make([]time.Duration, 0, n)
	for range n {
		d, err := c.invoke(ctx)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// backlogOf reads how many events wait in Kiln's event stream.
func backlogOf(ctx context.Context, url string) (func(context.Context) (uint64, error), func(), error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return func(ctx context.Context) (uint64, error) {
		st, err := js.Stream(ctx, eventinvoke.EventStream)
		if err != nil {
			return 0, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}, nc.Close, nil
}

func waitDrained(ctx context.Context, backlog func(context.Context) (uint64, error)) error {
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		n, err := backlog(ctx)
		if err == nil && n == 0 {
			time.Sleep(100 * time.Millisecond) // the last events' invokes end
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("async backlog not drained after 2 minutes (%d left, %v)", n, err)
		}
	}
}

// startFlood starts `kiln-bench flood`, stopped: SIGCONT lets it go.
func startFlood(ctx context.Context, endpoint string, rate int, countFile string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd, _, err := startChildLines(ctx, self, []string{"flood", endpoint, strconv.Itoa(rate), countFile}, "flooding")
	if err != nil {
		return nil, err
	}
	return cmd, cmd.Process.Signal(syscall.SIGSTOP)
}

// stopFlood ends the flood and returns how many events Kiln accepted from it.
func stopFlood(cmd *exec.Cmd, countFile string) (uint64, error) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Process.Signal(syscall.SIGCONT) // a stopped process takes SIGTERM when continued
	cmd.Wait()
	b, err := os.ReadFile(countFile)
	if err != nil {
		return 0, fmt.Errorf("flood count: %w", err)
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// Flood is `kiln-bench flood ENDPOINT RATE FILE`: 8 clients send Event
// invokes of function "async" (RATE events/s in all; 0: as fast as they
// go) until SIGTERM, then write how many Kiln accepted to FILE.
func Flood(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: kiln-bench flood ENDPOINT RATE FILE")
	}
	rate, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	// The flood stands for callers on other machines: at idle priority, the
	// CPU its own requests cost here is not taken from Kiln.
	if err := sched.IdleSelf(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	const clients = 8
	c := signedClient(args[0], "async", []byte(`{"message":"queued"}`), clients)
	c.event = true
	var sent atomic.Uint64
	var wg sync.WaitGroup
	fmt.Println("flooding")
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tick <-chan time.Time
			if rate > 0 {
				t := time.NewTicker(time.Second * clients / time.Duration(rate))
				defer t.Stop()
				tick = t.C
			}
			for ctx.Err() == nil {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				if _, err := c.invoke(ctx); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return os.WriteFile(args[2], []byte(strconv.FormatUint(sent.Load(), 10)), 0o644)
}
