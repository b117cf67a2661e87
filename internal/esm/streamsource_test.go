package esm_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// streamUnderTest is a stream source of the conformance suite and how to
// feed it.
type streamUnderTest struct {
	src esm.StreamSource
	// put writes records of a partition key, in order.
	put func(t *testing.T, key string, data ...string)
	// payload is a record's data as put.
	payload func(t *testing.T, r esm.StreamRecord) string
	// checkEvent checks an invoke's event for records of a shard.
	checkEvent func(t *testing.T, shard string, ev map[string]any, n int)
}

// testStreamSource is the conformance suite every StreamSource runs: what
// the stream pollers rely on for ordered, checkpointed delivery. open
// makes a new stream of shards shards.
func testStreamSource(t *testing.T, open func(t *testing.T, shards int) streamUnderTest) {
	ctx := context.Background()
	// readAll reads each shard from after its checkpoint until n records
	// came or wait passed.
	readAll := func(t *testing.T, s streamUnderTest, from map[string]string, n int, wait time.Duration) map[string][]esm.StreamRecord {
		t.Helper()
		shards, err := s.src.Shards(ctx)
		if err != nil {
			t.Fatal(err)
		}
		readers := map[string]esm.ShardReader{}
		for _, sh := range shards {
			r, err := s.src.Open(ctx, sh, from[sh])
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			readers[sh] = r
		}
		out, got := map[string][]esm.StreamRecord{}, 0
		deadline := time.Now().Add(wait)
		for got < n && time.Now().Before(deadline) {
			for sh, r := range readers {
				recs, err := r.Read(ctx, 1000, 100*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				out[sh] = append(out[sh], recs...)
				got += len(recs)
			}
		}
		return out
	}

	t.Run("shards are read in order from their start", func(t *testing.T) {
		s := open(t, 3)
		shards, err := s.src.Shards(ctx)
		if err != nil || len(shards) != 3 {
			t.Fatalf("shards %v %v, want 3", shards, err)
		}
		keys := []string{"a", "b", "c", "d", "e", "f"}
		for i := range 20 {
			for _, k := range keys {
				s.put(t, k, fmt.Sprintf(`{"key":%q,"n":%d}`, k, i))
			}
		}
		got := readAll(t, s, nil, 120, 30*time.Second)
		total := 0
		for sh, recs := range got {
			total += len(recs)
			next := map[string]int{}
			for i, r := range recs {
				var d struct {
					Key string
					N   int
				}
				if err := json.Unmarshal([]byte(s.payload(t, r)), &d); err != nil {
					t.Fatalf("payload of %+v: %v", r, err)
				}
				if d.Key != r.Key || d.N != next[d.Key] {
					t.Fatalf("shard %s: record %d is %s #%d (key %q), want #%d", sh, i, d.Key, d.N, r.Key, next[d.Key])
				}
				next[d.Key]++
				if r.ID == "" || r.Position == "" || !json.Valid(r.Data) || time.Since(r.Arrival) > time.Minute || r.Arrival.After(time.Now().Add(time.Second)) {
					t.Fatalf("record %+v", r)
				}
				if f, ok := r.Filter.(map[string]any); !ok || len(f) == 0 {
					t.Fatalf("filter view %#v", r.Filter)
				}
			}
			if len(recs) > 0 {
				s.checkEvent(t, sh, s.src.Event(sh, recs), len(recs))
			}
		}
		if total != 120 {
			t.Fatalf("read %d records, want 120", total)
		}
	})

	t.Run("reading resumes after a checkpoint", func(t *testing.T) {
		s := open(t, 1)
		for i := range 10 {
			s.put(t, "k", fmt.Sprintf(`{"n":%d}`, i))
		}
		shards, _ := s.src.Shards(ctx)
		first := readAll(t, s, nil, 10, 30*time.Second)[shards[0]]
		if len(first) != 10 {
			t.Fatalf("read %d, want 10", len(first))
		}
		again := readAll(t, s, map[string]string{shards[0]: first[3].Position}, 6, 30*time.Second)[shards[0]]
		if len(again) != 6 || again[0].Position != first[4].Position || again[5].Position != first[9].Position {
			t.Fatalf("after %s: %d records from %v", first[3].Position, len(again), again)
		}
		if more := readAll(t, s, map[string]string{shards[0]: first[9].Position}, 1, time.Second)[shards[0]]; len(more) != 0 {
			t.Fatalf("after the last record: %v", more)
		}
	})

	t.Run("starting positions", func(t *testing.T) {
		s := open(t, 1)
		shards, _ := s.src.Shards(ctx)
		sh := shards[0]
		empty, err := s.src.Start(ctx, sh, esm.Latest, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		s.put(t, "k", `{"n":0}`, `{"n":1}`)
		// A timestamp strictly between the two puts' arrival times (the scenario).
		time.Sleep(20 * time.Millisecond)
		mid := time.Now()
		time.Sleep(20 * time.Millisecond)
		latest, err := s.src.Start(ctx, sh, esm.Latest, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		s.put(t, "k", `{"n":2}`)
		for _, c := range []struct {
			pos  string
			at   time.Time
			want string
		}{
			{esm.TrimHorizon, time.Time{}, "0,1,2"},
			{esm.Latest, time.Time{}, "2"},
			{esm.AtTimestamp, mid, "2"},
			{esm.AtTimestamp, mid.Add(-time.Hour), "0,1,2"},
		} {
			cp, err := s.src.Start(ctx, sh, c.pos, c.at)
			if c.pos == esm.Latest {
				cp = latest
			}
			if err != nil {
				t.Fatal(err)
			}
			recs := readAll(t, s, map[string]string{sh: cp}, len(c.want)/2+1, 30*time.Second)[sh]
			var ns string
			for i, r := range recs {
				var d struct{ N int }
				json.Unmarshal([]byte(s.payload(t, r)), &d)
				if i > 0 {
					ns += ","
				}
				ns += strconv.Itoa(d.N)
			}
			if ns != c.want {
				t.Errorf("%s %v: read %q, want %q", c.pos, c.at, ns, c.want)
			}
		}
		// LATEST of an empty shard reads everything put after it.
		if recs := readAll(t, s, map[string]string{sh: empty}, 3, 30*time.Second)[sh]; len(recs) != 3 {
			t.Errorf("LATEST of the empty shard read %d records, want 3", len(recs))
		}
	})
}

// TestKafkaSource runs the stream source suite on a topic of franz-go's
// in-process Kafka (kfake: the Kafka protocol, served on 127.0.0.1).
func TestKafkaSource(t *testing.T) {
	n := 0
	testStreamSource(t, func(t *testing.T, shards int) streamUnderTest {
		n++
		topic := fmt.Sprintf("t%d", n)
		servers, produce := kafkaTopic(t, topic, shards)
		src, err := esm.OpenKafka(servers, topic, "group-"+topic)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(src.Close)
		return streamUnderTest{src: src,
			put: func(t *testing.T, key string, data ...string) { produce(t, key, data...) },
			payload: func(t *testing.T, r esm.StreamRecord) string {
				var kr struct{ Value *string }
				if err := json.Unmarshal(r.Data, &kr); err != nil || kr.Value == nil {
					t.Fatalf("record %s: %v", r.Data, err)
				}
				b, err := base64.StdEncoding.DecodeString(*kr.Value)
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			},
			checkEvent: func(t *testing.T, shard string, ev map[string]any, n int) {
				b, _ := json.Marshal(ev)
				var doc struct {
					EventSource      string
					BootstrapServers string
					Records          map[string][]struct {
						Topic         string
						Partition     int32
						Offset        *int64
						Timestamp     int64
						TimestampType string
						Key, Value    string
						Headers       []map[string][]int
					}
				}
				if err := json.Unmarshal(b, &doc); err != nil {
					t.Fatal(err)
				}
				recs := doc.Records[shard]
				if doc.EventSource != "SelfManagedKafka" || doc.BootstrapServers != servers[0] || len(doc.Records) != 1 || len(recs) != n {
					t.Fatalf("event %s", b)
				}
				r := recs[0]
				if shard != fmt.Sprintf("%s-%d", r.Topic, r.Partition) || r.Offset == nil || r.TimestampType != "CREATE_TIME" ||
					time.Since(time.UnixMilli(r.Timestamp)) > time.Minute || r.Key == "" || len(r.Headers) != 1 || string(rune(r.Headers[0]["source"][0])) != "t" {
					t.Fatalf("record %+v", r)
				}
			},
		}
	})
}

// kafkaTopic starts an in-process Kafka with a topic of partitions
// partitions; produce writes records of a key (header source=test).
func kafkaTopic(t testing.TB, topic string, partitions int) (servers []string, produce func(t testing.TB, key string, data ...string)) {
	t.Helper()
	servers, cl := kafkaCluster(t, topic, partitions)
	return servers, func(t testing.TB, key string, data ...string) {
		t.Helper()
		var recs []*kgo.Record
		for _, d := range data {
			recs = append(recs, &kgo.Record{Key: []byte(key), Value: []byte(d), Headers: []kgo.RecordHeader{{Key: "source", Value: []byte("test")}}})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// kafkaCluster starts franz-go's in-process Kafka (kfake, on 127.0.0.1)
// with a topic, and a client producing to it.
func kafkaCluster(t testing.TB, topic string, partitions int) ([]string, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return c.ListenAddrs(), cl
}

// TestKinesisSource runs the stream source suite on Kiln's streams (the
// stream service on an embedded JetStream, read in process).
func TestKinesisSource(t *testing.T) {
	svc, err := streams.New(context.Background(), streams.Config{NATS: natstest.Connect(t), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	const account = "123456789012"
	n := 0
	testStreamSource(t, func(t *testing.T, shards int) streamUnderTest {
		n++
		name := fmt.Sprintf("s%d", n)
		if err := svc.Create(context.Background(), account, name, shards); err != nil {
			t.Fatal(err)
		}
		arn := streams.ARN("us-east-1", account, name)
		src, err := esm.OpenKinesis(svc, arn, "arn:aws:lambda:us-east-1:"+account+":event-source-mapping:m")
		if err != nil {
			t.Fatal(err)
		}
		return streamUnderTest{src: src,
			put: func(t *testing.T, key string, data ...string) { kinesisPut(t, svc, account, name, key, data...) },
			payload: func(t *testing.T, r esm.StreamRecord) string {
				var kr events.KinesisEventRecord
				if err := json.Unmarshal(r.Data, &kr); err != nil {
					t.Fatalf("record %s: %v", r.Data, err)
				}
				return string(kr.Kinesis.Data)
			},
			checkEvent: func(t *testing.T, shard string, ev map[string]any, n int) {
				b, _ := json.Marshal(ev)
				var doc events.KinesisEvent
				if err := json.Unmarshal(b, &doc); err != nil || len(doc.Records) != n {
					t.Fatalf("event %s: %v", b, err)
				}
				r := doc.Records[0]
				if r.EventSource != "aws:kinesis" || r.EventName != "aws:kinesis:record" || r.EventVersion != "1.0" ||
					r.EventID != shard+":"+r.Kinesis.SequenceNumber || r.EventSourceArn != arn || r.AwsRegion != "us-east-1" ||
					r.InvokeIdentityArn == "" || r.Kinesis.KinesisSchemaVersion != "1.0" || r.Kinesis.PartitionKey == "" ||
					time.Since(r.Kinesis.ApproximateArrivalTimestamp.Time) > time.Minute {
					t.Fatalf("record %+v", r)
				}
			},
		}
	})
}

// kinesisPut writes records of a key to a Kiln stream.
func kinesisPut(t testing.TB, svc *streams.Service, account, name, key string, data ...string) {
	t.Helper()
	var entries []streams.PutEntry
	for _, d := range data {
		entries = append(entries, streams.PutEntry{PartitionKey: key, Data: []byte(d)})
	}
	res, err := svc.Put(context.Background(), account, name, entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.ErrorCode != "" {
			t.Fatalf("put: %+v", r)
		}
	}
}
