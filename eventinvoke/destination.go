package eventinvoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-dev/kiln/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// QueueRetention is how long a Kiln queue keeps a message (SQS's default).
const QueueRetention = 4 * 24 * time.Hour

// QueueARN is the ARN of a Kiln queue.
func QueueARN(region, account, name string) string {
	return "arn:aws:sqs:" + region + ":" + account + ":" + name
}

// QueueStream and QueueSubject are the JetStream stream and subject of a Kiln queue.
func QueueStream(account, name string) string  { return "KILN_QUEUE_" + account + "_" + name }
func QueueSubject(account, name string) string { return "kiln.queue." + account + "." + name }

// Conditions of invocation records.
const (
	ConditionSuccess          = "Success"
	ConditionRetriesExhausted = "RetriesExhausted"
	ConditionEventAgeExceeded = "EventAgeExceeded"
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
		if err := s.ensureQueue(ctx, d.Account, d.Name); err != nil {
			return err
		}
		return s.publish(ctx, &nats.Msg{Subject: QueueSubject(d.Account, d.Name), Header: h, Data: body}, jetstream.WithMsgID(msgID))
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

// ensureQueue creates a Kiln queue's stream the first time it is used.
func (s *Service) ensureQueue(ctx context.Context, account, name string) error {
	stream := QueueStream(account, name)
	if _, ok := s.queueStreams.Load(stream); ok {
		return nil
	}
	if _, err := OpenQueue(ctx, s.js, account, name, s.cfg.Replicas); err != nil {
		return err
	}
	s.queueStreams.Store(stream, true)
	return nil
}

// OpenQueue creates a Kiln queue's stream if needed and returns it.
func OpenQueue(ctx context.Context, js jetstream.JetStream, account, name string, replicas int) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, QueueStream(account, name))
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	st, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:        QueueStream(account, name),
		Description: "Kiln queue " + name,
		Subjects:    []string{QueueSubject(account, name)},
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		MaxAge:      QueueRetention,
		Duplicates:  2 * time.Minute,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.Stream(ctx, QueueStream(account, name))
	}
	return st, err
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
// are now). It leaves the queue as it is: read by sequence, not consumed.
func ReadQueue(ctx context.Context, js jetstream.JetStream, arn string, from uint64, limit int) ([]QueueMessage, error) {
	d, err := api.ParseDestination(arn)
	if err != nil || d.Kind != api.DestinationQueue {
		return nil, fmt.Errorf("not a Kiln queue ARN: %s", arn)
	}
	st, err := OpenQueue(ctx, js, d.Account, d.Name, 1)
	if err != nil {
		return nil, err
	}
	oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(from, 1)})
	if err != nil {
		return nil, err
	}
	var out []QueueMessage
	for limit == 0 || len(out) < limit {
		batch := 256
		if limit > 0 {
			batch = min(batch, limit-len(out))
		}
		msgs, err := oc.FetchNoWait(batch)
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range msgs.Messages() {
			n++
			q := QueueMessage{Header: m.Headers(), Body: m.Data()}
			if md, err := m.Metadata(); err == nil {
				q.Sequence, q.Time = md.Sequence.Stream, md.Timestamp
			}
			out = append(out, q)
		}
		if err := msgs.Error(); err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
	}
	return out, nil
}

// ReadQueue is the package's ReadQueue on this service's connection.
func (s *Service) ReadQueue(ctx context.Context, arn string, from uint64, limit int) ([]QueueMessage, error) {
	return ReadQueue(ctx, s.js, arn, from, limit)
}
