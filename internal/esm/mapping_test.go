package esm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	ltypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/kilntest/rabbitmqtest"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
)

// TestMain lets this test binary be the agent of the environments its
// tests start (the worker re-executes its own binary as the agent).
func TestMain(m *testing.M) {
	agent.Reexec()
	os.Exit(m.Run())
}

// sqsGo is an aws-lambda-go function taking events.SQSEvent, the library's
// own type for Lambda's SQS records: it fails (the whole invoke) on a
// record that does not decode as Lambda's, appends each body to $SINK,
// and reports "fail…" bodies on their first receive as batch item failures.
const sqsGo = `package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	f, err := os.OpenFile(os.Getenv("SINK"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return resp, err
	}
	defer f.Close()
	var out []byte
	for _, r := range ev.Records {
		if r.EventSource != "aws:sqs" || r.MessageId == "" || r.ReceiptHandle == "" || r.Md5OfBody == "" ||
			r.Attributes["ApproximateReceiveCount"] == "" || r.MessageAttributes["kind"].DataType != "String" {
			return resp, fmt.Errorf("record not as Lambda delivers it: %+v", r)
		}
		out = fmt.Appendf(out, "%s %s %s\n", r.Body, r.Attributes["ApproximateReceiveCount"], *r.MessageAttributes["kind"].StringValue)
		if len(r.Body) >= 4 && r.Body[:4] == "fail" && r.Attributes["ApproximateReceiveCount"] == "1" {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: r.MessageId})
		}
	}
	_, err = f.Write(out)
	return resp, err
}

func main() { lambda.Start(handle) }
`

type rig struct {
	lam  *lambda.Client
	sqs  *sqs.Client
	arn  string
	url  string
	sink string
}

// newRig starts a Kiln with fn (a Go function's source) and a queue, mapped
// by a mapping with the given batch size.
func newRig(tb testing.TB, fn string, batch int32, reports bool) *rig {
	tb.Helper()
	return newRigOn(tb, kilntest.Start(tb, server.Config{}), fn, batch, reports)
}

// newRigOn is newRig on a running Kiln.
func newRigOn(tb testing.TB, s *server.Server, fn string, batch int32, reports bool) *rig {
	tb.Helper()
	r := &rig{lam: kilntest.Lambda(s), sqs: kilntest.SQS(s), sink: filepath.Join(tb.TempDir(), "sink")}
	ctx := context.Background()
	kilntest.MustCreate(tb, r.lam, &lambda.CreateFunctionInput{FunctionName: aws.String("fn"), Runtime: ltypes.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &ltypes.FunctionCode{ZipFile: fntest.GoFunctionZip(tb, fn)},
		Environment: &ltypes.Environment{Variables: map[string]string{"SINK": r.sink}}})
	q, err := r.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("in"), Attributes: map[string]string{"VisibilityTimeout": "3"}})
	if err != nil {
		tb.Fatal(err)
	}
	r.url = aws.ToString(q.QueueUrl)
	a, err := r.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl, AttributeNames: []types.QueueAttributeName{"QueueArn"}})
	if err != nil {
		tb.Fatal(err)
	}
	r.arn = a.Attributes["QueueArn"]
	in := &lambda.CreateEventSourceMappingInput{FunctionName: aws.String("fn"), EventSourceArn: &r.arn, BatchSize: &batch}
	if batch > 10 {
		in.MaximumBatchingWindowInSeconds = aws.Int32(1)
	}
	if reports {
		in.FunctionResponseTypes = []ltypes.FunctionResponseType{ltypes.FunctionResponseTypeReportBatchItemFailures}
	}
	if _, err := r.lam.CreateEventSourceMapping(ctx, in); err != nil {
		tb.Fatal(err)
	}
	return r
}

