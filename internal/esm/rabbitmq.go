package esm

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A RabbitMQ source is a queue of a broker the user runs, named in the
// mapping with Amazon MQ's shape: EventSourceArn the broker's ARN
// (arn:aws:mq:REGION:ACCOUNT:broker:NAME:ID), Queues [QUEUE],
// SourceAccessConfigurations BASIC_AUTH (the broker's user and password)
// and VIRTUAL_HOST (default "/"). Amazon MQ finds the broker by its ARN and
// the credentials in Secrets Manager; a self-hosted Kiln has neither, so
// the broker's address is a self-managed endpoint (SelfManagedEventSource
// Endpoints RABBITMQ_BROKERS: [amqp://HOST:PORT or amqps://…]) and
// BASIC_AUTH's URI is USER:PASSWORD, which answers show with the password
// masked. Records are Lambda's RabbitMQ event, rmqMessagesByQueue keyed
// QUEUE::VHOST; filters match their data decoded.

// RabbitMQBrokersKey is the Endpoints key of a RabbitMQ source's broker URL.
const RabbitMQBrokersKey = "RABBITMQ_BROKERS"

// Source access types of a RabbitMQ source, as Lambda names them.
const (
	BasicAuth   = "BASIC_AUTH"
	VirtualHost = "VIRTUAL_HOST"
)

// BrokerHold is how long a broker's record (RabbitMQ, NATS) stays hidden
// once received: brokers have no visibility timeout of their own, so past
// the longest function timeout, 15 minutes, as a queue's visibility
// timeout must be.
const BrokerHold = 16 * time.Minute

// RabbitMQ names a queue of a broker.
type RabbitMQ struct {
	URL            string // amqp://HOST:PORT or amqps://HOST:PORT
	User, Password string
	VirtualHost    string
	Queue          string
	ARN            string // the records' eventSourceArn
}

func (r RabbitMQ) dial() (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(r.URL, amqp.Config{SASL: []amqp.Authentication{&amqp.PlainAuth{Username: r.User, Password: r.Password}},
		Vhost: r.VirtualHost, Dial: amqp.DefaultDial(5 * time.Second), Properties: amqp.Table{"connection_name": "kiln-esm"}})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", r.URL, err)
	}
	return conn, nil
}

// CheckRabbitMQ tells whether the broker answers with these credentials
// and holds the queue, in a sentence for the caller when not.
func CheckRabbitMQ(r RabbitMQ) error {
	conn, err := r.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclarePassive(r.Queue, false, false, false, false, nil); err != nil {
		return fmt.Errorf("queue %s in virtual host %s: %w", r.Queue, r.VirtualHost, err)
	}
	return nil
}

// rmqProperties is a message's basicProperties as Lambda serializes them.
type rmqProperties struct {
	ContentType     *string        `json:"contentType"`
	ContentEncoding *string        `json:"contentEncoding"`
	Headers         map[string]any `json:"headers"`
	DeliveryMode    uint8          `json:"deliveryMode"`
	Priority        uint8          `json:"priority"`
	CorrelationID   *string        `json:"correlationId"`
	ReplyTo         *string        `json:"replyTo"`
	Expiration      *string        `json:"expiration"`
	MessageID       *string        `json:"messageId"`
	Timestamp       *string        `json:"timestamp"`
	Type            *string        `json:"type"`
	UserID          *string        `json:"userId"`
	AppID           *string        `json:"appId"`
	ClusterID       *string        `json:"clusterId"`
	BodySize        int            `json:"bodySize"`
}

// rmqRecord is one message of rmqMessagesByQueue.
type rmqRecord struct {
	BasicProperties rmqProperties `json:"basicProperties"`
	Redelivered     bool          `json:"redelivered"`
	Data            []byte        `json:"data"` // base64
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// rmqHeader is a header value as Lambda gives it: strings as their bytes,
// numbers and booleans as themselves.
func rmqHeader(v any) any {
	switch v := v.(type) {
	case string:
		b := make([]int, len(v)) // []byte would marshal as base64
		for i := range len(v) {
			b[i] = int(v[i])
		}
		return map[string][]int{"bytes": b}
	case []byte:
		return rmqHeader(string(v))
	case amqp.Table:
		m := map[string]any{}
		for k, x := range v {
			m[k] = rmqHeader(x)
		}
		return m
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = rmqHeader(x)
		}
		return out
	case time.Time:
		return v.UnixMilli()
	}
	return v
}

