// Package queues is Kiln's queue service: SQS's API (both its AWS JSON and
// its query protocol) on Kiln's endpoint, so that `aws sqs`, boto3 and the
// SDKs' SQS clients work unchanged, over JetStream.
//
// # Storage
//
// A queue is a JetStream stream with interest retention (a message is gone
// once acknowledged) and pull consumers whose acknowledgement wait is the
// queue's visibility timeout: a message received is one delivered and not
// yet acknowledged, DeleteMessage acknowledges it, ChangeMessageVisibility
// negatively acknowledges it with the new timeout as the redelivery delay,
// and a message not deleted in time is redelivered, its delivery count
// being ApproximateReceiveCount. The receipt handle is the delivery's
// acknowledgement subject, so any process can delete what another one
// handed out. Messages are JSON envelopes carrying the body, attributes,
// sender, send time, group and deduplication id.
//
// A standard queue has one subject and one consumer. A FIFO queue has
// fifoBuckets subjects, a message group hashing to one of them, each with
// a consumer that lets one message at a time be in flight: a group's
// messages leave in order, one at a time, and a receive gathers messages
// of several buckets. Deduplication is JetStream's (the message id header,
// over SQS's five-minute window). A delayed message that is delivered early
// goes back with the remaining delay, and does not count as a receive.
// A message received more than its queue's RedrivePolicy maxReceiveCount
// times moves to the dead-letter queue instead of being returned.
//
// Queue descriptions (attributes, tags) are kept in KV bucket
// kiln-sqs-queues, key ACCOUNT.NAME. A service caches the queues it uses
// and drops one from its cache when a watch of the bucket reports a
// change, so a change made through another process is seen a moment later.
package queues

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	bucket = "kiln-sqs-queues"
	// fifoBuckets is how many subjects (and consumers, each with one
	// message in flight) a FIFO queue spreads its message groups over.
	fifoBuckets = 16
	// maxInFlight is SQS's limit of in-flight messages of a standard queue.
	maxInFlight = 120000
	// dedupWindow is SQS's deduplication interval.
	dedupWindow = 5 * time.Minute
)

// Config configures the service. NATS is required.
type Config struct {
	NATS *nats.Conn
	// Region goes into queue ARNs; empty means us-east-1.
	Region string
	// Replicas of each queue's stream (cluster mode); 0 means 1.
	Replicas int
	Logger   *slog.Logger
}

// Service is the queue service.
type Service struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	kv  *natsd.KV // read so that a queue is found right after it was created
	log *slog.Logger

	open *natsd.Cache[*queue] // by KV key, while their description is current
	mu   sync.Mutex           // guards queue.next
}

// queue is an open queue: its description at a KV revision and its
// stream and consumers.
type queue struct {
	*meta
	rev    uint64
	stream jetstream.Stream
	cons   []jetstream.Consumer
	next   int // the FIFO bucket the next receive starts with (under Service.mu)
}

// New opens the queue service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.NATS == nil {
		return nil, errors.New("queues: NATS connection required")
	}
	cfg.Region, cfg.Logger = cmp.Or(cfg.Region, "us-east-1"), cmp.Or(cfg.Logger, slog.Default())
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, err
	}
	kv, open, err := natsd.OpenCatalog[*queue](ctx, js, bucket, cfg.Replicas)
	if err != nil {
		return nil, fmt.Errorf("queues: %w", err)
	}
	return &Service{cfg: cfg, nc: cfg.NATS, js: js, kv: kv, log: cfg.Logger, open: open}, nil
}

func key(account, name string) string { return account + "." + name }

// StreamName is the JetStream stream of a queue: KILN_QUEUE_ACCOUNT_NAME, or
// KILN_FIFO_ACCOUNT_BASE for BASE.fifo (stream names have no dots).
func StreamName(account, name string) string {
	if base, ok := strings.CutSuffix(name, fifoSuffix); ok {
		return "KILN_FIFO_" + account + "_" + base
	}
	return "KILN_QUEUE_" + account + "_" + name
}

func (m *meta) subject() string {
	if base, ok := strings.CutSuffix(m.Name, fifoSuffix); ok {
		return "kiln.fifo." + m.Account + "." + base
	}
	return "kiln.queue." + m.Account + "." + m.Name
}

