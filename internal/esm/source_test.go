package esm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/eventfilter"
	"github.com/kiln-dev/kiln/internal/kilntest/rabbitmqtest"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
)

// sourceUnderTest is a source of the conformance suite and how to feed it.
type sourceUnderTest struct {
	src  Source
	send func(t *testing.T, bodies ...string)
	body func(Record) string
}

// testSource is the conformance suite every Source runs: what the pollers
// rely on for at-least-once delivery.
func testSource(t *testing.T, open func(t *testing.T, name string, hold time.Duration) sourceUnderTest) {
	const hold = time.Second
	ctx := context.Background()
	receiveAll := func(t *testing.T, s sourceUnderTest, n int, wait time.Duration) []Record {
		t.Helper()
		var got []Record
		deadline := time.Now().Add(wait)
		for len(got) < n && time.Now().Before(deadline) {
			recs, err := s.src.Receive(ctx, n-len(got), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, recs...)
		}
		return got
	}

	t.Run("deleted records never come back", func(t *testing.T) {
		s := open(t, "deleted", hold)
		s.send(t, "a", "b", "c", "d", "e")
		got := receiveAll(t, s, 5, 20*time.Second)
		seen := map[string]bool{}
		for _, r := range got {
			seen[s.body(r)] = true
			if r.ID == "" || !json.Valid(r.Data) {
				t.Errorf("record %+v", r)
			}
		}
		if len(got) != 5 || len(seen) != 5 {
			t.Fatalf("received %d records (%v), want a to e once each", len(got), seen)
		}
		if err := s.src.Delete(ctx, got); err != nil {
			t.Fatal(err)
		}
		if again := receiveAll(t, s, 1, 3*hold); len(again) != 0 {
			t.Fatalf("deleted records came back: %d", len(again))
		}
	})

	t.Run("records not deleted come back after the hold, same id", func(t *testing.T) {
		s := open(t, "undeleted", hold)
		s.send(t, "x")
		first := receiveAll(t, s, 1, 20*time.Second)
		if len(first) != 1 {
			t.Fatalf("received %d", len(first))
		}
		if recs, err := s.src.Receive(ctx, 1, 0); err != nil || len(recs) != 0 {
			t.Fatalf("a held record was received again at once: %v %v", recs, err)
		}
		again := receiveAll(t, s, 1, 20*time.Second)
		if len(again) != 1 || again[0].ID != first[0].ID || s.body(again[0]) != "x" {
			t.Fatalf("after the hold: %+v, want the record %s again", again, first[0].ID)
		}
		if err := s.src.Delete(ctx, again); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("extend keeps records hidden", func(t *testing.T) {
		s := open(t, "extended", hold)
		s.send(t, "y")
		got := receiveAll(t, s, 1, 20*time.Second)
		if len(got) != 1 {
			t.Fatalf("received %d", len(got))
		}
		if err := s.src.Extend(ctx, got, 4*hold); err != nil {
			t.Fatal(err)
		}
		if recs, err := s.src.Receive(ctx, 1, 2*hold); err != nil || len(recs) != 0 {
			t.Fatalf("an extended record came back within the extension: %v %v", recs, err)
		}
		if err := s.src.Delete(ctx, got); err != nil {
			t.Fatal(err)
		}
	})
}

// startQueues runs a queue service on an embedded JetStream.
func startQueues(t *testing.T, region string) *queues.Service {
	ns, err := natsd.Start(natsd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	qs, err := queues.New(context.Background(), queues.Config{NATS: nc, Region: region})
	if err != nil {
		t.Fatal(err)
	}
	return qs
}

// TestQueueSource runs the conformance suite on the Kiln queue source,
// on an embedded JetStream.
func TestQueueSource(t *testing.T) {
	ctx := context.Background()
	qs := startQueues(t, "us-east-1")
	testSource(t, func(t *testing.T, name string, hold time.Duration) sourceUnderTest {
		attrs := map[string]string{"VisibilityTimeout": fmt.Sprint(int(hold / time.Second))}
		if err := qs.Create(ctx, "123456789012", name, attrs, nil); err != nil {
			t.Fatal(err)
		}
		src, err := OpenQueue(ctx, qs, queues.ARN("us-east-1", "123456789012", name))
		if err != nil {
			t.Fatal(err)
		}
		if src.Hold() != hold {
			t.Fatalf("hold %s, want the visibility timeout %s", src.Hold(), hold)
		}
		return sourceUnderTest{src: src,
			send: func(t *testing.T, bodies ...string) {
				for _, b := range bodies {
					if _, err := qs.Send(ctx, "123456789012", name, queues.SendInput{MessageBody: b}); err != nil {
						t.Fatal(err)
					}
				}
			},
			body: func(r Record) string {
				var rec sqsRecord
				json.Unmarshal(r.Data, &rec)
				return rec.Body
			}}
	})
}

func TestSQSRecordShape(t *testing.T) {
	ctx := context.Background()
	qs := startQueues(t, "eu-west-1")
	if err := qs.Create(ctx, "123456789012", "shape", nil, nil); err != nil {
		t.Fatal(err)
	}
	v := "v"
	if _, err := qs.Send(ctx, "123456789012", "shape", queues.SendInput{MessageBody: `{"k":1}`,
		MessageAttributes: map[string]queues.Attribute{"a": {DataType: "String", StringValue: &v}}}); err != nil {
		t.Fatal(err)
	}
	arn := queues.ARN("eu-west-1", "123456789012", "shape")
	src, err := OpenQueue(ctx, qs, arn)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := src.Receive(ctx, 10, 5*time.Second)
	if err != nil || len(recs) != 1 {
		t.Fatalf("receive: %v %v", recs, err)
	}
	// Lambda's keys, in Lambda's order.
	var keys []string
	dec := json.NewDecoder(bytesReader(recs[0].Data))
	dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	want := "[messageId receiptHandle body attributes messageAttributes md5OfMessageAttributes md5OfBody eventSource eventSourceARN awsRegion]"
	if fmt.Sprint(keys) != want {
		t.Errorf("record keys %v, want %s", keys, want)
	}
	var rec map[string]any
	json.Unmarshal(recs[0].Data, &rec)
	attrs := rec["attributes"].(map[string]any)
	ma := rec["messageAttributes"].(map[string]any)["a"].(map[string]any)
	if rec["eventSource"] != "aws:sqs" || rec["eventSourceARN"] != arn || rec["awsRegion"] != "eu-west-1" ||
		rec["md5OfBody"] != "e59138f35192e320088b83d28388d6bb" || attrs["ApproximateReceiveCount"] != "1" ||
		attrs["SenderId"] != "123456789012" || ma["stringValue"] != "v" || ma["dataType"] != "String" ||
		fmt.Sprint(ma["stringListValues"]) != "[]" || rec["receiptHandle"] != recs[0].Handle {
		t.Errorf("record %s", recs[0].Data)
	}
}

func TestBatchItemFailures(t *testing.T) {
	batch := []Record{{ID: "a"}, {ID: "b"}}
	for _, c := range []struct {
		payload string
		failed  string
		valid   bool
	}{
		{``, "map[]", true},
		{`null`, "map[]", true},
		{`{}`, "map[]", true},
		{`{"batchItemFailures":[]}`, "map[]", true},
		{`{"batchItemFailures":null}`, "map[]", true},
		{`{"batchItemFailures":[{"itemIdentifier":"b"}]}`, "map[b:true]", true},
		{`"done"`, "map[]", true},
		{`{"batchItemFailures":[{"itemIdentifier":"zzz"}]}`, "map[]", false},
		{`{"batchItemFailures":[{"itemIdentifier":""}]}`, "map[]", false},
		{`{"batchItemFailures":[{"itemIdentifier":null}]}`, "map[]", false},
		{`{"batchItemFailures":[{"id":"a"}]}`, "map[]", false},
		{`{"batchItemFailures":`, "map[]", false},
	} {
		failed, valid := batchItemFailures([]byte(c.payload), batch)
		if fmt.Sprint(failed) != c.failed && !(len(failed) == 0 && c.failed == "map[]") || valid != c.valid {
			t.Errorf("%s: failed %v valid %v, want %s %v", c.payload, failed, valid, c.failed, c.valid)
		}
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// TestNATSSource runs the conformance suite on a stream of a NATS server
// of the user's (here another embedded server, reached over TCP).
func TestNATSSource(t *testing.T) {
	ns, err := natsd.Start(natsd.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	testSource(t, func(t *testing.T, name string, hold time.Duration) sourceUnderTest {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}}); err != nil {
			t.Fatal(err)
		}
		src, err := OpenNATS(ctx, ns.ClientURL(), name, name+".in", "kiln-esm-"+name, hold)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(src.(interface{ Close() }).Close)
		return sourceUnderTest{src: src,
			send: func(t *testing.T, bodies ...string) {
				js.Publish(ctx, name+".other", []byte("not for the mapping"))
				for _, b := range bodies {
					if _, err := js.Publish(ctx, name+".in", []byte(b)); err != nil {
						t.Fatal(err)
					}
				}
			},
			body: func(r Record) string {
				var rec natsRecord
				json.Unmarshal(r.Data, &rec)
				return string(rec.Data)
			}}
	})
}

// TestRabbitMQSource runs the conformance suite on a queue of a real
// RabbitMQ broker (Debian's rabbitmq-server, started by the test), and
// checks the event's shape against Lambda's RabbitMQ event.
func TestRabbitMQSource(t *testing.T) {
	broker := rabbitmqtest.Start(t)
	ch, err := broker.Dial(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	arn := "arn:aws:mq:us-east-1:123456789012:broker:kiln:b-1"
	open := func(t *testing.T, name string, hold time.Duration) (Source, func(bodies ...amqp.Publishing)) {
		if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		src, err := OpenRabbitMQ(RabbitMQ{URL: broker.URL, User: broker.User, Password: broker.Pass, VirtualHost: "/", Queue: name, ARN: arn}, hold)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(src.(interface{ Close() }).Close)
		return src, func(msgs ...amqp.Publishing) {
			for _, m := range msgs {
				if err := ch.PublishWithContext(ctx, "", name, false, false, m); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	testSource(t, func(t *testing.T, name string, hold time.Duration) sourceUnderTest {
		src, publish := open(t, name, hold)
		return sourceUnderTest{src: src,
			send: func(t *testing.T, bodies ...string) {
				for _, b := range bodies {
					publish(amqp.Publishing{Body: []byte(b)})
				}
			},
			body: func(r Record) string {
				var rec rmqRecord
				json.Unmarshal(r.Data, &rec)
				return string(rec.Data)
			}}
	})

	t.Run("a lost connection gives back what was held", func(t *testing.T) {
		src, publish := open(t, "lost", time.Minute)
		publish(amqp.Publishing{Body: []byte("z")})
		first, err := src.Receive(ctx, 1, 10*time.Second)
		if err != nil || len(first) != 1 {
			t.Fatalf("receive: %v %v", first, err)
		}
		src.(*rabbitSource).conn.Close()
		var again []Record
		for deadline := time.Now().Add(20 * time.Second); len(again) == 0 && time.Now().Before(deadline); {
			again, _ = src.Receive(ctx, 1, time.Second) // the first fails on the closed channel
		}
		var rec rmqRecord
		if len(again) != 1 || json.Unmarshal(again[0].Data, &rec) != nil || string(rec.Data) != "z" || !rec.Redelivered || again[0].ID != first[0].ID {
			t.Fatalf("after the connection was lost: %+v", again)
		}
		if err := src.Delete(ctx, first); err == nil {
			t.Error("deleting a record of the lost connection succeeded; it was given back")
		}
		if err := src.Delete(ctx, again); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Lambda's event shape", func(t *testing.T) {
		src, publish := open(t, "shape", time.Minute)
		publish(amqp.Publishing{Body: []byte(`{"k":1}`), ContentType: "application/json", MessageId: "m-1", Priority: 3,
			DeliveryMode: 2, Timestamp: time.Unix(2021, 0), Headers: amqp.Table{"h": "v", "n": int32(10)}})
		recs, err := src.Receive(ctx, 10, 10*time.Second)
		if err != nil || len(recs) != 1 {
			t.Fatalf("receive: %v %v", recs, err)
		}
		if recs[0].ID != "m-1" {
			t.Errorf("record id %q, want the message id", recs[0].ID)
		}
		var ev map[string]any
		if err := json.Unmarshal(envelope(src, recs), &ev); err != nil {
			t.Fatal(err)
		}
		byQueue := ev["rmqMessagesByQueue"].(map[string]any)
		msgs, _ := byQueue["shape::/"].([]any)
		if ev["eventSource"] != "aws:rmq" || ev["eventSourceArn"] != arn || len(byQueue) != 1 || len(msgs) != 1 {
			t.Fatalf("event %v", ev)
		}
		m := msgs[0].(map[string]any)
		p := m["basicProperties"].(map[string]any)
		h := p["headers"].(map[string]any)
		if m["data"] != "eyJrIjoxfQ==" || m["redelivered"] != false || p["contentType"] != "application/json" ||
			p["messageId"] != "m-1" || p["priority"] != 3.0 || p["deliveryMode"] != 2.0 || p["bodySize"] != 7.0 ||
			p["timestamp"] != "Jan 1, 1970, 12:33:41 AM" || p["correlationId"] != nil || p["replyTo"] != nil ||
			fmt.Sprint(h["h"]) != "map[bytes:[118]]" || h["n"] != 10.0 {
			t.Errorf("message %s", recs[0].Data)
		}
		for _, k := range []string{"contentEncoding", "expiration", "type", "userId", "appId", "clusterId"} {
			if v, ok := p[k]; !ok || v != nil {
				t.Errorf("basicProperties.%s = %v (present %v), want null", k, v, ok)
			}
		}
		// Filters match the data decoded, as JSON when it is JSON.
		for pattern, want := range map[string]bool{`{"data":{"k":[1]}}`: true, `{"data":{"k":[2]}}`: false} {
			f, err := eventfilter.ParseAll([]string{pattern})
			if err != nil {
				t.Fatal(err)
			}
			ev, err := eventfilter.Decode(src.(*rabbitSource).FilterView(recs[0]), src.FilterFields()...)
			if err != nil || f.Match(ev) != want {
				t.Errorf("filter %s: match %v (%v), want %v", pattern, !want, err, want)
			}
		}
		src.Delete(ctx, recs)
	})
}
