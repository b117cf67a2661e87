package eventinvoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// QueueARN is the ARN of a Kiln queue.
func QueueARN(region, account, name string) string {
	return "arn:aws:sqs:" + region + ":" + account + ":" + name
}

// Conditions of invocation records.
const (
	ConditionSuccess          = "Success"
	ConditionRetriesExhausted = "RetriesExhausted"
	ConditionEventAgeExceeded = "EventAgeExceeded"
	// ConditionRecursiveInvocation: the event's invoke was stopped as the
	// 17th of a recursive loop (Lambda sends such events to the failure
	// destinations; its record's condition here is Kiln's name).
	ConditionRecursiveInvocation = "RecursiveInvocationDetected"
)

// Record is Lambda's invocation record, the document destinations receive.
type Record struct {
	Version         string           `json:"version"`
	Timestamp       string           `json:"timestamp"`
	RequestContext  RequestContext   `json:"requestContext"`
	RequestPayload  json.RawMessage  `json:"requestPayload"`
	ResponseContext *ResponseContext `json:"responseContext,omitempty"`
	ResponsePayload json.RawMessage  `json:"responsePayload,omitempty"`
}

// RequestContext identifies the invocation a record is about.
type RequestContext struct {
	RequestID              string `json:"requestId"`
	FunctionArn            string `json:"functionArn"`
	Condition              string `json:"condition"`
	ApproximateInvokeCount int    `json:"approximateInvokeCount"`
}

// ResponseContext is the last invoke's outcome.
type ResponseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError,omitempty"`
}

// rawJSON embeds b as JSON: itself when it is JSON, else as a string.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

// errPermanent marks a delivery that can never succeed (the destination is
// gone or refuses the record): the outcome is logged and dropped.
type errPermanent struct{ err error }

func (e errPermanent) Error() string { return e.err.Error() }
func (e errPermanent) Unwrap() error { return e.err }

// deliver sends body to a destination of account's function. msgID makes
// a redelivered outcome land once within JetStream's duplicate window.
func (s *Service) deliver(ctx context.Context, account, arn string, body []byte, h nats.Header, msgID string) error {
	d, err := api.ParseDestination(arn)
	if err != nil {
		return errPermanent{err}
	}
	if d.Account != account || d.Region != s.cfg.Region {
		return errPermanent{fmt.Errorf("destination %s is outside account %s in %s", arn, account, s.cfg.Region)}
	}
	if h == nil {
		h = nats.Header{}
	}
	switch d.Kind {
	case api.DestinationQueue:
		attrs := map[string]string{}
		for k := range h {
			attrs[k] = h.Get(k)
		}
		return s.kilnQueues.SendRecord(ctx, d.Account, d.Name, body, attrs, msgID)
	default:
		t, err := s.inv.Resolve(ctx, account, d.ARN, "")
		if err != nil {
			var e *api.Error
			if errors.As(err, &e) {
				return errPermanent{err}
			}
			return err
		}
		h.Set(hdrRequestID, api.NewUUID())
		h.Set(hdrAccount, t.Account)
		h.Set(hdrFunction, t.Ref.Name)
		if t.Ref.Qualifier != "" {
			h.Set(hdrQualifier, t.Ref.Qualifier)
		}
		h.Set(hdrEnqueued, fmt.Sprint(time.Now().UnixMilli()))
		return s.publish(ctx, &nats.Msg{Subject: s.subject(t.Account, t.Ref.Name), Header: h, Data: body}, jetstream.WithMsgID(msgID))
	}
}

// QueueMessage is one message of a Kiln queue.
type QueueMessage struct {
	Sequence uint64
	Time     time.Time
	Header   nats.Header
	Body     []byte
}

// ReadQueue returns the messages of the Kiln queue named by arn from
// sequence from on (1 is the first), at most limit of them (0: all there
// are now), their message attributes as headers. It leaves the queue as it
// is: read by sequence, not received.
func ReadQueue(ctx context.Context, js jetstream.JetStream, arn string, from uint64, limit int) ([]QueueMessage, error) {
	d, err := api.ParseDestination(arn)
	if err != nil || d.Kind != api.DestinationQueue {
		return nil, fmt.Errorf("not a Kiln queue ARN: %s", arn)
	}
	stored, err := queues.Read(ctx, js, d.Account, d.Name, from, limit)
	if err != nil {
		return nil, err
	}
	out := make([]QueueMessage, len(stored))
	for i, m := range stored {
		h := nats.Header{}
		for k, v := range m.Attributes {
			h.Set(k, v)
		}
		out[i] = QueueMessage{Sequence: m.Sequence, Time: m.Time, Header: h, Body: m.Body}
	}
	return out, nil
}

// ReadQueue is the package's ReadQueue on this service's connection.
func (s *Service) ReadQueue(ctx context.Context, arn string, from uint64, limit int) ([]QueueMessage, error) {
	return ReadQueue(ctx, s.js, arn, from, limit)
}
