package esm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A NATS JetStream source is a stream of a user's own NATS, named in the
// mapping as a self-managed event source: Endpoints NATS_SERVERS (URLs),
// Queues [STREAM], optionally Topics [SUBJECT FILTER]. The mapping reads it
// through a durable consumer of its own, kiln-esm-UUID, created on the
// user's stream, whose ack wait is the records' hold.

// NATSServersKey is the Endpoints key of a NATS source's server URLs.
const NATSServersKey = "NATS_SERVERS"

// natsRecord is a NATS message as the function receives it.
type natsRecord struct {
	Subject        string              `json:"subject"`
	Sequence       uint64              `json:"sequence"`
	Timestamp      int64               `json:"timestamp"` // Unix ms
	Data           []byte              `json:"data"`      // base64
	Headers        map[string][]string `json:"headers"`
	Redelivered    int                 `json:"deliveryCount"`
	EventSource    string              `json:"eventSource"`
	EventSourceArn string              `json:"eventSourceArn"`
}

// natsSource reads a stream of a user's NATS.
type natsSource struct {
	nc   *nats.Conn
	cons jetstream.Consumer
	name string // nats://servers/STREAM, the records' eventSourceArn
	hold time.Duration
}

// OpenNATS connects to servers (comma-separated URLs) and opens stream
// (only subject, when not empty) through durable consumer consumer.
func OpenNATS(ctx context.Context, servers, stream, subject, consumer string, hold time.Duration) (Source, error) {
	nc, err := nats.Connect(servers, nats.Name("kiln-esm "+consumer), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", servers, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: consumer, FilterSubject: subject,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: hold, MaxDeliver: -1, MaxAckPending: 10000})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("stream %s on %s: %w", stream, servers, err)
	}
	return &natsSource{nc: nc, cons: cons, name: "nats://" + strings.TrimPrefix(servers, "nats://") + "/" + stream, hold: hold}, nil
}

func (s *natsSource) Receive(ctx context.Context, max int, wait time.Duration) ([]Record, error) {
	out, err := s.fetch(ctx, max, 0)
	if err != nil || len(out) > 0 || wait <= 0 {
		return out, err
	}
	// Wait for one, then take at once what else is there.
	if out, err = s.fetch(ctx, 1, wait); err != nil || len(out) == 0 || max == 1 {
		return out, err
	}
	more, err := s.fetch(ctx, max-1, 0)
	return append(out, more...), err
}

func (s *natsSource) fetch(ctx context.Context, n int, wait time.Duration) ([]Record, error) {
	var batch jetstream.MessageBatch
	var err error
	if wait > 0 {
		fctx, cancel := context.WithTimeout(ctx, max(wait, time.Second))
		defer cancel()
		batch, err = s.cons.Fetch(n, jetstream.FetchContext(fctx))
	} else {
		batch, err = s.cons.FetchNoWait(n)
	}
	if err != nil {
		return nil, err
	}
	var out []Record
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		rec := natsRecord{Subject: m.Subject(), Sequence: md.Sequence.Stream, Timestamp: md.Timestamp.UnixMilli(),
			Data: m.Data(), Headers: map[string][]string(m.Headers()), Redelivered: int(md.NumDelivered),
			EventSource: "kiln:nats", EventSourceArn: s.name}
		if rec.Headers == nil {
			rec.Headers = map[string][]string{}
		}
		data, err := json.Marshal(&rec)
		if err != nil {
			return out, err
		}
		out = append(out, Record{ID: strconv.FormatUint(md.Sequence.Stream, 10), Data: data, Handle: m.Reply()})
	}
	if err := batch.Error(); err != nil && ctx.Err() == nil && !queues.NothingNow(err) {
		return out, err
	}
	return out, nil
}

func (s *natsSource) Delete(ctx context.Context, recs []Record) error {
	return s.ackAll(ctx, recs, []byte("+ACK"))
}

func (s *natsSource) Extend(ctx context.Context, recs []Record, d time.Duration) error {
	return s.ackAll(ctx, recs, fmt.Appendf(nil, `-NAK {"delay":%d}`, d))
}

// ackAll sends an acknowledgement for each record and waits for each.
func (s *natsSource) ackAll(ctx context.Context, recs []Record, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, r := range recs {
		if _, err := s.nc.RequestWithContext(ctx, r.Handle, payload); err != nil {
			return fmt.Errorf("acknowledge %s: %w", r.ID, err)
		}
	}
	return nil
}

func (s *natsSource) Hold() time.Duration    { return s.hold }
func (s *natsSource) FilterFields() []string { return nil }
func (s *natsSource) Close()                 { s.nc.Close() }

// CheckNATS tells whether servers answer and hold stream, in a sentence
// for the caller when not.
func CheckNATS(ctx context.Context, servers, stream string) error {
	nc, err := nats.Connect(servers, nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("cannot connect to NATS at %s: %v", servers, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.Stream(ctx, stream)
	}
	if err != nil {
		return fmt.Errorf("stream %s on %s: %v", stream, servers, err)
	}
	return nil
}

// removeNATSConsumer deletes a deleted mapping's durable consumer from the
// user's stream, if it can.
func removeNATSConsumer(ctx context.Context, servers, stream, consumer string) error {
	nc, err := nats.Connect(servers, nats.Timeout(5*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	err = js.DeleteConsumer(ctx, stream, consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	}
	return err
}
