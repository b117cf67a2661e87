package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/server"
)

// TestMain lets this test binary be the agent of the environments its tests
// start, and the event frontend process of the servers they start with
// server.Config.EventFrontend.
func TestMain(m *testing.M) {
	agent.Reexec()
	if os.Getenv(server.EventFrontendEnv) != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		err := server.RunEventFrontend(ctx, slog.Default())
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// scrape reads the server's Prometheus endpoint once; the returned func
// gives a series' value, and whether it is there.
func scrape(t *testing.T, s *server.Server) func(series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(s.MetricsEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return func(series string) (float64, bool) {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
		if m == nil {
			return 0, false
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v, true
	}
}

// metric is one series' value, 0 when absent.
func metric(t *testing.T, s *server.Server, series string) float64 {
	v, _ := scrape(t, s)(series)
	return v
}

// eventFrontendPID finds the event frontend process: this test binary's
// child running this same binary.
func eventFrontendPID(t *testing.T) int {
	t.Helper()
	self, _ := os.Executable()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		stat, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		if exe, _ := os.Readlink(d + "/exe"); exe == self {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	t.Fatal("no event frontend process")
	return 0
}

// While sync invokes run, Event invokes go to the event frontend process
// over connections the same client also sends sync invokes on: every
// event is accepted and runs, every sync invoke is answered. When the
// process is killed, Kiln takes events itself and restarts it.
func TestEventFrontendProcess(t *testing.T) {
	s := kilntest.Start(t, server.Config{MetricsListen: "127.0.0.1:0", EventFrontend: []string{os.Args[0]}})
	c := kilntest.Lambda(s)
	toolkit(t, c, "sync", nil)
	toolkit(t, c, "events", nil)
	handoffs := `kiln_event_frontend_handoffs_total`
	ran := `kiln_invocations_total{` + accountLabel(s) + `function="events",outcome="success"}`

	// round sends events Event invokes while sync invokes run, and counts
	// the accepted ones. Requests may fail only when tolerated: right after
	// the process is killed, a request it held is answered by a dropped
	// connection (never by a 202), as when any server dies.
	accepted := 0
	round := func(events int, tolerate bool) {
		t.Helper()
		fail := t.Errorf
		if tolerate {
			fail = t.Logf
		}
		stop := make(chan struct{})
		var syncs atomic.Int64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // sync traffic throughout, on the same client
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("sync"), Payload: []byte(`{"n":1}`)}); err != nil {
					fail("sync invoke: %v", err)
					continue
				}
				syncs.Add(1)
			}
		}()
		waitFor(t, func() bool { return syncs.Load() >= 3 })
		var mu sync.Mutex
		var ewg sync.WaitGroup
		for i := range events {
			ewg.Add(1)
			go func() {
				defer ewg.Done()
				out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("events"),
					InvocationType: types.InvocationTypeEvent, Payload: []byte(fmt.Sprintf(`{"n":%d}`, i))})
				if err != nil || out.StatusCode != http.StatusAccepted {
					fail("event %d: %v", i, err)
					return
				}
				mu.Lock()
				accepted++
				mu.Unlock()
			}()
			if i%4 == 3 {
				ewg.Wait() // four at a time, between sync invokes
			}
		}
		ewg.Wait()
		close(stop)
		wg.Wait()
	}

	round(40, false)
	if got := metric(t, s, handoffs); got < 1 {
		t.Fatalf("%s = %v: no connection went to the event frontend", handoffs, got)
	}
	waitFor(t, func() bool { return metric(t, s, ran) >= float64(accepted) })

	// Its secrets came on a pipe: none is in its environment.
	pid := eventFrontendPID(t)
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err != nil {
		t.Fatal(err)
	} else if bytes.Contains(env, []byte(s.Identity.SecretAccessKey)) {
		t.Fatalf("the event frontend's environment holds the account's secret key")
	}

	// Killed: events are taken here until it is back, and every accepted
	// one runs.
	syscall.Kill(pid, syscall.SIGKILL)
	before := metric(t, s, handoffs)
	round(20, true)
	deadline := time.Now().Add(wait.Deadline) // a second's pause, then a process start: more on a loaded host
	for metric(t, s, handoffs) == before && time.Now().Before(deadline) {
		round(8, false) // the restarted process takes connections again
	}
	if metric(t, s, handoffs) == before {
		t.Fatal("the event frontend process did not come back")
	}
	waitFor(t, func() bool { return metric(t, s, ran) >= float64(accepted) })
	t.Logf("%d events accepted, %v ran (more would be redeliveries)", accepted, metric(t, s, ran))
}
