package eventinvoke_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/server"
)

// The benchmarks of the async path:
//
//	go test ./internal/eventinvoke -run '^$' -bench . -benchtime 1x
//
// BenchmarkEnqueue           Event invokes accepted per second (202s), 16 signing HTTP clients
// BenchmarkEventLatency      from the 202 to the function's handler starting, p50/p99
// BenchmarkSyncUnderAsync    sync invoke p50/p99 alone and beside an async flood, and the ratio

// startFn is a function that answers with the time its handler started.
const startFn = `package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, ev json.RawMessage) (map[string]int64, error) {
		return map[string]int64{"start": time.Now().UnixNano()}, nil
	})
}
`

// rawClient sends SigV4-signed invokes over plain net/http: cheaper than
// the SDK, so that the client takes less of the machine from Kiln.
type rawClient struct {
	s      *server.Server
	signer *v4.Signer
	creds  aws.Credentials
	http   *http.Client
}

func newRawClient(s *server.Server) *rawClient {
	return &rawClient{s: s, signer: v4.NewSigner(), http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		creds: aws.Credentials{AccessKeyID: s.Identity.AccessKeyID, SecretAccessKey: s.Identity.SecretAccessKey}}
}

// invoke sends one invoke and returns its status.
func (c *rawClient) invoke(function string, event bool, payload []byte) (int, error) {
	sum := sha256.Sum256(payload)
	req, _ := http.NewRequest(http.MethodPost, c.s.Endpoint+"/2015-03-31/functions/"+function+"/invocations", bytes.NewReader(payload))
	if event {
		req.Header.Set("X-Amz-Invocation-Type", "Event")
	}
	c.signer.SignHTTP(context.Background(), c.creds, req, hex.EncodeToString(sum[:]), "lambda", c.s.Region, time.Now())
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func benchKiln(b *testing.B, tune eventinvoke.Tuning) (*server.Server, *lambda.Client) {
	s := kilntest.Start(b, server.Config{Async: tune})
	c := kilntest.Lambda(s)
	return s, c
}

func createFn(b *testing.B, c *lambda.Client, name, source string) {
	kilntest.MustCreate(b, c, &lambda.CreateFunctionInput{FunctionName: aws.String(name), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: fntest.GoFunctionZip(b, source)}})
}

// BenchmarkEnqueue measures Event invokes accepted per second. "queue-only"
// runs no pollers (the enqueue path alone); "with-pollers" runs them too,
// so the machine also invokes what it accepts.
func BenchmarkEnqueue(b *testing.B) {
	for _, mode := range []struct {
		name    string
		pollers int
	}{{"queue-only", -1}, {"with-pollers", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			s, c := benchKiln(b, eventinvoke.Tuning{Pollers: mode.pollers})
			createFn(b, c, "sink", fntest.EchoGo)
			rc := newRawClient(s)
			payload := []byte(`{"message":"hello, queue"}`)
			b.SetParallelism(8)
			start := time.Now()
			var failed atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if st, err := rc.invoke("sink", true, payload); err != nil || st != http.StatusAccepted {
						failed.Add(1)
					}
				}
			})
			el := time.Since(start)
			if failed.Load() > 0 {
				b.Fatalf("%d event invokes not accepted", failed.Load())
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
		})
	}
}

// BenchmarkEventLatency measures the time from an event's 202 to its
// function's handler starting (warm environments), at a steady 200
// events/s, from the success records of a Kiln queue.
func BenchmarkEventLatency(b *testing.B) {
	s, c := benchKiln(b, eventinvoke.Tuning{})
	createFn(b, c, "stamp", startFn)
	queue := eventinvoke.QueueARN(s.Region, s.Identity.AccountID, "stamps")
	if _, err := c.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("stamp"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(queue)}}}); err != nil {
		b.Fatal(err)
	}
	rc := newRawClient(s)
	const rate, n = 200, 1000
	sent, accepted := make([]int64, n), make([]int64, n)
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := range n {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent[i] = time.Now().UnixNano()
			if st, err := rc.invoke("stamp", true, []byte(fmt.Sprintf(`{"id":%d}`, i))); err != nil || st != 202 {
				b.Errorf("event %d: %d %v", i, st, err)
			}
			accepted[i] = time.Now().UnixNano()
		}()
	}
	wg.Wait()
	var msgs []eventinvoke.QueueMessage
	deadline := time.Now().Add(60 * time.Second)
	for len(msgs) < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		var err error
		if msgs, err = s.Async().ReadQueue(ctx, queue, 1, 0); err != nil {
			b.Fatal(err)
		}
	}
	// The 202's arrival at the client is an upper bound of when Kiln sent
	// it (the handler can start before the client has read the 202: then
	// the latency is negative); the request's sending is a lower bound.
	var fromSend, from202 []time.Duration
	for _, m := range msgs {
		var r struct {
			RequestPayload  struct{ ID int }      `json:"requestPayload"`
			ResponsePayload struct{ Start int64 } `json:"responsePayload"`
		}
		json.Unmarshal(m.Body, &r)
		fromSend = append(fromSend, time.Duration(r.ResponsePayload.Start-sent[r.RequestPayload.ID]))
		from202 = append(from202, time.Duration(r.ResponsePayload.Start-accepted[r.RequestPayload.ID]))
	}
	if len(fromSend) < n {
		b.Fatalf("%d of %d events ran", len(fromSend), n)
	}
	b.ReportMetric(float64(percentile(from202, 0.5).Microseconds()), "202-p50-µs")
	b.ReportMetric(float64(percentile(from202, 0.99).Microseconds()), "202-p99-µs")
	b.ReportMetric(float64(percentile(fromSend, 0.5).Microseconds()), "send-p50-µs")
	b.ReportMetric(float64(percentile(fromSend, 0.99).Microseconds()), "send-p99-µs")
}