// subjectFor is the subject a message of group goes to.
func (m *meta) subjectFor(group string) string {
	if !m.Fifo {
		return m.subject()
	}
	h := fnv.New32a()
	h.Write([]byte(group))
	return m.subject() + "." + strconv.Itoa(int(h.Sum32()%fifoBuckets))
}

func (m *meta) streamConfig(replicas int) jetstream.StreamConfig {
	subjects := []string{m.subject()}
	if m.Fifo {
		subjects = []string{m.subject() + ".*"}
	}
	age := time.Duration(m.int(attrRetention)) * time.Second
	return jetstream.StreamConfig{Name: StreamName(m.Account, m.Name), Description: "Kiln queue " + m.Name,
		Subjects: subjects, Retention: jetstream.InterestPolicy, Storage: jetstream.FileStorage,
		Replicas: max(replicas, 1), MaxAge: age, Duplicates: min(dedupWindow, age)}
}

func (m *meta) consumerConfigs() []jetstream.ConsumerConfig {
	// A timeout of 0 is kept by negative acknowledgement on receipt; the
	// consumer's wait only needs to be positive.
	wait := max(m.visibility(), time.Second)
	if !m.Fifo {
		return []jetstream.ConsumerConfig{{Durable: "sqs", AckPolicy: jetstream.AckExplicitPolicy, AckWait: wait,
			MaxDeliver: -1, MaxAckPending: maxInFlight, MaxWaiting: 4096}}
	}
	var out []jetstream.ConsumerConfig
	for i := range fifoBuckets {
		out = append(out, jetstream.ConsumerConfig{Durable: "g" + strconv.Itoa(i), FilterSubject: m.subject() + "." + strconv.Itoa(i),
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: wait, MaxDeliver: -1, MaxAckPending: 1, MaxWaiting: 4096})
	}
	return out
}

// provision creates or updates a queue's stream and consumers to match m.
func (s *Service) provision(ctx context.Context, m *meta) (*queue, error) {
	st, err := s.js.CreateOrUpdateStream(ctx, m.streamConfig(s.cfg.Replicas))
	if err != nil {
		return nil, fmt.Errorf("queue stream: %w", err)
	}
	q := &queue{meta: m, stream: st}
	for _, cc := range m.consumerConfigs() {
		c, err := st.CreateOrUpdateConsumer(ctx, cc)
		if err != nil {
			return nil, fmt.Errorf("queue consumer: %w", err)
		}
		q.cons = append(q.cons, c)
	}
	return q, nil
}

func errNotExist() *Error {
	return errorf(errNoQueue, "The specified queue does not exist or you do not have access to it.")
}

// queue opens account's queue name.
func (s *Service) queue(ctx context.Context, account, name string) (*queue, error) {
	k := key(account, name)
	if !nameRe.MatchString(strings.TrimSuffix(name, fifoSuffix)) {
		return nil, errNotExist()
	}
	if q, ok := s.open.Get(k); ok {
		return q, nil
	}
	v, rev, err := s.kv.Read(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, errNotExist()
	}
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("queue %s: %w", k, err)
	}
	st, err := s.js.Stream(ctx, StreamName(account, name))
	if err != nil {
		return nil, fmt.Errorf("queue stream: %w", err)
	}
	q := &queue{meta: &m, rev: rev, stream: st}
	for _, cc := range m.consumerConfigs() {
		c, err := st.Consumer(ctx, cc.Durable)
		if err != nil {
			return nil, fmt.Errorf("queue consumer: %w", err)
		}
		q.cons = append(q.cons, c)
	}
	s.open.Put(k, q, rev)
	return q, nil
}

// Create creates a queue, or returns quietly when one of that name exists
// with the same attributes (CreateQueue is idempotent).
func (s *Service) Create(ctx context.Context, account, name string, attrs, tags map[string]string) error {
	fifo := strings.HasSuffix(name, fifoSuffix)
	if v, ok := attrs[attrFifo]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errorf(errAttrValue, "Invalid value for the parameter FifoQueue.")
		}
		if b != fifo {
			return invalid("for parameter QueueName is invalid. Reason: The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.")
		}
	}
	if err := checkName(name, fifo); err != nil {
		return err
	}
	clean, err := checkAttributes(attrs, fifo, true)
	if err != nil {
		return err
	}
	if v, _, err := s.kv.Read(ctx, key(account, name)); err == nil {
		var m meta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		if attr, same := m.sameAttributes(clean); !same {
			return errorf(errQueueExists, "A queue already exists with the same name and a different value for attribute %s", attr)
		}
		return nil
	}
	m := newMeta(account, name, clean, tags)
	if _, err := s.provision(ctx, m); err != nil {
		return err
	}
	b, _ := json.Marshal(m)
	if _, err := s.kv.Create(ctx, key(account, name), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	return nil
}