func (r *rig) send(tb testing.TB, bodies []string) {
	tb.Helper()
	for i := 0; i < len(bodies); i += 10 {
		var entries []types.SendMessageBatchRequestEntry
		for j, b := range bodies[i:min(i+10, len(bodies))] {
			entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(b),
				MessageAttributes: map[string]types.MessageAttributeValue{"kind": {DataType: aws.String("String"), StringValue: aws.String("k")}}})
		}
		out, err := r.sqs.SendMessageBatch(context.Background(), &sqs.SendMessageBatchInput{QueueUrl: &r.url, Entries: entries})
		if err != nil || len(out.Failed) > 0 {
			tb.Fatalf("send: %v %+v", err, out)
		}
	}
}

// drained waits until the queue holds nothing, visible or in flight.
func (r *rig) drained(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a, err := r.sqs.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: &r.url,
			AttributeNames: []types.QueueAttributeName{"All"}})
		if err != nil {
			tb.Fatal(err)
		}
		if a.Attributes["ApproximateNumberOfMessages"] == "0" && a.Attributes["ApproximateNumberOfMessagesNotVisible"] == "0" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("queue not drained within %s: %v", timeout, a.Attributes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) seen(tb testing.TB) map[string][]string {
	b, err := os.ReadFile(r.sink)
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			out[f[0]] = append(out[f[0]], f[1])
		}
	}
	return out
}

// TestMappingWithAwsLambdaGo: records decode with aws-lambda-go's own
// events.SQSEvent, every message is processed, and only reported failures
// come back.
func TestMappingWithAwsLambdaGo(t *testing.T) {
	r := newRig(t, sqsGo, 10, true)
	var bodies []string
	for i := range 100 {
		if i%10 == 0 {
			bodies = append(bodies, fmt.Sprint("fail-", i))
		} else {
			bodies = append(bodies, fmt.Sprint("ok-", i))
		}
	}
	r.send(t, bodies)
	r.drained(t, 60*time.Second)
	seen := r.seen(t)
	for _, b := range bodies {
		want := "[1]"
		if strings.HasPrefix(b, "fail") {
			want = "[1 2]"
		}
		if got := fmt.Sprint(seen[b]); got != want {
			t.Errorf("%s: receive counts %s, want %s", b, got, want)
		}
	}
	out, err := r.lam.ListEventSourceMappings(context.Background(), &lambda.ListEventSourceMappingsInput{FunctionName: aws.String("fn")})
	if err != nil || len(out.EventSourceMappings) != 1 {
		t.Fatalf("list: %v %v", out, err)
	}
	if m := out.EventSourceMappings[0]; aws.ToString(m.State) != "Enabled" || aws.ToString(m.LastProcessingResult) != "OK" {
		t.Errorf("mapping %s, last result %s", aws.ToString(m.State), aws.ToString(m.LastProcessingResult))
	}
}

const nopGo = `package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, event json.RawMessage) error { return nil })
}
`

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMapping measures, in the same run, a queue drained by its own
// client (send, receive and delete in batches of 10) and the same number
// of messages sent to a mapped queue and drained by the pollers through a
// function that does nothing (batch size 10). cpu-µs/msg is this process's
// CPU (client, queue service, pollers, invoke path; the function's runtime
// is a process of its own) per message.
func BenchmarkMapping(b *testing.B) {
	const n = 2000
	r := newRig(b, nopGo, 10, false)
	ctx := context.Background()
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = fmt.Sprint("m", i)
	}
	plain, err := r.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("plain")})
	if err != nil {
		b.Fatal(err)
	}
	var queueTime, mapTime, queueCPU, mapCPU time.Duration
	for b.Loop() {
		start, c0 := time.Now(), cpu()
		for i := 0; i < n; i += 10 {
			var entries []types.SendMessageBatchRequestEntry
			for j := range 10 {
				entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: &bodies[i+j]})
			}
			if _, err := r.sqs.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: plain.QueueUrl, Entries: entries}); err != nil {
				b.Fatal(err)
			}
		}
		for got := 0; got < n; {
			out, err := r.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: plain.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
			if err != nil {
				b.Fatal(err)
			}
			var del []types.DeleteMessageBatchRequestEntry
			for j, m := range out.Messages {
				del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), ReceiptHandle: m.ReceiptHandle})
			}
			if len(del) > 0 {
				if _, err := r.sqs.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: plain.QueueUrl, Entries: del}); err != nil {
					b.Fatal(err)
				}
			}
			got += len(out.Messages)
		}
		queueTime += time.Since(start)
		queueCPU += cpu() - c0

		start, c0 = time.Now(), cpu()
		r.send(b, bodies)
		r.drained(b, 5*time.Minute)
		mapTime += time.Since(start)
		mapCPU += cpu() - c0
	}
	msgs := float64(n * b.N)
	b.ReportMetric(msgs/queueTime.Seconds(), "queue-msg/s")
	b.ReportMetric(msgs/mapTime.Seconds(), "mapping-msg/s")
	b.ReportMetric(float64(queueCPU.Microseconds())/msgs, "queue-cpu-µs/msg")
	b.ReportMetric(float64(mapCPU.Microseconds())/msgs, "mapping-cpu-µs/msg")
}

