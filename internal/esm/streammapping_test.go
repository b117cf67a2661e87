package esm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	ltypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/server"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// streamGo is an aws-lambda-go function taking a Kinesis or a Kafka event
// in the library's own types (events.KinesisEvent, events.KafkaEvent): it
// fails on a record not as Lambda delivers it and on a batch holding a
// poison record; otherwise it appends "KEY N" per record to $SINK, one
// write per batch, and reports a FailOnce record as a batch item failure
// the first time it sees it (a marker file beside $SINK remembers).
const streamGo = `package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

type failure struct {
	ItemIdentifier string ` + "`json:\"itemIdentifier\"`" + `
}

type response struct {
	BatchItemFailures []failure ` + "`json:\"batchItemFailures\"`" + `
}

func handle(ctx context.Context, raw json.RawMessage) (response, error) {
	var probe struct{ EventSource string ` + "`json:\"eventSource\"`" + ` }
	json.Unmarshal(raw, &probe)
	var data [][]byte
	var ids []string
	if probe.EventSource == "SelfManagedKafka" {
		var ev events.KafkaEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			return response{}, err
		}
		for tp, recs := range ev.Records {
			for _, r := range recs {
				v, err := base64.StdEncoding.DecodeString(r.Value)
				if err != nil || tp != fmt.Sprintf("%s-%d", r.Topic, r.Partition) || r.TimestampType != "CREATE_TIME" || ev.BootstrapServers == "" {
					return response{}, fmt.Errorf("record not as Lambda delivers it: %+v", r)
				}
				data, ids = append(data, v), append(ids, fmt.Sprint(r.Offset))
			}
		}
	} else {
		var ev events.KinesisEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			return response{}, err
		}
		for _, r := range ev.Records {
			if r.EventSource != "aws:kinesis" || r.EventName != "aws:kinesis:record" || r.EventVersion != "1.0" ||
				!strings.HasPrefix(r.EventID, "shardId-") || r.Kinesis.KinesisSchemaVersion != "1.0" || r.Kinesis.SequenceNumber == "" {
				return response{}, fmt.Errorf("record not as Lambda delivers it: %+v", r)
			}
			data, ids = append(data, r.Kinesis.Data), append(ids, r.Kinesis.SequenceNumber)
		}
	}
	var out []byte
	var resp response
	for i, d := range data {
		var p struct {
			Key              string
			N                int
			Poison, FailOnce bool
			Slow             bool
		}
		if err := json.Unmarshal(d, &p); err != nil {
			return resp, err
		}
		if p.Poison {
			return resp, errors.New("poison")
		}
		out = fmt.Appendf(out, "%s %d\n", p.Key, p.N)
		if p.FailOnce {
			marker := fmt.Sprintf("%s.failed-%s-%d", os.Getenv("SINK"), p.Key, p.N)
			if f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL, 0o644); err == nil {
				f.Close()
				resp.BatchItemFailures = append(resp.BatchItemFailures, failure{ids[i]})
			}
		}
	}
	f, err := os.OpenFile(os.Getenv("SINK"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return resp, err
	}
	defer f.Close()
	if _, err = f.Write(out); err != nil {
		return resp, err
	}
	if len(data) > 0 && strings.Contains(string(data[0]), "\"Slow\":true") {
		time.Sleep(300 * time.Millisecond) // written, not yet done: in flight
	}
	return resp, nil
}

func main() { lambda.Start(handle) }
`

// streamFeed is a stream source of the mapping suite: how a mapping names
// it and how records get in.
type streamFeed struct {
	// source sets the mapping's source.
	source func(in *lambda.CreateEventSourceMappingInput)
	// put writes records (JSON payloads) of a partition key, in order;
	// age makes them that much older than now (only where backdates).
	put func(t testing.TB, key string, age time.Duration, payloads ...string)
	// backdates tells whether the writer sets a record's time (Kafka's
	// CreateTime); Kinesis's arrival time is the stream's.
	backdates bool
	// payloadField is where filters see a record's payload (Kinesis's
	// data, Kafka's value).
	payloadField string
}

// streamRig is a Kiln with the stream function and a failure queue.
type streamRig struct {
	s    *server.Server
	lam  *lambda.Client
	sqs  *sqs.Client
	sink string
	fn   string
	dlq  string // URL
	arn  string // the failure queue's ARN
}