// Delete deletes a queue and its messages.
func (s *Service) Delete(ctx context.Context, account, name string) error {
	if _, err := s.queue(ctx, account, name); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, key(account, name)); err != nil {
		return err
	}
	s.open.Forget(key(account, name), 0)
	if err := s.js.DeleteStream(ctx, StreamName(account, name)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	return nil
}

// List returns the names of account's queues that start with prefix, sorted.
func (s *Service) List(ctx context.Context, account, prefix string) ([]string, error) {
	// Seeing every write (natsd.KV.ReadKeys): a listing answered by a
	// lagging replica left out a queue created a moment before.
	keys, err := s.kv.ReadKeys(ctx, account+".>")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, k := range keys {
		name := strings.TrimPrefix(k, account+".")
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if _, _, err := s.kv.Read(ctx, k); errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted
		} else if err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

// Exists reports whether account has queue name (nil), or why not.
func (s *Service) Exists(ctx context.Context, account, name string) error {
	_, err := s.queue(ctx, account, name)
	return err
}

// Attributes returns a queue's attributes: those set, the defaults and the
// computed ones (ARN, timestamps, approximate counts).
func (s *Service) Attributes(ctx context.Context, account, name string) (map[string]string, error) {
	q, err := s.queue(ctx, account, name)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, spec := range settable {
		if spec.def != "" {
			out[k] = spec.def
		}
	}
	for k, v := range q.Attributes {
		out[k] = v
	}
	if q.Fifo {
		out[attrFifo] = "true"
		if _, ok := out[attrContentDedup]; !ok {
			out[attrContentDedup] = "false"
		}
	}
	out[attrArn] = ARN(s.cfg.Region, account, name)
	out[attrCreated] = strconv.FormatInt(q.Created, 10)
	out[attrModified] = strconv.FormatInt(q.Modified, 10)
	var visible, inFlight uint64
	for _, c := range q.cons {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, err
		}
		visible += info.NumPending
		inFlight += uint64(info.NumAckPending)
	}
	out[attrVisible] = strconv.FormatUint(visible, 10)
	out[attrNotVisible] = strconv.FormatUint(inFlight, 10)
	out[attrDelayed] = "0"
	return out, nil
}

// SetAttributes changes a queue's attributes.
func (s *Service) SetAttributes(ctx context.Context, account, name string, attrs map[string]string) error {
	return s.modify(ctx, account, name, func(m *meta) error {
		clean, err := checkAttributes(attrs, m.Fifo, false)
		if err != nil {
			return err
		}
		for k, v := range clean {
			if v == "" {
				delete(m.Attributes, k)
				continue
			}
			m.Attributes[k] = v
		}
		m.Modified = time.Now().Unix()
		_, err = s.provision(ctx, m)
		return err
	})
}

// modify changes a copy of a queue's description and stores it, if the
// description did not change meanwhile.
func (s *Service) modify(ctx context.Context, account, name string, change func(*meta) error) error {
	q, err := s.queue(ctx, account, name)
	if err != nil {
		return err
	}
	m := *q.meta
	m.Attributes, m.Tags = maps.Clone(q.Attributes), maps.Clone(q.Tags)
	if m.Attributes == nil {
		m.Attributes = map[string]string{}
	}
	if m.Tags == nil {
		m.Tags = map[string]string{}
	}
	if err := change(&m); err != nil {
		return err
	}
	b, _ := json.Marshal(&m)
	rev, err := s.kv.Update(ctx, key(account, name), b, q.rev)
	if err != nil {
		return err
	}
	s.open.Forget(key(account, name), rev)
	return nil
}

// Tags returns a queue's tags.
func (s *Service) Tags(ctx context.Context, account, name string) (map[string]string, error) {
	q, err := s.queue(ctx, account, name)
	if err != nil {
		return nil, err
	}
	return q.Tags, nil
}

// modifyTags changes a queue's tags.
func (s *Service) modifyTags(ctx context.Context, account, name string, change func(map[string]string)) error {
	return s.modify(ctx, account, name, func(m *meta) error {
		change(m.Tags)
		return nil
	})
}

