package eventinvoke_test

import (
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
)

func TestEventInvokeSuccessToQueue(t *testing.T) {
	k := start(t, fast)
	k.toolkit("ok")
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("ok"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN("done"))}}})

	id := k.event("ok", map[string]any{"action": "echo", "n": 1})
	if len(id) != 36 {
		t.Fatalf("request id %q", id)
	}
	recs := k.records("done", 1)
	r := recs[0]
	if r.Version != "1.0" || r.RequestContext.RequestID != id || r.RequestContext.Condition != eventinvoke.ConditionSuccess ||
		r.RequestContext.ApproximateInvokeCount != 1 || r.RequestContext.FunctionArn != k.functionARN("ok")+":$LATEST" {
		t.Fatalf("record: %+v", r)
	}
	if r.ResponseContext == nil || r.ResponseContext.StatusCode != 200 || r.ResponseContext.ExecutedVersion != "$LATEST" || r.ResponseContext.FunctionError != "" {
		t.Fatalf("responseContext: %+v", r.ResponseContext)
	}
	var req, resp map[string]any
	json.Unmarshal(r.RequestPayload, &req)
	json.Unmarshal(r.ResponsePayload, &resp)
	if req["n"] != 1.0 || resp["n"] != 1.0 {
		t.Fatalf("payloads: %s %s", r.RequestPayload, r.ResponsePayload)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z", r.Timestamp); err != nil {
		t.Fatalf("timestamp %q", r.Timestamp)
	}
}

// A function that always fails is invoked 1+MaximumRetryAttempts times,
// the n-th retry n×RetryBase after the failure before it; then its record
// goes to OnFailure: here a Kiln function, invoked asynchronously with the
// record as its event, whose own OnSuccess is a queue.
func TestRetriesExhaustedToFunction(t *testing.T) {
	k := start(t, fast)
	k.toolkit("fails")
	k.toolkit("collector")
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("collector"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN("collected"))}}})
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("fails"),
		DestinationConfig: &types.DestinationConfig{OnFailure: &types.OnFailure{Destination: aws.String(k.functionARN("collector"))}}})

	start := time.Now()
	id := k.event("fails", map[string]any{"action": "error", "msg": "always broken"})
	outer := k.records("collected", 1)[0]
	elapsed := time.Since(start)
	if outer.RequestContext.Condition != eventinvoke.ConditionSuccess || outer.RequestContext.FunctionArn != k.functionARN("collector")+":$LATEST" {
		t.Fatalf("collector's record: %+v", outer)
	}
	// The collector's event was the failure record; it echoed it back.
	var r eventinvoke.Record
	if err := json.Unmarshal(outer.RequestPayload, &r); err != nil {
		t.Fatal(err)
	}
	if r.RequestContext.RequestID != id || r.RequestContext.Condition != eventinvoke.ConditionRetriesExhausted ||
		r.RequestContext.ApproximateInvokeCount != 3 || r.ResponseContext == nil || r.ResponseContext.FunctionError != "Unhandled" {
		t.Fatalf("failure record: %+v %+v", r.RequestContext, r.ResponseContext)
	}
	var doc struct{ ErrorMessage, ErrorType string }
	json.Unmarshal(r.ResponsePayload, &doc)
	if doc.ErrorMessage != "always broken" {
		t.Fatalf("response payload: %s", r.ResponsePayload)
	}
	// Retries waited 1×RetryBase, then 2×RetryBase.
	if elapsed < 3*fast.RetryBase {
		t.Fatalf("3 invokes in %s: the retries did not wait", elapsed)
	}

	// MaximumRetryAttempts 0: one invoke only; an Update keeps the destination.
	if _, err := k.c.UpdateFunctionEventInvokeConfig(ctx, &lambda.UpdateFunctionEventInvokeConfigInput{FunctionName: aws.String("fails"),
		MaximumRetryAttempts: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	k.event("fails", map[string]any{"action": "error", "msg": "once"})
	outer = k.records("collected", 2)[1]
	json.Unmarshal(outer.RequestPayload, &r)
	if r.RequestContext.ApproximateInvokeCount != 1 || r.RequestContext.Condition != eventinvoke.ConditionRetriesExhausted {
		t.Fatalf("failure record with no retries: %+v", r.RequestContext)
	}
}

// A panic and a runtime that exits are function errors too, retried and
// then sent on with the error document; a later success goes to OnSuccess
// only.
func TestCrashingFunctionToQueue(t *testing.T) {
	k := start(t, fast)
	k.toolkit("crash")
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("crash"), MaximumRetryAttempts: aws.Int32(1),
		DestinationConfig: &types.DestinationConfig{
			OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN("crash-ok"))},
			OnFailure: &types.OnFailure{Destination: aws.String(k.queueARN("crash-failed"))}}})
	k.event("crash", map[string]any{"action": "panic"})
	k.event("crash", map[string]any{"action": "exit", "code": 3})
	recs := k.records("crash-failed", 2)
	for _, r := range recs {
		if r.RequestContext.Condition != eventinvoke.ConditionRetriesExhausted || r.RequestContext.ApproximateInvokeCount != 2 ||
			r.ResponseContext.FunctionError != "Unhandled" || len(r.ResponsePayload) == 0 {
			t.Fatalf("record: %+v %+v %s", r.RequestContext, r.ResponseContext, r.ResponsePayload)
		}
	}
	k.event("crash", map[string]any{"action": "echo"})
	k.records("crash-ok", 1)
	k.quiet("crash-failed", 2, 300*time.Millisecond)
}