// BenchmarkSyncUnderAsync measures sequential warm sync invokes with and
// without async load: 8 clients enqueueing events at 1,000 or 4,000
// events/s, or as fast as they can ("flood"), and the pollers running them.
// Windows of 250 sync invokes alternate between the two (16 of each), so
// that other load on a shared machine weighs on both alike; a window
// without async load starts once the pollers have drained the backlog.
func BenchmarkSyncUnderAsync(b *testing.B) {
	for _, mode := range []struct {
		name string
		rate int // events/s of the enqueueing clients; 0: as fast as they can
	}{{"1000ev/s", 1000}, {"4000ev/s", 4000}, {"flood", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			// For sweeps: KILN_ASYNC_CONCURRENCY, KILN_ASYNC_UNDER_SYNC, KILN_ASYNC_POLLERS (0s are the defaults).
			conc, _ := strconv.Atoi(os.Getenv("KILN_ASYNC_CONCURRENCY"))
			under, _ := strconv.Atoi(os.Getenv("KILN_ASYNC_UNDER_SYNC"))
			pollers, _ := strconv.Atoi(os.Getenv("KILN_ASYNC_POLLERS"))
			s, c := benchKiln(b, eventinvoke.Tuning{Concurrency: conc, ConcurrencyUnderSync: under, Pollers: pollers})
			createFn(b, c, "sync", fntest.EchoGo)
			createFn(b, c, "async", fntest.EchoGo)
			rc := newRawClient(s)
			payload := []byte(`{"message":"hello"}`)
			measure := func(n int) []time.Duration {
				out := make([]time.Duration, n)
				for i := range out {
					t0 := time.Now()
					if st, err := rc.invoke("sync", false, payload); err != nil || st != 200 {
						b.Fatalf("sync invoke: %d %v", st, err)
					}
					out[i] = time.Since(t0)
				}
				return out
			}
			rc.invoke("async", false, payload) // an environment for the async function too
			measure(300)                       // warm

			var on atomic.Bool
			stop := make(chan struct{})
			var sent atomic.Int64
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var tick <-chan time.Time
					if mode.rate > 0 {
						t := time.NewTicker(time.Second * 8 / time.Duration(mode.rate))
						defer t.Stop()
						tick = t.C
					}
					for {
						select {
						case <-stop:
							return
						default:
						}
						if tick != nil {
							<-tick
						}
						if !on.Load() {
							time.Sleep(time.Millisecond)
							continue
						}
						if st, err := rc.invoke("async", true, payload); err == nil && st == 202 {
							sent.Add(1)
						}
					}
				}()
			}
			var alone, loaded []time.Duration
			var asyncTime time.Duration
			for range 16 {
				// Without: wait for the backlog to drain first.
				on.Store(false)
				for deadline := time.Now().Add(30 * time.Second); pollers >= 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					if n, err := s.Async().Backlog(ctx); err == nil && n == 0 {
						break
					}
				}
				time.Sleep(100 * time.Millisecond)
				alone = append(alone, measure(250)...)
				// With.
				on.Store(true)
				time.Sleep(200 * time.Millisecond)
				t0 := time.Now()
				loaded = append(loaded, measure(250)...)
				asyncTime += time.Since(t0) + 200*time.Millisecond
			}
			close(stop)
			wg.Wait()

			p50a, p99a := percentile(alone, 0.5), percentile(alone, 0.99)
			p50f, p99f := percentile(loaded, 0.5), percentile(loaded, 0.99)
			b.ReportMetric(float64(p50a.Microseconds()), "alone-p50-µs")
			b.ReportMetric(float64(p99a.Microseconds()), "alone-p99-µs")
			b.ReportMetric(float64(p50f.Microseconds()), "async-p50-µs")
			b.ReportMetric(float64(p99f.Microseconds()), "async-p99-µs")
			b.ReportMetric(float64(p50f)/float64(p50a), "p50-ratio")
			b.ReportMetric(float64(p99f)/float64(p99a), "p99-ratio")
			b.ReportMetric(float64(sent.Load())/asyncTime.Seconds(), "events/s")
		})
	}
}