// Purge deletes every message of a queue.
func (s *Service) Purge(ctx context.Context, account, name string) error {
	q, err := s.queue(ctx, account, name)
	if err != nil {
		return err
	}
	return q.stream.Purge(ctx)
}

// Attribute is a message attribute's value.
type Attribute struct {
	DataType    string
	StringValue *string `json:",omitempty"`
	BinaryValue []byte  `json:",omitempty"`
}

// SendInput is one message to send.
type SendInput struct {
	MessageBody             string
	DelaySeconds            *int
	MessageAttributes       map[string]Attribute
	MessageSystemAttributes map[string]Attribute
	MessageDeduplicationId  string
	MessageGroupId          string
}

// SendResult is a sent message.
type SendResult struct {
	MessageId                    string
	MD5OfMessageBody             string
	MD5OfMessageAttributes       string `json:",omitempty"`
	MD5OfMessageSystemAttributes string `json:",omitempty"`
	SequenceNumber               string `json:",omitempty"`
}

// envelope is a message as kept in JetStream.
type envelope struct {
	ID      string               `json:"id"`
	Body    string               `json:"b"`
	Attrs   map[string]Attribute `json:"a,omitempty"`
	Trace   string               `json:"t,omitempty"` // AWSTraceHeader
	Sent    int64                `json:"s"`           // Unix ms
	Sender  string               `json:"u,omitempty"`
	Group   string               `json:"g,omitempty"`
	Dedup   string               `json:"d,omitempty"`
	Visible int64                `json:"v,omitempty"` // delayed until, Unix ms
}

// Send sends a message to a queue. sender is SenderId: the account.
func (s *Service) Send(ctx context.Context, account, name string, in SendInput) (*SendResult, error) {
	q, err := s.queue(ctx, account, name)
	if err != nil {
		return nil, err
	}
	if err := q.check(in); err != nil {
		return nil, err
	}
	return s.send(ctx, q, account, in)
}

// checkMessage validates a message's body and attributes for q.
func (q *queue) check(in SendInput) error {
	if in.MessageBody == "" {
		return errorf(errMissingParam, "The request must contain the parameter MessageBody.")
	}
	if !validContents(in.MessageBody) {
		return errorf(errContents, "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF")
	}
	size, err := checkMessageAttributes(in.MessageAttributes)
	if err != nil {
		return err
	}
	if max := q.int(attrMaxSize); len(in.MessageBody)+size > max {
		return invalid("for parameter MessageBody is invalid. Reason: Message must be shorter than %d bytes.", max)
	}
	for n, a := range in.MessageSystemAttributes {
		if n != "AWSTraceHeader" || a.DataType != "String" || deref(a.StringValue) == "" {
			return invalid("for parameter MessageSystemAttributes is invalid. Reason: only AWSTraceHeader, a String, is supported.")
		}
	}
	if in.DelaySeconds != nil && (*in.DelaySeconds < 0 || *in.DelaySeconds > 900) {
		return invalid("%d for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900.", *in.DelaySeconds)
	}
	if q.Fifo {
		if in.DelaySeconds != nil && *in.DelaySeconds != 0 {
			return invalid("%d for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.", *in.DelaySeconds)
		}
		if in.MessageGroupId == "" {
			return errorf(errMissingParam, "The request must contain the parameter MessageGroupId.")
		}
		if in.MessageDeduplicationId == "" && q.Attributes[attrContentDedup] != "true" {
			return invalid("for parameter MessageDeduplicationId is invalid. Reason: The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly")
		}
	} else if in.MessageDeduplicationId != "" {
		return invalid("%s for parameter MessageDeduplicationId is invalid. Reason: The request includes a parameter that is not valid for this queue type.", in.MessageDeduplicationId)
	}
	for _, id := range []string{in.MessageGroupId, in.MessageDeduplicationId} {
		if len(id) > 128 || !printableASCII(id) {
			return invalid("%s for parameter MessageGroupId or MessageDeduplicationId is invalid. Reason: up to 128 printable ASCII characters.", id)
		}
	}
	return nil
}