func newRMQRecord(d amqp.Delivery) rmqRecord {
	p := rmqProperties{ContentType: nullable(d.ContentType), ContentEncoding: nullable(d.ContentEncoding),
		DeliveryMode: d.DeliveryMode, Priority: d.Priority, CorrelationID: nullable(d.CorrelationId),
		ReplyTo: nullable(d.ReplyTo), Expiration: nullable(d.Expiration), MessageID: nullable(d.MessageId),
		Type: nullable(d.Type), UserID: nullable(d.UserId), AppID: nullable(d.AppId), BodySize: len(d.Body)}
	if !d.Timestamp.IsZero() {
		p.Timestamp = nullable(d.Timestamp.UTC().Format("Jan 2, 2006, 3:04:05 PM"))
	}
	if len(d.Headers) > 0 {
		p.Headers = rmqHeader(d.Headers).(map[string]any)
	}
	return rmqRecord{BasicProperties: p, Redelivered: d.Redelivered, Data: d.Body}
}

// rabbitSource reads a queue through one consumer with manual acks. A
// received delivery stays unacknowledged (the broker holds it) until it is
// deleted (acked) or its hold ends (nacked with requeue, so it comes back).
type rabbitSource struct {
	r    RabbitMQ
	hold time.Duration
	done chan struct{}

	mu         sync.Mutex
	conn       *amqp.Connection
	ch         *amqp.Channel
	gen        int // the channel's generation: handles of an older one are void
	deliveries <-chan amqp.Delivery
	held       map[string]time.Time // by handle: when the hold ends
}

// OpenRabbitMQ opens a queue of a broker as a source.
func OpenRabbitMQ(r RabbitMQ, hold time.Duration) (Source, error) {
	s := &rabbitSource{r: r, hold: hold, done: make(chan struct{}), held: map[string]time.Time{}}
	s.mu.Lock()
	err := s.connect()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	go s.expire()
	return s, nil
}

// prefetch bounds the deliveries unacknowledged at once (RabbitMQ's most
// batch size, 10,000).
const prefetch = MaxBatchSize

// connect (under mu) opens the connection, channel and consumer.
func (s *rabbitSource) connect() error {
	conn, err := s.r.dial()
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(prefetch, 0, false)
	}
	var dels <-chan amqp.Delivery
	if err == nil {
		dels, err = ch.Consume(s.r.Queue, "", false, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return fmt.Errorf("queue %s in virtual host %s: %w", s.r.Queue, s.r.VirtualHost, err)
	}
	s.conn, s.ch, s.deliveries = conn, ch, dels
	s.gen++
	clear(s.held) // the broker requeued what the old channel held
	return nil
}

// current returns the channel's deliveries and generation, reconnecting
// after a loss.
func (s *rabbitSource) current() (<-chan amqp.Delivery, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.IsClosed() || s.ch.IsClosed() { // a channel closes alone on a channel error (its queue deleted)
		if s.conn != nil {
			s.conn.Close()
		}
		s.conn = nil
		if err := s.connect(); err != nil {
			return nil, 0, err
		}
	}
	return s.deliveries, s.gen, nil
}

func (s *rabbitSource) Receive(ctx context.Context, max int, wait time.Duration) ([]Record, error) {
	dels, gen, err := s.current()
	if err != nil {
		return nil, err
	}
	var out []Record
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	for len(out) < max {
		var d amqp.Delivery
		var ok bool
		if len(out) > 0 || wait <= 0 { // take at once what is there
			select {
			case d, ok = <-dels:
			default:
				return out, nil
			}
		} else {
			select {
			case d, ok = <-dels:
			case <-timer:
				return out, nil
			case <-ctx.Done():
				return out, nil
			}
		}
		if !ok {
			return out, fmt.Errorf("connection to %s lost", s.r.URL)
		}
		rec, ok, err := s.record(d, gen)
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, rec)
		}
	}
	return out, nil
}

