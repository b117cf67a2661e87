package esm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/internal/queues"
)

// Record is one record of a source, as the function receives it in
// Records[].
type Record struct {
	ID     string          // what batchItemFailures' itemIdentifier names (SQS: messageId)
	Data   json.RawMessage // the record
	Handle string          // the source's own reference, to delete or extend it
}

// Source is what a mapping reads. Every source runs the conformance suite
// (source_test.go): received records are hidden until deleted or until
// their hold ends, then come back; deleted ones never do.
type Source interface {
	// Receive returns up to max records, waiting up to wait for the first.
	Receive(ctx context.Context, max int, wait time.Duration) ([]Record, error)
	// Delete removes records that were processed or filtered out.
	Delete(ctx context.Context, recs []Record) error
	// Extend keeps records hidden for d from now.
	Extend(ctx context.Context, recs []Record, d time.Duration) error
	// Hold is how long a received record stays hidden.
	Hold() time.Duration
	// FilterFields are the record's fields matched as JSON when they hold
	// JSON text.
	FilterFields() []string
}

// Queues is the Kiln queue service, as the queue source uses it.
type Queues interface {
	Receive(ctx context.Context, account, name string, in queues.ReceiveInput) ([]queues.Message, error)
	DeleteMessages(ctx context.Context, account, name string, receipts []string) []error
	ChangeVisibility(ctx context.Context, account, name, receipt string, timeout int) error
	Attributes(ctx context.Context, account, name string) (map[string]string, error)
}

// queueSource reads a Kiln queue and makes SQS records of its messages.
type queueSource struct {
	q             Queues
	arn, region   string
	account, name string
	hold          time.Duration
}

// OpenQueue opens a Kiln queue (arn:aws:sqs:REGION:ACCOUNT:NAME) as a source.
func OpenQueue(ctx context.Context, q Queues, arn string) (Source, error) {
	region, account, name, err := queues.ParseARN(arn)
	if err != nil {
		return nil, err
	}
	attrs, err := q.Attributes(ctx, account, name)
	if err != nil {
		return nil, err
	}
	vt, err := strconv.Atoi(attrs["VisibilityTimeout"])
	if err != nil {
		return nil, fmt.Errorf("queue %s: VisibilityTimeout %q", arn, attrs["VisibilityTimeout"])
	}
	return &queueSource{q: q, arn: arn, region: region, account: account, name: name, hold: time.Duration(vt) * time.Second}, nil
}

// sqsRecord is the record Lambda delivers for an SQS message, field for
// field in Lambda's order.
type sqsRecord struct {
	MessageId              string                  `json:"messageId"`
	ReceiptHandle          string                  `json:"receiptHandle"`
	Body                   string                  `json:"body"`
	Attributes             map[string]string       `json:"attributes"`
	MessageAttributes      map[string]sqsAttribute `json:"messageAttributes"`
	Md5OfMessageAttributes string                  `json:"md5OfMessageAttributes,omitempty"`
	Md5OfBody              string                  `json:"md5OfBody"`
	EventSource            string                  `json:"eventSource"`
	EventSourceARN         string                  `json:"eventSourceARN"`
	AwsRegion              string                  `json:"awsRegion"`
}

type sqsAttribute struct {
	StringValue      *string  `json:"stringValue,omitempty"`
	BinaryValue      []byte   `json:"binaryValue,omitempty"`
	StringListValues []string `json:"stringListValues"`
	BinaryListValues []string `json:"binaryListValues"`
	DataType         string   `json:"dataType"`
}

func (s *queueSource) Receive(ctx context.Context, max int, wait time.Duration) ([]Record, error) {
	msgs, err := s.q.Receive(ctx, s.account, s.name, queues.ReceiveInput{Max: min(max, 10), Wait: wait})
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(msgs))
	for _, m := range msgs {
		rec := sqsRecord{MessageId: m.MessageId, ReceiptHandle: m.ReceiptHandle, Body: m.Body, Attributes: m.Attributes,
			MessageAttributes: map[string]sqsAttribute{}, Md5OfMessageAttributes: m.MD5OfMessageAttributes,
			Md5OfBody: m.MD5OfBody, EventSource: "aws:sqs", EventSourceARN: s.arn, AwsRegion: s.region}
		for n, a := range m.MessageAttributes {
			rec.MessageAttributes[n] = sqsAttribute{StringValue: a.StringValue, BinaryValue: a.BinaryValue,
				StringListValues: []string{}, BinaryListValues: []string{}, DataType: a.DataType}
		}
		data, err := json.Marshal(&rec)
		if err != nil {
			return nil, err
		}
		out = append(out, Record{ID: m.MessageId, Data: data, Handle: m.ReceiptHandle})
	}
	return out, nil
}

func (s *queueSource) Delete(ctx context.Context, recs []Record) error {
	receipts := make([]string, len(recs))
	for i, r := range recs {
		receipts[i] = r.Handle
	}
	return errors.Join(s.q.DeleteMessages(ctx, s.account, s.name, receipts)...)
}

func (s *queueSource) Extend(ctx context.Context, recs []Record, d time.Duration) error {
	for _, r := range recs {
		if err := s.q.ChangeVisibility(ctx, s.account, s.name, r.Handle, int(d.Round(time.Second)/time.Second)); err != nil {
			return err
		}
	}
	return nil
}

func (s *queueSource) Hold() time.Duration    { return s.hold }
func (s *queueSource) FilterFields() []string { return []string{"body"} }