func (s *Service) send(ctx context.Context, q *queue, sender string, in SendInput) (*SendResult, error) {
	now := time.Now()
	env := envelope{ID: api.NewUUID(), Body: in.MessageBody, Attrs: in.MessageAttributes, Sent: now.UnixMilli(),
		Sender: sender, Group: in.MessageGroupId, Dedup: in.MessageDeduplicationId}
	if a, ok := in.MessageSystemAttributes["AWSTraceHeader"]; ok {
		env.Trace = deref(a.StringValue)
	}
	delay := q.int(attrDelay)
	if in.DelaySeconds != nil {
		delay = *in.DelaySeconds
	}
	if delay > 0 {
		env.Visible = now.Add(time.Duration(delay) * time.Second).UnixMilli()
	}
	if q.Fifo && env.Dedup == "" {
		sum := sha256.Sum256([]byte(in.MessageBody))
		env.Dedup = hex.EncodeToString(sum[:])
	}
	data, _ := json.Marshal(&env)
	var opts []jetstream.PublishOpt
	if env.Dedup != "" {
		opts = append(opts, jetstream.WithMsgID(env.Dedup))
	}
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: q.subjectFor(env.Group), Data: data}, opts...)
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	if ack.Duplicate { // SQS answers a deduplicated send with the first message's id
		if raw, err := q.stream.GetMsg(ctx, ack.Sequence); err == nil {
			var first envelope
			if json.Unmarshal(raw.Data, &first) == nil {
				env.ID = first.ID
			}
		}
	}
	res := &SendResult{MessageId: env.ID, MD5OfMessageBody: md5Hex(in.MessageBody),
		MD5OfMessageAttributes:       md5OfAttributes(in.MessageAttributes),
		MD5OfMessageSystemAttributes: md5OfAttributes(in.MessageSystemAttributes)}
	if q.Fifo {
		res.SequenceNumber = fmt.Sprintf("%020d", ack.Sequence)
	}
	return res, nil
}

// Message is a received message, with every system attribute and message
// attribute it has (the API layer keeps those the caller asked for).
type Message struct {
	MessageId              string
	ReceiptHandle          string
	MD5OfBody              string
	Body                   string
	Attributes             map[string]string    `json:",omitempty"`
	MD5OfMessageAttributes string               `json:",omitempty"`
	MessageAttributes      map[string]Attribute `json:",omitempty"`
}

// ReceiveInput says how to receive.
type ReceiveInput struct {
	Max  int           // 1 to 10; 0 means 1
	Wait time.Duration // long polling; 0 returns at once
	// Visibility overrides the queue's visibility timeout for these messages.
	Visibility *time.Duration
}

