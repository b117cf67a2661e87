package eventinvoke_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
)

// sendEvents sends n Event invokes from 8 clients at once; the event's "id"
// is its index.
func (k *kiln) sendEvents(function string, n int, event func(i int) map[string]any) {
	k.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				b, _ := json.Marshal(event(i))
				if _, err := k.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(function), InvocationType: types.InvocationTypeEvent, Payload: b}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		k.t.Fatal(err)
	}
}

// distinctIDs counts the distinct request-payload ids of success records.
func distinctIDs(t *testing.T, recs []eventinvoke.Record) map[int]int {
	ids := map[int]int{}
	for _, r := range recs {
		var ev struct{ ID int }
		if err := json.Unmarshal(r.RequestPayload, &ev); err != nil {
			t.Fatal(err)
		}
		ids[ev.ID]++
	}
	return ids
}

// A function with reserved concurrency 2 and a burst of events: the pollers
// throttle back (the sync path answers 429 beyond 2) and every event
// succeeds eventually, none failed for the throttle.
func TestReservedConcurrencyThrottlesBack(t *testing.T) {
	k := start(t, fast)
	k.toolkit("narrow")
	if _, err := k.c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("narrow"),
		ReservedConcurrentExecutions: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("narrow"), MaximumEventAgeInSeconds: aws.Int32(3600),
		DestinationConfig: &types.DestinationConfig{
			OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN("narrow-ok"))},
			OnFailure: &types.OnFailure{Destination: aws.String(k.queueARN("narrow-failed"))}}})
	const n = 30
	k.sendEvents("narrow", n, func(i int) map[string]any { return map[string]any{"action": "sleep", "ms": 50, "id": i} })
	// Meanwhile, sync invokes of another function are not throttled.
	k.toolkit("neighbour")
	for range 5 {
		out, err := k.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("neighbour"), Payload: []byte(`{}`)})
		if err != nil || out.FunctionError != nil {
			t.Fatalf("sync invoke beside the async burst: %v", err)
		}
	}
	recs := k.records("narrow-ok", n)
	if ids := distinctIDs(t, recs); len(ids) != n {
		t.Fatalf("%d distinct events succeeded, want %d", len(ids), n)
	}
	for _, r := range recs {
		if r.RequestContext.ApproximateInvokeCount != 1 {
			t.Fatalf("a throttled event counted %d invokes", r.RequestContext.ApproximateInvokeCount)
		}
	}
	k.quiet("narrow-failed", 0, 100*time.Millisecond)
}

// A function whose backlog on its shared queue grows gets a queue of its
// own: its new events go there, those on the shared queue move over, and
// its neighbours on the shared queue are not held up. Once idle, the
// dedicated queue retires and events go to the shared queue again.
func TestDedicatedQueue(t *testing.T) {
	tune := fast
	tune.Shards = 1 // one shared queue: every function is a neighbour
	tune.DedicateBacklog = 20
	tune.RetireAfter = 500 * time.Millisecond
	k := start(t, tune)
	k.toolkit("heavy")
	k.toolkit("light")
	if _, err := k.c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("heavy"),
		ReservedConcurrentExecutions: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"heavy", "light"} {
		k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String(f), MaximumEventAgeInSeconds: aws.Int32(3600),
			DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN(f + "-ok"))}}})
	}
	const n = 200
	k.sendEvents("heavy", n, func(i int) map[string]any { return map[string]any{"action": "sleep", "ms": 20, "id": i} })

	dedicated := func() *eventinvoke.QueueInfo {
		for _, q := range k.s.Async().Queues() {
			if q.Dedicated && q.Function == "heavy" {
				return &q
			}
		}
		return nil
	}
	wait.For(t, fmt.Sprintf("a dedicated queue for a backlog of %d", n), func() error {
		if dedicated() == nil {
			return fmt.Errorf("queues %+v", k.s.Async().Queues())
		}
		return nil
	})
	if q := dedicated(); q.State != "active" || q.Subject != "kiln.events.d."+k.s.Identity.AccountID+".heavy" {
		t.Fatalf("dedicated queue: %+v", q)
	}
	// The neighbour's events pass the heavy backlog.
	start := time.Now()
	k.event("light", map[string]any{"id": 1})
	k.records("light-ok", 1)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the neighbour's event waited %s behind the heavy backlog", took)
	}
	recs := k.records("heavy-ok", n)
	if ids := distinctIDs(t, recs); len(ids) != n {
		t.Fatalf("%d distinct heavy events succeeded, want %d", len(ids), n)
	}
	// Idle: it retires, and later events still run.
	wait.For(t, "the idle dedicated queue retires", func() error {
		if q := dedicated(); q != nil {
			return fmt.Errorf("still %+v", q)
		}
		return nil
	})
	k.event("heavy", map[string]any{"id": n})
	k.records("heavy-ok", n+1)
}

// Event invokes are authenticated like sync ones.
func TestEventInvokeNeedsSignature(t *testing.T) {
	k := start(t, fast)
	k.toolkit("auth")
	req, _ := http.NewRequest(http.MethodPost, k.s.Endpoint+"/2015-03-31/functions/auth/invocations", strings.NewReader(`{}`))
	req.Header.Set("X-Amz-Invocation-Type", "Event")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unsigned Event invoke: %s", resp.Status)
	}
	_ = fmt.Sprint()
}
