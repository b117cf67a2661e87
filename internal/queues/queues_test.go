package queues_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/server"
)

// The queue API through aws-sdk-go-v2's SQS client, which speaks the AWS
// JSON protocol and checks the MD5 digests of bodies and attributes of
// every send and receive: a wrong digest fails the call.

func setup(t *testing.T) (*sqs.Client, context.Context) {
	t.Helper()
	s := kilntest.Start(t, server.Config{})
	return kilntest.SQS(s), context.Background()
}

func create(t *testing.T, c *sqs.Client, name string, attrs map[string]string) string {
	t.Helper()
	out, err := c.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return aws.ToString(out.QueueUrl)
}

func TestSendReceiveDeleteJSON(t *testing.T) {
	c, ctx := setup(t)
	q := create(t, c, "json", map[string]string{"VisibilityTimeout": "30"})
	attrs := map[string]types.MessageAttributeValue{
		"s":  {DataType: aws.String("String"), StringValue: aws.String("välue")},
		"n":  {DataType: aws.String("Number.float"), StringValue: aws.String("-1.5e3")},
		"b":  {DataType: aws.String("Binary"), BinaryValue: []byte{0, 1, 2, 255}},
		"x.": {DataType: aws.String("String"), StringValue: aws.String("x")},
	}
	_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("x"), MessageAttributes: attrs})
	if kilntest.ErrorCode(err) != "InvalidParameterValue" {
		t.Fatalf("attribute name ending in a dot: %v", err)
	}
	delete(attrs, "x.")
	sent, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("body ✓"), MessageAttributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q, WaitTimeSeconds: 5,
		MessageAttributeNames: []string{"All"}, MessageSystemAttributeNames: []types.MessageSystemAttributeName{"All"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Messages) != 1 {
		t.Fatalf("received %d messages", len(got.Messages))
	}
	m := got.Messages[0]
	if aws.ToString(m.MessageId) != aws.ToString(sent.MessageId) || aws.ToString(m.Body) != "body ✓" ||
		string(m.MessageAttributes["b"].BinaryValue) != "\x00\x01\x02\xff" || m.Attributes["ApproximateReceiveCount"] != "1" {
		t.Errorf("received %+v", m)
	}
	// Only the attributes asked for, with the digest of those.
	some, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q, WaitTimeSeconds: 0})
	if err != nil || len(some.Messages) != 0 {
		t.Fatalf("invisible message received: %v %v", some, err)
	}
	if _, err := c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: &q, ReceiptHandle: m.ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	again, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q, WaitTimeSeconds: 5, MessageAttributeNames: []string{"s"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{"ApproximateReceiveCount"}})
	if err != nil || len(again.Messages) != 1 {
		t.Fatalf("receive after visibility 0: %v %v", again, err)
	}
	m = again.Messages[0]
	if len(m.MessageAttributes) != 1 || m.Attributes["ApproximateReceiveCount"] != "2" || len(m.Attributes) != 1 {
		t.Errorf("second receive: attributes %v, system attributes %v", m.MessageAttributes, m.Attributes)
	}
	if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &q, ReceiptHandle: m.ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
	qa, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &q, AttributeNames: []types.QueueAttributeName{"All"}})
	if err != nil {
		t.Fatal(err)
	}
	if qa.Attributes["ApproximateNumberOfMessages"] != "0" || qa.Attributes["ApproximateNumberOfMessagesNotVisible"] != "0" {
		t.Errorf("after delete: %v", qa.Attributes)
	}
}

func TestLongPollReturnsWhenAMessageArrives(t *testing.T) {
	c, ctx := setup(t)
	q := create(t, c, "poll", nil)
	done := make(chan *sqs.ReceiveMessageOutput, 1)
	go func() {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q, WaitTimeSeconds: 20, MaxNumberOfMessages: 10})
		if err != nil {
			t.Error(err)
		}
		done <- out
	}()
	// Lets the receive reach its wait (the scenario); were it later, it
	// would find the message at once, and the test would show less.
	time.Sleep(200 * time.Millisecond)
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("wake")}); err != nil {
		t.Fatal(err)
	}
	out := <-done
	if out == nil || len(out.Messages) != 1 || aws.ToString(out.Messages[0].Body) != "wake" {
		t.Fatalf("long poll: %+v", out)
	}
}

func TestFifoOrderAndDeduplication(t *testing.T) {
	c, ctx := setup(t)
	q := create(t, c, "o.fifo", map[string]string{"FifoQueue": "true"})
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("x"), MessageGroupId: aws.String("g")}); kilntest.ErrorCode(err) != "InvalidParameterValue" {
		t.Fatalf("send without a deduplication id to a queue without content-based deduplication: %v", err)
	}
	var first string
	for i := range 6 {
		for _, g := range []string{"a", "b"} {
			out, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String(fmt.Sprintf("%s%d", g, i)),
				MessageGroupId: aws.String(g), MessageDeduplicationId: aws.String(fmt.Sprintf("%s%d", g, i))})
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 && g == "a" {
				first = aws.ToString(out.MessageId)
			}
		}
	}
	dup, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("a0"), MessageGroupId: aws.String("a"),
		MessageDeduplicationId: aws.String("a0")})
	if err != nil || aws.ToString(dup.MessageId) != first {
		t.Fatalf("duplicate send: %v, id %s, want %s", err, aws.ToString(dup.MessageId), first)
	}
	got := map[string][]string{}
	for n := 0; n < 12; {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q, MaxNumberOfMessages: 10, WaitTimeSeconds: 2,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{"All"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Messages) == 0 {
			t.Fatalf("fifo queue ran dry after %d of 12: %v", n, got)
		}
		for _, m := range out.Messages {
			g := m.Attributes["MessageGroupId"]
			got[g] = append(got[g], aws.ToString(m.Body))
			// Failing the first delivery of a1 makes it come back before a2.
			if aws.ToString(m.Body) == "a1" && m.Attributes["ApproximateReceiveCount"] == "1" {
				c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: &q, ReceiptHandle: m.ReceiptHandle})
				got[g] = got[g][:len(got[g])-1]
				continue
			}
			n++
			if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &q, ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, g := range []string{"a", "b"} {
		want := []string{g + "0", g + "1", g + "2", g + "3", g + "4", g + "5"}
		if strings.Join(got[g], ",") != strings.Join(want, ",") {
			t.Errorf("group %s: got %v, want %v", g, got[g], want)
		}
	}
}