// Receive receives up to in.Max messages, waiting up to in.Wait for the first.
func (s *Service) Receive(ctx context.Context, account, name string, in ReceiveInput) ([]Message, error) {
	q, err := s.queue(ctx, account, name)
	if err != nil {
		return nil, err
	}
	n := max(in.Max, 1)
	deadline := time.Now().Add(in.Wait)
	for {
		out, err := s.fetch(ctx, q, n, 0, in.Visibility)
		if err != nil || len(out) > 0 || !time.Now().Before(deadline) {
			return out, err
		}
		if q.Fifo {
			// Sixteen buckets have no single pull to wait on: look again soon.
			select {
			case <-ctx.Done():
			case <-time.After(min(100*time.Millisecond, time.Until(deadline))):
			}
		} else {
			// Wait for one message, then take at once what else is there.
			out, err = s.fetch(ctx, q, 1, max(time.Until(deadline), time.Second), in.Visibility)
			if err != nil {
				return nil, err
			}
			if len(out) > 0 && n > 1 {
				more, err := s.fetch(ctx, q, n-1, 0, in.Visibility)
				if err != nil {
					s.log.Warn("queues: receive", "queue", name, "err", err)
				}
				out = append(out, more...)
			}
			if len(out) > 0 {
				return out, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// fetch takes up to n deliveries (waiting up to wait for them, 0: not at
// all) and turns those that are due into messages.
func (s *Service) fetch(ctx context.Context, q *queue, n int, wait time.Duration, vis *time.Duration) ([]Message, error) {
	var out []Message
	cons := q.cons
	if q.Fifo {
		var err error
		if cons, err = s.busyBuckets(ctx, q); err != nil {
			return nil, err
		}
	}
	for _, c := range cons {
		if len(out) >= n {
			break
		}
		var batch jetstream.MessageBatch
		var err error
		want := n - len(out)
		if q.Fifo {
			want = 1 // a bucket has one message in flight at most
		}
		if wait > 0 {
			fctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			batch, err = c.Fetch(want, jetstream.FetchContext(fctx))
		} else {
			batch, err = c.FetchNoWait(want)
		}
		if err != nil {
			return out, err
		}
		for m := range batch.Messages() {
			if msg, ok := s.deliverable(ctx, q, m, vis); ok {
				out = append(out, msg)
			}
		}
		if err := batch.Error(); err != nil && !NothingNow(err) {
			return out, err
		}
	}
	return out, nil
}

// busyBuckets returns the consumers of a FIFO queue's buckets that hold
// messages (one stream request, rather than a fetch from each of the
// sixteen), starting from a rotating bucket so that no group starves.
func (s *Service) busyBuckets(ctx context.Context, q *queue) ([]jetstream.Consumer, error) {
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(q.subject()+".*"))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	start := q.next
	q.next = (q.next + 1) % len(q.cons)
	s.mu.Unlock()
	var out []jetstream.Consumer
	for i := range len(q.cons) {
		b := (start + i) % len(q.cons)
		if info.State.Subjects[q.subject()+"."+strconv.Itoa(b)] > 0 {
			out = append(out, q.cons[b])
		}
	}
	return out, nil
}

// NothingNow tells the errors of a JetStream fetch that only mean "no
// message now".
func NothingNow(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoMessages) || strings.Contains(err.Error(), "MaxAckPending")
}

// deliverable turns a delivery into a message, or puts it back (delayed),
// or moves it to the dead-letter queue.
func (s *Service) deliverable(ctx context.Context, q *queue, m jetstream.Msg, vis *time.Duration) (Message, bool) {
	var env envelope
	if err := json.Unmarshal(m.Data(), &env); err != nil {
		// Only a NATS client writing to the subject by hand makes these.
		s.log.Warn("queues: dropping a message that is not a Kiln queue message", "queue", q.Name, "err", err)
		m.Term()
		return Message{}, false
	}
	md, err := m.Metadata()
	if err != nil {
		m.Nak()
		return Message{}, false
	}
	now := time.Now()
	if env.Visible > now.UnixMilli() {
		m.NakWithDelay(time.Until(time.UnixMilli(env.Visible)))
		return Message{}, false
	}
	count := int(md.NumDelivered)
	if env.Visible > 0 {
		count = max(count-1, 1) // the early delivery of a delayed message was no receive
	}
	if rp := q.redrive(); rp != nil && count > rp.MaxReceiveCount {
		if err := s.moveToDLQ(ctx, rp, env, md.Sequence.Stream); err != nil {
			s.log.Warn("queues: dead-letter queue", "queue", q.Name, "dlq", rp.DeadLetterTargetArn, "err", err)
		} else if err := m.DoubleAck(ctx); err == nil {
			return Message{}, false
		}
	}
	v := q.visibility()
	if vis != nil {
		v = *vis
	}
	switch {
	case v == 0:
		m.Nak()
	case v != q.visibility():
		m.NakWithDelay(v)
	}
	attrs := map[string]string{
		"SentTimestamp":           strconv.FormatInt(env.Sent, 10),
		"ApproximateReceiveCount": strconv.Itoa(count),
		"SenderId":                env.Sender,
	}
	if count == 1 {
		attrs["ApproximateFirstReceiveTimestamp"] = strconv.FormatInt(now.UnixMilli(), 10)
	}
	if env.Trace != "" {
		attrs["AWSTraceHeader"] = env.Trace
	}
	if env.Group != "" {
		attrs["MessageGroupId"] = env.Group
	}
	if q.Fifo {
		attrs["MessageDeduplicationId"] = env.Dedup
		attrs["SequenceNumber"] = fmt.Sprintf("%020d", md.Sequence.Stream)
	}
	return Message{MessageId: env.ID, ReceiptHandle: base64.RawURLEncoding.EncodeToString([]byte(m.Reply())),
		MD5OfBody: md5Hex(env.Body), Body: env.Body, Attributes: attrs,
		MD5OfMessageAttributes: md5OfAttributes(env.Attrs), MessageAttributes: env.Attrs}, true
}

// moveToDLQ stores a message in its queue's dead-letter queue, keeping its
// id and send time; the id header makes a repeated move land once.
func (s *Service) moveToDLQ(ctx context.Context, rp *RedrivePolicy, env envelope, seq uint64) error {
	_, account, name, err := ParseARN(rp.DeadLetterTargetArn)
	if err != nil {
		return err
	}
	dlq, err := s.queue(ctx, account, name)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(&env)
	_, err = s.js.PublishMsg(ctx, &nats.Msg{Subject: dlq.subjectFor(env.Group), Data: data},
		jetstream.WithMsgID("dlq-"+env.ID+"-"+strconv.FormatUint(seq, 10)))
	return err
}

// ackSubject checks a receipt handle of q and returns its acknowledgement
// subject.
func (q *queue) ackSubject(receipt string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(receipt)
	bad := errorf(errReceipt, "The input receipt handle \"%s\" is not a valid receipt handle.", receipt)
	if err != nil || !utf8.Valid(b) {
		return "", bad
	}
	subj := string(b)
	tok := strings.Split(subj, ".")
	stream := StreamName(q.Account, q.Name)
	// $JS.ACK.<stream>.<consumer>.… (v1) or $JS.ACK.<domain>.<account>.<stream>.… (v2)
	ok := len(tok) >= 9 && tok[0] == "$JS" && tok[1] == "ACK" &&
		(len(tok) == 9 && tok[2] == stream || len(tok) >= 12 && tok[4] == stream) &&
		!strings.ContainsAny(subj, "*> \t\r\n")
	if !ok {
		return "", bad
	}
	return subj, nil
}

// DeleteMessage deletes the message a receipt handle names.
func (s *Service) DeleteMessage(ctx context.Context, account, name, receipt string) error {
	subj, err := s.ackSubject(ctx, account, name, receipt)
	if err != nil {
		return err
	}
	return s.ack(ctx, subj, []byte("+ACK"))
}

// DeleteMessages deletes the messages receipt handles name, all at once,
// and returns each one's error.
func (s *Service) DeleteMessages(ctx context.Context, account, name string, receipts []string) []error {
	return each(len(receipts), func(i int) error { return s.DeleteMessage(ctx, account, name, receipts[i]) })
}

// each runs f for 0 to n-1 at once (n is a batch: a few) and returns the
// errors by index.
func each(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errs
}

// ackSubject checks a receipt handle of account's queue name and returns
// its acknowledgement subject.
func (s *Service) ackSubject(ctx context.Context, account, name, receipt string) (string, error) {
	q, err := s.queue(ctx, account, name)
	if err != nil {
		return "", err
	}
	return q.ackSubject(receipt)
}

// ChangeVisibility makes a received message visible again after timeout.
func (s *Service) ChangeVisibility(ctx context.Context, account, name, receipt string, timeout int) error {
	subj, err := s.ackSubject(ctx, account, name, receipt)
	if err != nil {
		return err
	}
	if timeout < 0 || timeout > maxVisibility {
		return invalid("%d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200, if provided.", timeout)
	}
	payload := []byte("-NAK")
	if timeout > 0 {
		payload = fmt.Appendf(nil, `-NAK {"delay":%d}`, time.Duration(timeout)*time.Second)
	}
	return s.ack(ctx, subj, payload)
}

// ack sends an acknowledgement and waits for JetStream to confirm it.
func (s *Service) ack(ctx context.Context, subj string, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.nc.RequestWithContext(ctx, subj, payload); err != nil {
		return fmt.Errorf("acknowledge: %w", err)
	}
	return nil
}

func validContents(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !(r == 0x9 || r == 0xA || r == 0xD || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
			return false
		}
	}
	return true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

var attrNameRe = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,256}$`)

// checkMessageAttributes validates message attributes and returns the
// bytes they count towards the message size.
func checkMessageAttributes(attrs map[string]Attribute) (int, error) {
	if len(attrs) > maxMessageAttrs {
		return 0, invalid("for parameter MessageAttributes is invalid. Reason: Number of message attributes [%d] exceeds the allowed maximum [%d].", len(attrs), maxMessageAttrs)
	}
	size := 0
	for n, a := range attrs {
		lower := strings.ToLower(n)
		if !attrNameRe.MatchString(n) || strings.HasPrefix(lower, "aws.") || strings.HasPrefix(lower, "amazon.") ||
			strings.Contains(n, "..") || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".") {
			return 0, invalid("for parameter MessageAttributes is invalid. Reason: Message (user) attribute name '%s' is invalid.", n)
		}
		base, _, _ := strings.Cut(a.DataType, ".")
		switch base {
		case "String", "Number":
			if a.StringValue == nil || *a.StringValue == "" {
				return 0, invalid("for parameter MessageAttributes is invalid. Reason: Message (user) attribute '%s' must contain a non-empty value of type '%s'.", n, base)
			}
			if !validContents(*a.StringValue) {
				return 0, errorf(errContents, "Invalid characters found in message attribute '%s'.", n)
			}
			if base == "Number" {
				if _, err := strconv.ParseFloat(*a.StringValue, 64); err != nil {
					return 0, invalid("for parameter MessageAttributes is invalid. Reason: Can't cast the value of message (user) attribute '%s' to a number.", n)
				}
			}
			if len(a.BinaryValue) > 0 {
				return 0, invalid("for parameter MessageAttributes is invalid. Reason: Message (user) attribute '%s' has a BinaryValue but DataType '%s'.", n, a.DataType)
			}
			size += len(*a.StringValue)
		case "Binary":
			if len(a.BinaryValue) == 0 {
				return 0, invalid("for parameter MessageAttributes is invalid. Reason: Message (user) attribute '%s' must contain a non-empty value of type 'Binary'.", n)
			}
			size += len(a.BinaryValue)
		default:
			return 0, invalid("for parameter MessageAttributes is invalid. Reason: The type of message (user) attribute '%s' is invalid. You must use only the following supported type prefixes: Binary, Number, String.", n)
		}
		if len(a.DataType) > 256 {
			return 0, invalid("for parameter MessageAttributes is invalid. Reason: Message (user) attribute '%s' has a type longer than 256 characters.", n)
		}
		size += len(n) + len(a.DataType)
	}
	return size, nil
}

// SendRecord stores a record Kiln itself produces (an async invoke's
// destination record, a dead-letter event) in account's queue name,
// creating the queue with default attributes at its first record as
// destinations always did. attrs become String message attributes;
// dedupID makes a repeated delivery land once within five minutes.
func (s *Service) SendRecord(ctx context.Context, account, name string, body []byte, attrs map[string]string, dedupID string) error {
	q, err := s.queue(ctx, account, name)
	var e *Error
	if errors.As(err, &e) && e.Code == errNoQueue.code {
		if err := s.Create(ctx, account, name, nil, nil); err != nil {
			return err
		}
		q, err = s.queue(ctx, account, name)
	}
	if err != nil {
		return err
	}
	env := envelope{ID: api.NewUUID(), Body: string(body), Sent: time.Now().UnixMilli(), Sender: account}
	for k, v := range attrs {
		if env.Attrs == nil {
			env.Attrs = map[string]Attribute{}
		}
		env.Attrs[k] = Attribute{DataType: "String", StringValue: &v}
	}
	data, _ := json.Marshal(&env)
	_, err = s.js.PublishMsg(ctx, &nats.Msg{Subject: q.subjectFor(""), Data: data}, jetstream.WithMsgID(dedupID))
	return err
}

// Stored is a message as Read finds it in a queue's stream.
type Stored struct {
	Sequence   uint64
	Time       time.Time
	Body       []byte
	Attributes map[string]string // String message attributes
}

// Read returns the messages of account's queue name from stream sequence
// from on (1 is the first), at most limit of them (0: all there are now),
// whether received or not, leaving the queue as it is. A queue that does not
// exist has none.
func Read(ctx context.Context, js jetstream.JetStream, account, name string, from uint64, limit int) ([]Stored, error) {
	st, err := js.Stream(ctx, StreamName(account, name))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// Message by message, without a consumer: a replicated queue's stream
	// (interest retention) refuses consumers of another replica count,
	// such as an ordered one.
	state := st.CachedInfo().State
	var out []Stored
	for seq := max(from, state.FirstSeq, 1); seq <= state.LastSeq && (limit == 0 || len(out) < limit); seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // received and deleted, or aged out
		}
		if err != nil {
			return nil, err
		}
		var env envelope
		if json.Unmarshal(m.Data, &env) != nil {
			continue
		}
		sm := Stored{Sequence: m.Sequence, Time: m.Time, Body: []byte(env.Body), Attributes: map[string]string{}}
		for k, a := range env.Attrs {
			sm.Attributes[k] = deref(a.StringValue)
		}
		out = append(out, sm)
	}
	return out, nil
}
