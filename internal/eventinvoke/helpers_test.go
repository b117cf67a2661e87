package eventinvoke_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/server"
)

// TestMain lets this test binary be the agent of the environments its
// tests start (the worker re-executes its own binary as the agent).
func TestMain(m *testing.M) {
	agent.Reexec()
	os.Exit(m.Run())
}

var ctx = context.Background()

// fast is the tuning of tests: Lambda's timings scaled down about 500×.
var fast = eventinvoke.Tuning{
	RetryBase:       100 * time.Millisecond,
	ThrottleBase:    20 * time.Millisecond,
	ThrottleMax:     200 * time.Millisecond,
	EventAgeUnit:    10 * time.Millisecond, // 60 s of MaximumEventAgeInSeconds last 600 ms
	ManagerInterval: 100 * time.Millisecond,
	LeaseTTL:        time.Second,
	AckWait:         2 * time.Second,
}

// kiln is a real in-process Kiln and a Lambda client of its account.
type kiln struct {
	t *testing.T
	s *server.Server
	c *lambda.Client
}

func start(t *testing.T, tune eventinvoke.Tuning) *kiln {
	s := kilntest.Start(t, server.Config{Async: tune})
	return &kiln{t: t, s: s, c: kilntest.Lambda(s)}
}

// toolkit creates the multi-behaviour aws-lambda-go test function.
func (k *kiln) toolkit(name string) {
	k.t.Helper()
	kilntest.MustCreate(k.t, k.c, &lambda.CreateFunctionInput{
		FunctionName: aws.String(name), Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"),
		Code: &types.FunctionCode{ZipFile: fntest.GoFunctionZip(k.t, fntest.ToolkitGo)}, Timeout: aws.Int32(10),
	})
}

func (k *kiln) queueARN(name string) string {
	return eventinvoke.QueueARN(k.s.Region, k.s.Identity.AccountID, name)
}

func (k *kiln) functionARN(name string) string {
	return fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", k.s.Region, k.s.Identity.AccountID, name)
}

// event sends an Event invoke and returns its request id.
func (k *kiln) event(function string, payload any) string {
	k.t.Helper()
	b, _ := json.Marshal(payload)
	out, err := k.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(function), InvocationType: types.InvocationTypeEvent, Payload: b})
	if err != nil {
		k.t.Fatalf("event invoke of %s: %v", function, err)
	}
	if out.StatusCode != 202 {
		k.t.Fatalf("event invoke of %s: status %d", function, out.StatusCode)
	}
	return requestID(out)
}

// requestID is the X-Amzn-Requestid of a response, as the SDK keeps it.
func requestID(out *lambda.InvokeOutput) string {
	id, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata)
	return id
}

func (k *kiln) putConfig(in *lambda.PutFunctionEventInvokeConfigInput) {
	k.t.Helper()
	if _, err := k.c.PutFunctionEventInvokeConfig(ctx, in); err != nil {
		k.t.Fatalf("PutFunctionEventInvokeConfig: %v", err)
	}
}

// records waits for n messages on a Kiln queue and decodes them as
// invocation records, in queue order.
func (k *kiln) records(queue string, n int) []eventinvoke.Record {
	k.t.Helper()
	msgs := k.messages(queue, n)
	out := make([]eventinvoke.Record, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.Body, &out[i]); err != nil {
			k.t.Fatalf("record %s: %v", m.Body, err)
		}
	}
	return out
}

// messages waits (up to wait.Deadline: an event's run is a cold start and
// more, and seconds on a loaded host) for n messages on a Kiln queue.
func (k *kiln) messages(queue string, n int) []eventinvoke.QueueMessage {
	k.t.Helper()
	deadline := time.Now().Add(wait.Deadline)
	for {
		msgs, err := k.s.Async().ReadQueue(ctx, k.queueARN(queue), 1, 0)
		if err != nil {
			k.t.Fatal(err)
		}
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("queue %s: %d messages after %s, want %d", queue, len(msgs), wait.Deadline, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quiet asserts that queue holds exactly n messages for a while.
func (k *kiln) quiet(queue string, n int, d time.Duration) {
	k.t.Helper()
	time.Sleep(d)
	msgs, err := k.s.Async().ReadQueue(ctx, k.queueARN(queue), 1, 0)
	if err != nil {
		k.t.Fatal(err)
	}
	if len(msgs) != n {
		k.t.Fatalf("queue %s: %d messages, want %d", queue, len(msgs), n)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}