// TestThrottledMappingDropsNothing: with the function's reserved
// concurrency at 0 every invoke is throttled; the pollers keep the batch
// (extending its visibility past the queue's 3 s timeout) and retry until
// the function may run again, and nothing reaches a receive count past 1.
func TestThrottledMappingDropsNothing(t *testing.T) {
	r := newRig(t, sqsGo, 10, false)
	ctx := context.Background()
	if _, err := r.lam.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("fn"),
		ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for i := range 30 {
		bodies = append(bodies, fmt.Sprint("t-", i))
	}
	r.send(t, bodies)
	// Throttled for longer than the visibility timeout.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := r.lam.ListEventSourceMappings(ctx, &lambda.ListEventSourceMappingsInput{FunctionName: aws.String("fn")})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.EventSourceMappings) == 1 && strings.Contains(aws.ToString(out.EventSourceMappings[0].LastProcessingResult), "throttled") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no throttle reported: %+v", out.EventSourceMappings)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(4 * time.Second) // time for a throttled function to run, were it wrongly let through
	if seen := r.seen(t); len(seen) != 0 {
		t.Fatalf("a throttled function ran: %v", seen)
	}
	if _, err := r.lam.DeleteFunctionConcurrency(ctx, &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String("fn")}); err != nil {
		t.Fatal(err)
	}
	r.drained(t, 60*time.Second)
	seen := r.seen(t)
	for _, b := range bodies {
		if len(seen[b]) == 0 {
			t.Errorf("%s never processed", b)
		}
	}
	// The batches held while throttled were not received again meanwhile.
	for b, counts := range seen {
		if fmt.Sprint(counts) != "[1]" {
			t.Errorf("%s: receive counts %v, want [1]: a throttled batch was not held", b, counts)
		}
	}
}

// natsGo writes each NATS record's data to $SINK.
const natsGo = `package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

type event struct {
	Records []struct {
		Subject     string ` + "`json:\"subject\"`" + `
		Data        []byte ` + "`json:\"data\"`" + `
		EventSource string ` + "`json:\"eventSource\"`" + `
	} ` + "`json:\"Records\"`" + `
}

func main() {
	lambda.Start(func(ctx context.Context, ev event) error {
		f, err := os.OpenFile(os.Getenv("SINK"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		var out []byte
		for _, r := range ev.Records {
			if r.EventSource != "kiln:nats" || r.Subject != "orders.new" {
				return fmt.Errorf("record %+v", r)
			}
			out = fmt.Appendf(out, "%s 1 k\n", r.Data)
		}
		_, err = f.Write(out)
		return err
	})
}
`

// startWithSink starts a Kiln with the Go function fn (its source) as
// "fn", writing to the file sink.
func startWithSink(t *testing.T, fn string) (s *server.Server, lam *lambda.Client, sink string) {
	s = kilntest.Start(t, server.Config{})
	lam = kilntest.Lambda(s)
	sink = filepath.Join(t.TempDir(), "sink")
	kilntest.MustCreate(t, lam, &lambda.CreateFunctionInput{FunctionName: aws.String("fn"), Runtime: ltypes.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &ltypes.FunctionCode{ZipFile: fntest.GoFunctionZip(t, fn)},
		Environment: &ltypes.Environment{Variables: map[string]string{"SINK": sink}}})
	return s, lam, sink
}