func TestRedriveToDeadLetterQueue(t *testing.T) {
	c, ctx := setup(t)
	dlq := create(t, c, "dead", nil)
	arn, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &dlq, AttributeNames: []types.QueueAttributeName{"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	q := create(t, c, "live", map[string]string{"RedrivePolicy": fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":3}`, arn.Attributes["QueueArn"])})
	if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("poison")}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q, WaitTimeSeconds: 5,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{"ApproximateReceiveCount"}})
		if err != nil || len(out.Messages) != 1 || out.Messages[0].Attributes["ApproximateReceiveCount"] != fmt.Sprint(i) {
			t.Fatalf("receive %d: %+v %v", i, out, err)
		}
		c.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: &q, ReceiptHandle: out.Messages[0].ReceiptHandle})
	}
	out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &q, WaitTimeSeconds: 1})
	if err != nil || len(out.Messages) != 0 {
		t.Fatalf("received past maxReceiveCount: %+v %v", out, err)
	}
	out, err = c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &dlq, WaitTimeSeconds: 5})
	if err != nil || len(out.Messages) != 1 || aws.ToString(out.Messages[0].Body) != "poison" {
		t.Fatalf("dead-letter queue: %+v %v", out, err)
	}
}

func TestHostileInput(t *testing.T) {
	c, ctx := setup(t)
	q := create(t, c, "h", nil)
	other := create(t, c, "other", nil)
	c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &other, MessageBody: aws.String("x")})
	theirs, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &other, WaitTimeSeconds: 5})
	if err != nil || len(theirs.Messages) != 1 {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 262145)
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"oversized body", func() error {
			_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: &long})
			return err
		}, "InvalidParameterValue"},
		{"batch past 256 KB in all", func() error {
			half := strings.Repeat("b", 150000)
			_, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &q, Entries: []types.SendMessageBatchRequestEntry{
				{Id: aws.String("1"), MessageBody: &half}, {Id: aws.String("2"), MessageBody: &half}}})
			return err
		}, "AWS.SimpleQueueService.BatchRequestTooLong"},
		{"control character", func() error {
			_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("a\x01b")})
			return err
		}, "InvalidMessageContents"},
		{"eleven attributes", func() error {
			attrs := map[string]types.MessageAttributeValue{}
			for i := range 11 {
				attrs[fmt.Sprint("a", i)] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String("v")}
			}
			_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("x"), MessageAttributes: attrs})
			return err
		}, "InvalidParameterValue"},
		{"reserved attribute name", func() error {
			_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("x"),
				MessageAttributes: map[string]types.MessageAttributeValue{"AWS.x": {DataType: aws.String("String"), StringValue: aws.String("v")}}})
			return err
		}, "InvalidParameterValue"},
		{"receipt handle of another queue", func() error {
			_, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &q, ReceiptHandle: theirs.Messages[0].ReceiptHandle})
			return err
		}, "ReceiptHandleIsInvalid"},
		{"garbage receipt handle", func() error {
			_, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &q, ReceiptHandle: aws.String("$JS.API.>")})
			return err
		}, "ReceiptHandleIsInvalid"},
		{"queue of another account", func() error {
			_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(strings.Replace(q, "/h", "x/h", 1)), MessageBody: aws.String("x")})
			return err
		}, "AWS.SimpleQueueService.NonExistentQueue"},
		{"delay past 900", func() error {
			_, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &q, MessageBody: aws.String("x"), DelaySeconds: 901})
			return err
		}, "InvalidParameterValue"},
		{"redrive policy that is not JSON", func() error {
			_, err := c.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: &q, Attributes: map[string]string{"RedrivePolicy": "{"}})
			return err
		}, "InvalidAttributeValue"},
		{"empty batch", func() error {
			_, err := c.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: &q, Entries: []types.DeleteMessageBatchRequestEntry{}})
			return err
		}, "AWS.SimpleQueueService.EmptyBatchRequest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kilntest.ErrorCode(tc.call()); got != tc.want {
				t.Errorf("error code %s, want %s", got, tc.want)
			}
		})
	}
	// Nothing of it was stored; the other queue's message is still in flight.
	qa, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &q, AttributeNames: []types.QueueAttributeName{"All"}})
	if err != nil || qa.Attributes["ApproximateNumberOfMessages"] != "0" {
		t.Errorf("queue after hostile input: %v %v", qa, err)
	}
	if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &other, ReceiptHandle: theirs.Messages[0].ReceiptHandle}); err != nil {
		t.Errorf("the rightful delete: %v", err)
	}
}
