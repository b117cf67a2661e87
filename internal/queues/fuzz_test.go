package queues

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// FuzzQueryInput: any form becomes a JSON input that the operations'
// decoding either takes or refuses with an SQS error.
func FuzzQueryInput(f *testing.F) {
	f.Add("Action=SendMessage&QueueUrl=http%3A%2F%2Fh%2F1%2Fq&MessageBody=x&MessageAttribute.1.Name=a&MessageAttribute.1.Value.DataType=String&MessageAttribute.1.Value.StringValue=v")
	f.Add("Action=SendMessageBatch&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=x&SendMessageBatchRequestEntry.2.DelaySeconds=5")
	f.Add("Action=ReceiveMessage&AttributeName.1=All&MaxNumberOfMessages=10&WaitTimeSeconds=x")
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		input, err := json.Marshal(queryInput(form))
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		c := &call{input: input}
		var send struct {
			queueRef
			Entries []sendEntry
			SendInput
		}
		var recv struct {
			AttributeNames      []string
			MaxNumberOfMessages *int
		}
		for _, v := range []any{&send, &recv} {
			var e *Error
			if err := c.decode(v); err != nil && !errors.As(err, &e) {
				t.Fatalf("%q: %v", body, err)
			}
		}
	})
}

// FuzzReceiptHandle: a receipt handle is refused with
// ReceiptHandleIsInvalid unless it names an acknowledgement of the queue's
// own stream, without wildcards.
func FuzzReceiptHandle(f *testing.F) {
	q := &queue{meta: &meta{Account: "123456789012", Name: "q"}}
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("$JS.ACK.KILN_QUEUE_123456789012_q.sqs.1.2.3.4.0")))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("$JS.ACK.KILN_QUEUE_123456789012_q.sqs.1.2.>")))
	f.Add("$JS.API.STREAM.DELETE.x")
	f.Fuzz(func(t *testing.T, receipt string) {
		subj, err := q.ackSubject(receipt)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != errReceipt.code {
				t.Fatalf("%q: %v", receipt, err)
			}
			return
		}
		tok := strings.Split(subj, ".")
		if tok[0] != "$JS" || tok[1] != "ACK" || !strings.Contains(subj, ".KILN_QUEUE_123456789012_q.") ||
			strings.ContainsAny(subj, "*> \t\r\n") {
			t.Fatalf("%q accepted as %q", receipt, subj)
		}
	})
}