// TestNATSMapping maps a stream of a user's own NATS (another server,
// over TCP) to a function: every message of the subject is processed, the
// mapping's consumer is left with nothing pending, and deleting the
// mapping removes its consumer.
func TestNATSMapping(t *testing.T) {
	user, err := natsd.Start(natsd.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(user.Shutdown)
	nc, err := nats.Connect(user.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	_, lam, sink := startWithSink(t, natsGo)
	source := func(url string) *ltypes.SelfManagedEventSource {
		return &ltypes.SelfManagedEventSource{Endpoints: map[string][]string{"NATS_SERVERS": {url}}}
	}
	if _, err := lam.CreateEventSourceMapping(ctx, &lambda.CreateEventSourceMappingInput{FunctionName: aws.String("fn"),
		SelfManagedEventSource: source("http://nope"), Queues: []string{"ORDERS"}}); !strings.Contains(fmt.Sprint(err), "InvalidParameterValueException") {
		t.Fatalf("bad server URL: %v", err)
	}
	if _, err := lam.CreateEventSourceMapping(ctx, &lambda.CreateEventSourceMappingInput{FunctionName: aws.String("fn"),
		SelfManagedEventSource: source(user.ClientURL()), Queues: []string{"MISSING"}}); !strings.Contains(fmt.Sprint(err), "InvalidParameterValueException") {
		t.Fatalf("missing stream: %v", err)
	}
	m, err := lam.CreateEventSourceMapping(ctx, &lambda.CreateEventSourceMappingInput{FunctionName: aws.String("fn"),
		SelfManagedEventSource: source(user.ClientURL()), Queues: []string{"ORDERS"}, Topics: []string{"orders.new"},
		BatchSize: aws.Int32(50), MaximumBatchingWindowInSeconds: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(m.State) != "Creating" || fmt.Sprint(m.Queues) != "[ORDERS]" || aws.ToInt32(m.BatchSize) != 50 {
		t.Errorf("created %+v", m)
	}
	const n = 300
	for i := range n {
		js.Publish(ctx, "orders.new", []byte(fmt.Sprint("o-", i)))
		js.Publish(ctx, "orders.old", []byte(fmt.Sprint("x-", i)))
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(sink)
		if strings.Count(string(b), "\n") >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages processed", strings.Count(string(b), "\n"), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(sink)
	for i := range n {
		if !strings.Contains(string(b), fmt.Sprintf("o-%d 1", i)) {
			t.Errorf("o-%d not processed", i)
		}
	}
	if strings.Contains(string(b), "x-") {
		t.Error("a message outside the subject filter was delivered")
	}
	consumer := "kiln-esm-" + aws.ToString(m.UUID)
	for {
		info, err := js.Consumer(ctx, "ORDERS", consumer)
		if err != nil {
			t.Fatal(err)
		}
		ci, err := info.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer left with %d pending, %d unacknowledged", ci.NumPending, ci.NumAckPending)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := lam.DeleteEventSourceMapping(ctx, &lambda.DeleteEventSourceMappingInput{UUID: m.UUID}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := js.Consumer(ctx, "ORDERS", consumer); errors.Is(err, jetstream.ErrConsumerNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted mapping's consumer is still on the stream")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rabbitGo is an aws-lambda-go function taking events.RabbitMQEvent, the
// library's own type for Lambda's RabbitMQ event: it writes each message's
// data to $SINK.
const rabbitGo = `package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, ev events.RabbitMQEvent) error {
		msgs := ev.MessagesByQueue["orders::/"]
		if ev.EventSource != "aws:rmq" || len(ev.MessagesByQueue) != 1 || len(msgs) == 0 {
			return fmt.Errorf("event %+v", ev)
		}
		f, err := os.OpenFile(os.Getenv("SINK"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		var out []byte
		for _, m := range msgs {
			data, err := base64.StdEncoding.DecodeString(m.Data)
			if err != nil || m.BasicProperties.ContentType != "text/plain" || int(m.BasicProperties.BodySize) != len(data) {
				return fmt.Errorf("message %+v: %v", m, err)
			}
			out = fmt.Appendf(out, "%s 1 k\n", data)
		}
		_, err = f.Write(out)
		return err
	})
}
`

// TestRabbitMQMapping maps a queue of a RabbitMQ broker (Debian's
// rabbitmq-server, started by the test) to a function with Amazon MQ's
// mapping shape: bad credentials and a missing queue are refused, the
// password never shows, every message the filter (on the data, decoded)
// matches is processed, the others are deleted, and the queue ends empty.
func TestRabbitMQMapping(t *testing.T) {
	broker := rabbitmqtest.Start(t)
	ch, err := broker.Dial(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("orders", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	s, lam, sink := startWithSink(t, rabbitGo)
	ctx := context.Background()
	arn := "arn:aws:mq:us-east-1:" + s.Identity.AccountID + ":broker:orders:b-1"
	mapping := func(queue, auth string) *lambda.CreateEventSourceMappingInput {
		return &lambda.CreateEventSourceMappingInput{FunctionName: aws.String("fn"), EventSourceArn: aws.String(arn),
			SelfManagedEventSource: &ltypes.SelfManagedEventSource{Endpoints: map[string][]string{"RABBITMQ_BROKERS": {broker.URL}}},
			Queues:                 []string{queue},
			SourceAccessConfigurations: []ltypes.SourceAccessConfiguration{{Type: ltypes.SourceAccessTypeBasicAuth, URI: aws.String(auth)},
				{Type: ltypes.SourceAccessTypeVirtualHost, URI: aws.String("/")}},
			BatchSize: aws.Int32(50), MaximumBatchingWindowInSeconds: aws.Int32(1),
			FilterCriteria: &ltypes.FilterCriteria{Filters: []ltypes.Filter{{Pattern: aws.String(`{"data":{"kind":["work"]}}`)}}}}
	}
	for what, in := range map[string]*lambda.CreateEventSourceMappingInput{
		"wrong password": mapping("orders", "guest:nope"), "missing queue": mapping("missing", "guest:guest"),
		"no password": mapping("orders", "guest"),
	} {
		if _, err := lam.CreateEventSourceMapping(ctx, in); !strings.Contains(fmt.Sprint(err), "InvalidParameterValueException") {
			t.Errorf("%s: %v, want InvalidParameterValueException", what, err)
		}
	}
	m, err := lam.CreateEventSourceMapping(ctx, mapping("orders", "guest:guest"))
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(m.EventSourceArn) != arn || fmt.Sprint(m.Queues) != "[orders]" || len(m.SourceAccessConfigurations) != 2 ||
		aws.ToString(m.SourceAccessConfigurations[0].URI) != "guest:********" {
		t.Errorf("created %+v %+v", m, m.SourceAccessConfigurations)
	}
	const n = 300
	for i := range n {
		for _, kind := range []string{"work", "skip"} {
			body := fmt.Sprintf(`{"kind":%q,"i":%d}`, kind, i)
			if err := ch.PublishWithContext(ctx, "", "orders", false, false, amqp.Publishing{ContentType: "text/plain", Body: []byte(body)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, _ := os.ReadFile(sink)
		q, err := ch.QueueDeclarePassive("orders", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(b), "\n") >= n && q.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages processed, %d left in the queue", strings.Count(string(b), "\n"), n, q.Messages)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(sink)
	for i := range n {
		if !strings.Contains(string(b), fmt.Sprintf(`{"kind":"work","i":%d} 1`, i)) {
			t.Errorf("work %d not processed", i)
		}
	}
	if strings.Contains(string(b), "skip") {
		t.Error("a message no filter matches was delivered")
	}
	got, err := lam.GetEventSourceMapping(ctx, &lambda.GetEventSourceMappingInput{UUID: m.UUID})
	if err != nil || aws.ToString(got.LastProcessingResult) != "OK" || strings.Contains(fmt.Sprint(got.SourceAccessConfigurations), "guest:guest") {
		t.Errorf("mapping %+v: %v", got, err)
	}
}