var rigs atomic.Int32

func newStreamRig(t testing.TB, s *server.Server) *streamRig {
	t.Helper()
	r := &streamRig{s: s, lam: kilntest.Lambda(s), sqs: kilntest.SQS(s), sink: filepath.Join(t.TempDir(), "sink"),
		fn: fmt.Sprint("stream", rigs.Add(1))}
	kilntest.MustCreate(t, r.lam, &lambda.CreateFunctionInput{FunctionName: &r.fn, Runtime: ltypes.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &ltypes.FunctionCode{ZipFile: fntest.GoFunctionZip(t, streamGo)},
		Environment: &ltypes.Environment{Variables: map[string]string{"SINK": r.sink}}})
	q, err := r.sqs.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(r.fn + "-failed")})
	if err != nil {
		t.Fatal(err)
	}
	r.dlq = aws.ToString(q.QueueUrl)
	a, err := r.sqs.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	r.arn = a.Attributes["QueueArn"]
	return r
}

// lines is what the function wrote: per key, the Ns in the order written.
func (r *streamRig) lines(t testing.TB) map[string][]int {
	b, err := os.ReadFile(r.sink)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string][]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			n, _ := strconv.Atoi(f[1])
			out[f[0]] = append(out[f[0]], n)
		}
	}
	return out
}

// failures reads the failure queue's records until want came or the
// deadline passed.
func (r *streamRig) failures(t testing.TB, want int, wait time.Duration) []map[string]any {
	t.Helper()
	var out []map[string]any
	deadline := time.Now().Add(wait)
	for len(out) < want && time.Now().Before(deadline) {
		m, err := r.sqs.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &r.dlq, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range m.Messages {
			var doc map[string]any
			if err := json.Unmarshal([]byte(aws.ToString(msg.Body)), &doc); err != nil {
				t.Fatal(err)
			}
			out = append(out, doc)
		}
	}
	return out
}

func (r *streamRig) mapping(t testing.TB, feed streamFeed, in *lambda.CreateEventSourceMappingInput) {
	t.Helper()
	in.FunctionName, in.StartingPosition = &r.fn, ltypes.EventSourcePositionTrimHorizon
	in.DestinationConfig = &ltypes.DestinationConfig{OnFailure: &ltypes.OnFailure{Destination: &r.arn}}
	feed.source(in)
	if _, err := r.lam.CreateEventSourceMapping(context.Background(), in); err != nil {
		t.Fatal(err)
	}
}

