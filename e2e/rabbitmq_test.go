package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cwl "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/kilntest/rabbitmqtest"
	amqp "github.com/rabbitmq/amqp091-go"
)

// rmqFn logs each message of Lambda's RabbitMQ event, decoded.
const rmqFn = `import base64, json

def handler(event, context):
    assert event["eventSource"] == "aws:rmq", event
    for key, msgs in event["rmqMessagesByQueue"].items():
        for m in msgs:
            print("RMQ " + json.dumps({"key": key, "arn": event["eventSourceArn"], "data": base64.b64decode(m["data"]).decode(),
                                       "type": m["basicProperties"]["contentType"]}))
`

// TestRabbitMQMapping maps a queue of a RabbitMQ broker (Debian's
// rabbitmq-server, started by the test) to a Python function with Amazon
// MQ's mapping shape, created through one endpoint, its records read from
// the function's log through another: every message processed, the queue
// left empty, a wrong password refused.
func TestRabbitMQMapping(t *testing.T) {
	broker := rabbitmqtest.Start(t)
	ch, err := broker.Dial(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	zip, err := fntest.ZipFiles(map[string][]byte{"app.py": []byte(rmqFn)})
	if err != nil {
		t.Fatal(err)
	}
	forEachTarget(t, func(t *testing.T, tg *target) {
		queue := "orders-" + tg.name
		if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		c := lambdaAt(tg.endpoints[0])
		createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("rmq-fn"), Runtime: types.RuntimePython311,
			Handler: aws.String("app.handler"), Code: &types.FunctionCode{ZipFile: zip}})
		arn := "arn:aws:mq:" + region + ":" + tg.accountID + ":broker:orders:b-1"
		in := func(auth string) *lambda.CreateEventSourceMappingInput {
			return &lambda.CreateEventSourceMappingInput{FunctionName: aws.String("rmq-fn"), EventSourceArn: aws.String(arn),
				SelfManagedEventSource:     &types.SelfManagedEventSource{Endpoints: map[string][]string{"RABBITMQ_BROKERS": {broker.URL}}},
				Queues:                     []string{queue},
				SourceAccessConfigurations: []types.SourceAccessConfiguration{{Type: types.SourceAccessTypeBasicAuth, URI: aws.String(auth)}},
				BatchSize:                  aws.Int32(20), MaximumBatchingWindowInSeconds: aws.Int32(1)}
		}
		var bad *types.InvalidParameterValueException
		if _, err := c.CreateEventSourceMapping(ctx, in(broker.User+":wrong")); !errors.As(err, &bad) {
			t.Fatalf("a wrong password: %v, want InvalidParameterValueException", err)
		}
		m, err := c.CreateEventSourceMapping(ctx, in(broker.User+":"+broker.Pass))
		if err != nil {
			t.Fatal(err)
		}
		if s := fmt.Sprint(m.SourceAccessConfigurations[0].Type, aws.ToString(m.SourceAccessConfigurations[0].URI)); s != "BASIC_AUTH"+broker.User+":********" {
			t.Errorf("BASIC_AUTH shown as %s", s)
		}
		const n = 50
		for i := range n {
			if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{ContentType: "text/plain", Body: []byte(fmt.Sprint("m-", i))}); err != nil {
				t.Fatal(err)
			}
		}
		// The records, from the function's log, through the last endpoint.
		logs := logsAt(tg.endpoints[len(tg.endpoints)-1])
		got := map[string]bool{}
		for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			p := cwl.NewFilterLogEventsPaginator(logs, &cwl.FilterLogEventsInput{LogGroupName: aws.String("/aws/lambda/rmq-fn")})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					break // the group appears with the first invoke
				}
				for _, e := range page.Events {
					line, ok := strings.CutPrefix(strings.TrimSpace(aws.ToString(e.Message)), "RMQ ")
					if !ok {
						continue
					}
					var r struct{ Key, Arn, Data, Type string }
					if err := json.Unmarshal([]byte(line), &r); err != nil || r.Key != queue+"::/" || r.Arn != arn || r.Type != "text/plain" {
						t.Fatalf("record %q: %v", line, err)
					}
					got[r.Data] = true
				}
			}
			q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == n && q.Messages == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d messages in the function's log, %d ready in the queue after 120 s\n%s", len(got), n, q.Messages, tg.log())
			}
		}
		if _, err := c.DeleteEventSourceMapping(ctx, &lambda.DeleteEventSourceMappingInput{UUID: m.UUID}); err != nil {
			t.Fatal(err)
		}
		var gone *types.ResourceNotFoundException
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if _, err := c.GetEventSourceMapping(ctx, &lambda.GetEventSourceMappingInput{UUID: m.UUID}); errors.As(err, &gone) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the deleted mapping is still there after 30 s")
			}
		}
	})
}