// record makes a delivery of channel generation gen a held record; false
// when that channel is gone (the broker gave the delivery back).
func (s *rabbitSource) record(d amqp.Delivery, gen int) (Record, bool, error) {
	data, err := json.Marshal(newRMQRecord(d))
	if err != nil {
		return Record{}, false, err
	}
	// The record's identity across deliveries: the message id its
	// publisher gave, or its content's digest.
	id := d.MessageId
	if id == "" {
		sum := sha256.Sum256(d.Body)
		id = hex.EncodeToString(sum[:16])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return Record{}, false, nil
	}
	handle := strconv.Itoa(gen) + "." + strconv.FormatUint(d.DeliveryTag, 10)
	s.held[handle] = time.Now().Add(s.hold)
	return Record{ID: id, Data: data, Handle: handle}, true, nil
}

// tag returns a held handle's delivery tag on the current channel.
func (s *rabbitSource) tag(handle string) (uint64, bool) {
	if _, ok := s.held[handle]; !ok {
		return 0, false
	}
	gen, tag, _ := strings.Cut(handle, ".")
	n, err := strconv.ParseUint(tag, 10, 64)
	return n, err == nil && gen == strconv.Itoa(s.gen)
}

func (s *rabbitSource) Delete(ctx context.Context, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, r := range recs {
		tag, ok := s.tag(r.Handle)
		if !ok {
			// Its hold ended or the channel closed: the broker gave it back.
			errs = append(errs, fmt.Errorf("record %s: no longer held; it comes back", r.ID))
			continue
		}
		delete(s.held, r.Handle)
		if err := s.ch.Ack(tag, false); err != nil {
			errs = append(errs, fmt.Errorf("ack %s: %w", r.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (s *rabbitSource) Extend(ctx context.Context, recs []Record, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		if _, ok := s.tag(r.Handle); !ok {
			return fmt.Errorf("record %s: no longer held", r.ID)
		}
		s.held[r.Handle] = time.Now().Add(d)
	}
	return nil
}

// expire gives the broker back (nack with requeue) what was held past its
// hold, as a queue's visibility timeout would.
func (s *rabbitSource) expire() {
	t := time.NewTicker(min(max(s.hold/10, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.mu.Lock()
			for h, end := range s.held {
				if now.After(end) {
					if tag, ok := s.tag(h); ok {
						s.ch.Nack(tag, false, true)
					}
					delete(s.held, h)
				}
			}
			s.mu.Unlock()
		}
	}
}

func (s *rabbitSource) Hold() time.Duration    { return s.hold }
func (s *rabbitSource) FilterFields() []string { return []string{"data"} }

// FilterView is a record as filters see it: its data decoded from base64,
// so that data holding JSON is matched as JSON, as Lambda matches an MQ
// message's data.
func (s *rabbitSource) FilterView(rec Record) []byte {
	var m map[string]any
	if json.Unmarshal(rec.Data, &m) != nil {
		return rec.Data
	}
	if d, ok := m["data"].(string); ok {
		if b, err := base64.StdEncoding.DecodeString(d); err == nil && utf8.Valid(b) {
			m["data"] = string(b)
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return rec.Data
	}
	return out
}

// Envelope is Lambda's RabbitMQ event around the records.
func (s *rabbitSource) Envelope(recs []Record) []byte {
	key, _ := json.Marshal(s.r.Queue + "::" + s.r.VirtualHost)
	arn, _ := json.Marshal(s.r.ARN)
	b := fmt.Appendf(nil, `{"eventSource":"aws:rmq","eventSourceArn":%s,"rmqMessagesByQueue":{%s:[`, arn, key)
	return append(joinRecords(b, recs), "]}}"...)
}

func (s *rabbitSource) Close() {
	close(s.done)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close() // the broker requeues what was held
	}
}