// waitLines waits until the function wrote n records of every key.
func (r *streamRig) waitLines(t testing.TB, keys []string, n int, wait time.Duration) map[string][]int {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := r.lines(t)
		short := ""
		for _, k := range keys {
			if len(uniq(got[k])) < n {
				short = fmt.Sprintf("%s: %d of %d", k, len(uniq(got[k])), n)
			}
		}
		if short == "" {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("within %v only %s", wait, short)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func uniq(ns []int) map[int]bool {
	m := map[int]bool{}
	for _, n := range ns {
		m[n] = true
	}
	return m
}

func payload(key string, n int, poison bool) string {
	return fmt.Sprintf(`{"Key":%q,"N":%d,"Poison":%v}`, key, n, poison)
}

func failOnce(key string, n int) string {
	return fmt.Sprintf(`{"Key":%q,"N":%d,"FailOnce":true}`, key, n)
}

// testStreamMappings is the suite every stream source's mappings run:
// order per partition key under ParallelizationFactor, a poison record
// isolated by bisect, expired records skipped to the failure destination.
func testStreamMappings(t *testing.T, s *server.Server, open func(t *testing.T, shards int) streamFeed) {
	t.Run("order per key with parallelization 5", func(t *testing.T) {
		r := newStreamRig(t, s)
		feed := open(t, 2)
		r.mapping(t, feed, &lambda.CreateEventSourceMappingInput{BatchSize: aws.Int32(5), ParallelizationFactor: aws.Int32(5)})
		var keys []string
		for k := range 10 {
			keys = append(keys, fmt.Sprint("key", k))
		}
		for i := range 30 {
			for _, k := range keys {
				feed.put(t, k, 0, payload(k, i, false))
			}
		}
		got := r.waitLines(t, keys, 30, 60*time.Second)
		for _, k := range keys {
			for i, n := range got[k] {
				if n != i {
					t.Fatalf("key %s processed as %v, want 0..29 in order once each", k, got[k])
				}
			}
		}
	})

	t.Run("a poison record is isolated by bisect", func(t *testing.T) {
		r := newStreamRig(t, s)
		feed := open(t, 1)
		r.mapping(t, feed, &lambda.CreateEventSourceMappingInput{BatchSize: aws.Int32(8), BisectBatchOnFunctionError: aws.Bool(true),
			MaximumRetryAttempts: aws.Int32(1)})
		for i := range 40 {
			feed.put(t, "k", 0, payload("k", i, i == 13))
		}
		got := r.waitLines(t, []string{"k"}, 39, 60*time.Second)
		want := []int{}
		for i := range 40 {
			if i != 13 {
				want = append(want, i)
			}
		}
		if fmt.Sprint(got["k"]) != fmt.Sprint(want) {
			t.Fatalf("processed %v, want %v", got["k"], want)
		}
		fs := r.failures(t, 1, 30*time.Second)
		if len(fs) != 1 {
			t.Fatalf("failure records %v, want one", fs)
		}
		checkFailure(t, fs[0], "RetryAttemptsExhausted", 2)
	})

	t.Run("filters match the decoded payload", func(t *testing.T) {
		r := newStreamRig(t, s)
		feed := open(t, 1)
		pattern := fmt.Sprintf(`{%q: {"Key": ["keep"]}}`, feed.payloadField)
		r.mapping(t, feed, &lambda.CreateEventSourceMappingInput{FilterCriteria: &ltypes.FilterCriteria{Filters: []ltypes.Filter{{Pattern: &pattern}}}})
		for i := range 10 {
			feed.put(t, "drop", 0, payload("drop", i, false))
			feed.put(t, "keep", 0, payload("keep", i, false))
		}
		got := r.waitLines(t, []string{"keep"}, 10, 60*time.Second)
		if fmt.Sprint(got["keep"]) != "[0 1 2 3 4 5 6 7 8 9]" || len(got["drop"]) != 0 {
			t.Fatalf("processed %v", got)
		}
	})

	t.Run("a reported failure is retried from the lowest failed record", func(t *testing.T) {
		r := newStreamRig(t, s)
		feed := open(t, 1)
		// One batch of all ten: they are written at once and the window
		// waits for them.
		r.mapping(t, feed, &lambda.CreateEventSourceMappingInput{BatchSize: aws.Int32(10), MaximumBatchingWindowInSeconds: aws.Int32(2),
			FunctionResponseTypes: []ltypes.FunctionResponseType{ltypes.FunctionResponseTypeReportBatchItemFailures}})
		var ps []string
		for i := range 10 {
			ps = append(ps, payload("k", i, false))
		}
		ps[6] = failOnce("k", 6)
		feed.put(t, "k", 0, ps...)
		// The batch, then again from the failed record (6) on: the records
		// before it were checkpointed.
		want := "[0 1 2 3 4 5 6 7 8 9 6 7 8 9]"
		deadline := time.Now().Add(60 * time.Second)
		for fmt.Sprint(r.lines(t)["k"]) != want {
			if time.Now().After(deadline) {
				t.Fatalf("processed %v, want %s", r.lines(t)["k"], want)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if fs := r.failures(t, 1, 2*time.Second); len(fs) != 0 {
			t.Fatalf("failure records %v", fs)
		}
	})

	t.Run("records past the maximum age go to the destination", func(t *testing.T) {
		r := newStreamRig(t, s)
		feed := open(t, 1)
		if !feed.backdates {
			t.Skip("the source's records cannot be written old; e2e/streams_test.go waits for them to age")
		}
		for i := range 5 {
			feed.put(t, "old", 2*time.Hour, payload("old", i, false))
		}
		r.mapping(t, feed, &lambda.CreateEventSourceMappingInput{MaximumRecordAgeInSeconds: aws.Int32(60)})
		for i := range 5 {
			feed.put(t, "new", 0, payload("new", i, false))
		}
		r.waitLines(t, []string{"new"}, 5, 60*time.Second)
		if got := r.lines(t)["old"]; len(got) != 0 {
			t.Fatalf("expired records processed: %v", got)
		}
		fs := r.failures(t, 1, 30*time.Second)
		if len(fs) == 0 {
			t.Fatal("no failure record")
		}
		checkFailure(t, fs[0], "RecordAgeExceeded", 0)
	})
}

// checkFailure checks a failure destination's record: Lambda's fields and
// a batch info naming one shard's records.
func checkFailure(t *testing.T, doc map[string]any, condition string, invokes int) {
	t.Helper()
	rc, _ := doc["requestContext"].(map[string]any)
	if rc == nil || rc["condition"] != condition || rc["functionArn"] == nil || rc["approximateInvokeCount"] != float64(invokes) ||
		doc["version"] != "1.0" || doc["timestamp"] == nil {
		t.Fatalf("failure record %v", doc)
	}
	var keys []string
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	info, _ := doc["KafkaBatchInfo"].(map[string]any)
	if info == nil {
		info, _ = doc["KinesisBatchInfo"].(map[string]any)
	}
	if info == nil || info["batchSize"] == nil || info["approximateArrivalOfFirstRecord"] == nil {
		t.Fatalf("failure record without batch info: %v", keys)
	}
	if condition == "RetryAttemptsExhausted" && info["batchSize"] != float64(1) {
		t.Fatalf("the poison record not isolated: %v", info)
	}
}

// TestKafkaMappings runs the mapping suite on topics of franz-go's
// in-process Kafka.
func TestKafkaMappings(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	n := 0
	testStreamMappings(t, s, func(t *testing.T, shards int) streamFeed {
		n++
		topic := fmt.Sprintf("m%d", n)
		servers, cl := kafkaCluster(t, topic, shards)
		return streamFeed{
			source: func(in *lambda.CreateEventSourceMappingInput) {
				in.SelfManagedEventSource = &ltypes.SelfManagedEventSource{Endpoints: map[string][]string{"KAFKA_BOOTSTRAP_SERVERS": servers}}
				in.Topics = []string{topic}
			},
			put: func(t testing.TB, key string, age time.Duration, payloads ...string) {
				var recs []*kgo.Record
				for _, p := range payloads {
					recs = append(recs, &kgo.Record{Key: []byte(key), Value: []byte(p), Timestamp: time.Now().Add(-age)})
				}
				if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
					t.Fatal(err)
				}
			},
			backdates: true, payloadField: "value",
		}
	})
}

// TestKinesisMappings runs the mapping suite on Kiln's streams.
func TestKinesisMappings(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	account := s.Identity.AccountID
	n := 0
	testStreamMappings(t, s, func(t *testing.T, shards int) streamFeed {
		n++
		name := fmt.Sprintf("m%d", n)
		if err := s.Streams().Create(context.Background(), account, name, shards); err != nil {
			t.Fatal(err)
		}
		return streamFeed{
			source: func(in *lambda.CreateEventSourceMappingInput) {
				in.EventSourceArn = aws.String(streams.ARN(s.Region, account, name))
			},
			put: func(t testing.TB, key string, _ time.Duration, payloads ...string) {
				kinesisPut(t, s.Streams(), account, name, key, payloads...)
			},
			payloadField: "data",
		}
	})
}

// TestStreamTakeover: one poller holds a Kafka mapping's four partitions;
// when a second comes they share them two and two (each by its lease); the
// first is cut off from NATS mid-stream
// (it cannot renew its leases nor write checkpoints); the other takes its
// partitions over from their checkpoints: every record is processed, and
// again only if it was in a batch in flight.
func TestStreamTakeover(t *testing.T) {
	s := kilntest.Start(t, server.Config{NATSListen: "127.0.0.1:0"})
	s.Pollers().Close() // the two below are the only pollers
	r := newStreamRig(t, s)
	inv := httpInvoker{r.lam}
	first, firstNC := startPollers(t, s, inv)
	defer first.Close()

	servers, cl := kafkaCluster(t, "takeover", 4)
	const batch = 10
	r.mapping(t, streamFeed{source: func(in *lambda.CreateEventSourceMappingInput) {
		in.SelfManagedEventSource = &ltypes.SelfManagedEventSource{Endpoints: map[string][]string{"KAFKA_BOOTSTRAP_SERVERS": servers}}
		in.Topics = []string{"takeover"}
		in.SelfManagedKafkaEventSourceConfig = &ltypes.SelfManagedKafkaEventSourceConfig{ConsumerGroupId: aws.String("takeover-group")}
	}}, &lambda.CreateEventSourceMappingInput{BatchSize: aws.Int32(batch)})

	waitHeld(t, s.NATSURL, "[4]")
	// A second poller comes: the partitions spread, two and two.
	second, _ := startPollers(t, s, inv)
	defer second.Close()
	waitHeld(t, s.NATSURL, "[2 2]")

	var keys []string
	for k := range 8 {
		keys = append(keys, fmt.Sprint("key", k))
	}
	put := func(from, to int) {
		for i := from; i < to; i++ {
			var recs []*kgo.Record
			for _, k := range keys {
				recs = append(recs, &kgo.Record{Key: []byte(k), Value: []byte(payload(k, i, false))})
			}
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 50)
	r.waitLines(t, keys[:1], 10, 60*time.Second)
	firstNC.Close()
	put(50, 100)
	got := r.waitLines(t, keys, 100, 90*time.Second)
	dups := 0
	for _, k := range keys {
		dups += len(got[k]) - 100
		// A record first processed is the next of its key.
		seen := map[int]bool{}
		for _, n := range got[k] {
			if !seen[n] && n != len(seen) {
				t.Fatalf("key %s out of order: %v", k, got[k])
			}
			seen[n] = true
		}
	}
	// At most the batch in flight on each of the cut-off poller's two
	// partitions comes again.
	if dups > 2*batch {
		t.Fatalf("%d records processed twice, want at most %d", dups, 2*batch)
	}
	t.Logf("%d records processed twice", dups)
	// The checkpoints are the consumer group's offsets too: past every
	// record (offsets count from 0, a committed offset is the next to read).
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(30 * time.Second)
	for {
		offs, err := adm.FetchOffsets(context.Background(), "takeover-group")
		var next int64
		if err == nil {
			offs.Each(func(o kadm.OffsetResponse) { next += o.At })
		}
		if next == int64(len(keys))*100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer group's offsets add up to %d (%v), want %d", next, err, len(keys)*100)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// windowGo is an aws-lambda-go function taking events.KinesisTimeWindowEvent:
// it counts the records of its window in the state it returns (failing on
// a record outside the window), and on the window's final invoke appends
// "START COUNT" to $SINK.
const windowGo = `package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handle(ctx context.Context, ev events.KinesisTimeWindowEvent) (events.KinesisTimeWindowEventResponse, error) {
	var resp events.KinesisTimeWindowEventResponse
	n, _ := strconv.Atoi(ev.State["count"])
	for _, r := range ev.Records {
		at := r.Kinesis.ApproximateArrivalTimestamp.Time
		if at.Before(ev.Window.Start.Time) || !at.Before(ev.Window.End.Time) {
			return resp, fmt.Errorf("record of %v in window %v-%v", at, ev.Window.Start.Time, ev.Window.End.Time)
		}
	}
	if ev.ShardID == "" || ev.EventSourceARN == "" {
		return resp, fmt.Errorf("window event without shard or stream: %+v", ev.TimeWindowProperties)
	}
	n += len(ev.Records)
	if ev.IsFinalInvokeForWindow {
		f, err := os.OpenFile(os.Getenv("SINK"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return resp, err
		}
		defer f.Close()
		_, err = fmt.Fprintf(f, "%d %d\n", ev.Window.Start.Unix(), n)
		return resp, err
	}
	resp.State = map[string]string{"count": strconv.Itoa(n)}
	return resp, nil
}

func main() { lambda.Start(handle) }
`

// TestKinesisTumblingWindows: records put over four seconds into 1 s
// tumbling windows are counted in the state passed from invoke to invoke
// of their window, each window's final invoke seeing its count: every
// record counted once, in more than one window.
func TestKinesisTumblingWindows(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	lam := kilntest.Lambda(s)
	sink := filepath.Join(t.TempDir(), "sink")
	kilntest.MustCreate(t, lam, &lambda.CreateFunctionInput{FunctionName: aws.String("windows"), Runtime: ltypes.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &ltypes.FunctionCode{ZipFile: fntest.GoFunctionZip(t, windowGo)},
		Environment: &ltypes.Environment{Variables: map[string]string{"SINK": sink}}})
	account := s.Identity.AccountID
	if err := s.Streams().Create(context.Background(), account, "windows", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := lam.CreateEventSourceMapping(context.Background(), &lambda.CreateEventSourceMappingInput{FunctionName: aws.String("windows"),
		EventSourceArn: aws.String(streams.ARN(s.Region, account, "windows")), StartingPosition: ltypes.EventSourcePositionTrimHorizon,
		BatchSize: aws.Int32(3), TumblingWindowInSeconds: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		kinesisPut(t, s.Streams(), account, "windows", "k", payload("k", i, false))
		time.Sleep(100 * time.Millisecond)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(sink)
		windows, total := map[string]bool{}, 0
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			if windows[f[0]] {
				t.Fatalf("window %s ended twice:\n%s", f[0], b)
			}
			windows[f[0]] = true
			c, _ := strconv.Atoi(f[1])
			total += c
		}
		if total == n && len(windows) > 1 {
			return
		}
		if total > n || time.Now().After(deadline) {
			t.Fatalf("windows counted %d records, want %d:\n%s", total, n, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHeld waits until the stream mappings' shard leases are held as want
// says (shards per poller, sorted).
func waitHeld(t *testing.T, url, want string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	leases, err := js.KeyValue(context.Background(), "kiln-esm-leases")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		holders := map[string]int{}
		if kl, err := leases.ListKeys(context.Background()); err == nil {
			for k := range kl.Keys() {
				if e, err := leases.Get(context.Background(), k); err == nil && strings.Contains(k, ".") {
					holders[string(e.Value())]++
				}
			}
		}
		counts := slices.Sorted(maps.Values(holders))
		if fmt.Sprint(counts) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("shards held %v, want %s per poller", holders, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStreamRebalance: a poller reads both shards of a Kinesis stream
// under ParallelizationFactor 5 with batches in flight (the function
// takes 300 ms after writing); a second poller comes, and the first gives
// a shard up: it finishes its read in flight before it lets the shard go,
// so every record is processed once, in order per key.
func TestStreamRebalance(t *testing.T) {
	s := kilntest.Start(t, server.Config{NATSListen: "127.0.0.1:0"})
	s.Pollers().Close() // the two below are the only pollers
	r := newStreamRig(t, s)
	inv := httpInvoker{r.lam}
	first, _ := startPollers(t, s, inv)
	defer first.Close()

	account := s.Identity.AccountID
	if err := s.Streams().Create(context.Background(), account, "rebalance", 2); err != nil {
		t.Fatal(err)
	}
	r.mapping(t, streamFeed{source: func(in *lambda.CreateEventSourceMappingInput) {
		in.EventSourceArn = aws.String(streams.ARN(s.Region, account, "rebalance"))
	}}, &lambda.CreateEventSourceMappingInput{BatchSize: aws.Int32(2), ParallelizationFactor: aws.Int32(5)})
	waitHeld(t, s.NATSURL, "[2]")
	var keys []string
	for k := range 10 {
		keys = append(keys, fmt.Sprint("key", k))
	}
	// Each read of a shard takes 10 records, five lanes of a batch of two,
	// for at least 300 ms: 200 records a shard outlast the rebalance.
	const n = 40
	for i := range n {
		for _, k := range keys {
			kinesisPut(t, s.Streams(), account, "rebalance", k, fmt.Sprintf(`{"Key":%q,"N":%d,"Slow":true}`, k, i))
		}
	}
	r.waitLines(t, keys[:1], 2, 60*time.Second)
	second, _ := startPollers(t, s, inv)
	defer second.Close()
	waitHeld(t, s.NATSURL, "[1 1]")
	got := r.waitLines(t, keys, n, 90*time.Second)
	for _, k := range keys {
		if !slices.Equal(got[k], seq(n)) {
			t.Fatalf("key %s processed as %v, want 0..%d in order once each", k, got[k], n-1)
		}
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