// A function that is always throttled (reserved concurrency 0) is retried
// with backoff until its events are MaximumEventAgeInSeconds old, never
// failed for the throttle before; then OnFailure and the dead-letter queue
// get them.
func TestEventAgeExceededAndDeadLetterQueue(t *testing.T) {
	k := start(t, fast)
	k.toolkit("closed")
	if _, err := k.c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("closed"),
		DeadLetterConfig: &types.DeadLetterConfig{TargetArn: aws.String(k.queueARN("dlq"))}}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("closed"),
		ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("closed"), MaximumEventAgeInSeconds: aws.Int32(60),
		DestinationConfig: &types.DestinationConfig{OnFailure: &types.OnFailure{Destination: aws.String(k.queueARN("too-old"))}}})

	start := time.Now()
	id := k.event("closed", map[string]any{"action": "echo", "tag": "late"})
	r := k.records("too-old", 1)[0]
	age := time.Since(start)
	if r.RequestContext.RequestID != id || r.RequestContext.Condition != eventinvoke.ConditionEventAgeExceeded || r.RequestContext.ApproximateInvokeCount != 0 {
		t.Fatalf("record: %+v", r.RequestContext)
	}
	if want := 60 * fast.EventAgeUnit; age < want {
		t.Fatalf("failed after %s, before its maximum age %s", age, want)
	}
	dl := k.messages("dlq", 1)[0]
	var ev map[string]any
	json.Unmarshal(dl.Body, &ev)
	if ev["tag"] != "late" || dl.Header.Get("RequestID") != id || dl.Header.Get("ErrorCode") == "" {
		t.Fatalf("dead letter: %v %s", dl.Header, dl.Body)
	}
}

// A function error with no OnFailure goes to the dead-letter queue alone,
// as the original event with the error as attributes.
func TestDeadLetterQueueOnFunctionError(t *testing.T) {
	k := start(t, fast)
	k.toolkit("dl")
	if _, err := k.c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("dl"),
		DeadLetterConfig: &types.DeadLetterConfig{TargetArn: aws.String(k.queueARN("dead"))}}); err != nil {
		t.Fatal(err)
	}
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("dl"), MaximumRetryAttempts: aws.Int32(1)})
	id := k.event("dl", map[string]any{"action": "error", "msg": "to the dlq"})
	m := k.messages("dead", 1)[0]
	if m.Header.Get("RequestID") != id || m.Header.Get("ErrorMessage") != "to the dlq" || m.Header.Get("ErrorCode") != "200" {
		t.Fatalf("dead letter headers: %v", m.Header)
	}
	var ev map[string]any
	if json.Unmarshal(m.Body, &ev); ev["msg"] != "to the dlq" {
		t.Fatalf("dead letter body: %s", m.Body)
	}
}

// Settings are per qualifier: an event sent to an alias runs the alias's
// version and follows the alias's config; one sent unqualified, $LATEST's.
func TestConfigPerQualifier(t *testing.T) {
	k := start(t, fast)
	k.toolkit("q")
	if _, err := k.c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("q")}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.c.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("q"), Name: aws.String("live"), FunctionVersion: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("q"), Qualifier: aws.String("live"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN("live-ok"))}}})
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("q"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN("latest-ok"))}}})
	k.event("q:live", map[string]any{"via": "alias"})
	k.event("q", map[string]any{"via": "latest"})
	live := k.records("live-ok", 1)[0]
	latest := k.records("latest-ok", 1)[0]
	if live.RequestContext.FunctionArn != k.functionARN("q")+":live" || live.ResponseContext.ExecutedVersion != "1" || string(live.RequestPayload) != `{"via":"alias"}` {
		t.Fatalf("alias record: %+v %+v %s", live.RequestContext, live.ResponseContext, live.RequestPayload)
	}
	if latest.RequestContext.FunctionArn != k.functionARN("q")+":$LATEST" || latest.ResponseContext.ExecutedVersion != "$LATEST" {
		t.Fatalf("$LATEST record: %+v %+v", latest.RequestContext, latest.ResponseContext)
	}
	k.quiet("live-ok", 1, 200*time.Millisecond)
}

// Queued events give way to sync invokes on a busy machine, but only for
// MaxDeferral: while one client invokes synchronously without pause, every
// event still runs, well before the sync load ends.
func TestEventsRunUnderContinuousSyncLoad(t *testing.T) {
	tune := fast
	tune.MaxDeferral = 300 * time.Millisecond
	k := start(t, tune)
	k.toolkit("sync")
	k.toolkit("queued")
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("queued"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN("ran"))}}})
	stop := make(chan struct{})
	syncDone := make(chan int)
	var synced atomic.Int64
	go func() {
		n := 0
		defer func() { syncDone <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := k.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("sync"), Payload: []byte(`{"action":"echo"}`)}); err != nil {
				t.Error(err)
				return
			}
			n++
			synced.Store(int64(n))
		}
	}()
	wait.For(t, "sync load under way", func() error {
		if synced.Load() == 0 {
			return errors.New("no sync invoke done yet")
		}
		return nil
	})
	const events = 20
	for i := range events {
		k.event("queued", map[string]any{"action": "echo", "n": i})
	}
	recs := k.records("ran", events) // fails the test if they do not all run
	close(stop)
	n := <-syncDone
	if len(recs) != events || n == 0 {
		t.Fatalf("%d events ran beside %d sync invokes", len(recs), n)
	}
	t.Logf("%d events ran while %d sync invokes kept going", len(recs), n)
}
