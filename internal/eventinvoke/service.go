// Package eventinvoke is Kiln's asynchronous invoke path, named after the
// components of Lambda's: the event-invoke frontend (Enqueue, behind
// `X-Amz-Invocation-Type: Event`), the queues (JetStream), the queue manager
// (dedicated queues for heavy functions, leases), the pollers (which invoke
// through the synchronous path, retry and back off) and the destinations
// (on-success, on-failure, dead-letter queues).
//
// # Queues
//
// Every event is one message of the JetStream stream KILN_EVENTS (work-queue
// retention, file storage): the payload is the message body, the invoke's
// identity and state travel in Kiln-* headers. A function's events go to one
// of the shared queues, subject kiln.events.s.SHARD.ACCOUNT.FUNCTION, SHARD
// being a hash of the function; the queue manager gives a function whose
// backlog on its shared queue grows past Tuning.DedicateBacklog a dedicated
// queue, subject kiln.events.d.ACCOUNT.FUNCTION. A queue is a durable pull
// consumer of the stream (shared-SHARD, d_ACCOUNT_FUNCTION).
//
// # Pollers and leases
//
// A poller holds leases on queues, in the JetStream KV bucket
// kiln-async-leases (key = queue, value = poller id, bucket TTL =
// Tuning.LeaseTTL); it renews them every third of the TTL. A poller that
// stops renewing loses its queues to others when the keys expire; events it
// held unacknowledged are redelivered after Tuning.AckWait. An event is
// acknowledged only once its outcome is settled (delivered to its
// destination, or dropped when none is configured): delivery is at least
// once, and events in flight when a process dies are redelivered.
//
// # Retries
//
// A function error is retried MaximumRetryAttempts times (default 2), the
// n-th retry n×Tuning.RetryBase (1 min) after the failure; throttles (429)
// and system errors are retried with exponential backoff from
// Tuning.ThrottleBase (1 s) to Tuning.ThrottleMax (5 min) until the event is
// MaximumEventAgeInSeconds old (default 6 h). Then the event goes to the
// OnFailure destination and the function's dead-letter queue; a success goes
// to OnSuccess.
//
// # Destinations
//
// OnSuccess and OnFailure take a Kiln function,
// arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER], invoked
// asynchronously with Lambda's invocation record as its event, or a Kiln
// queue, arn:aws:sqs:REGION:ACCOUNT:NAME (an SQS-shaped ARN, so that tools
// that check for one accept it). A Kiln queue is
// a queue of the queue service (package queues: `aws sqs receive-message`
// reads it), created with default attributes at its first record; ReadQueue
// reads it without receiving. A dead-letter queue
// (DeadLetterConfig.TargetArn) must be a Kiln queue; it receives the event
// itself with Lambda's message attributes RequestID, ErrorCode and
// ErrorMessage. Destinations must be in the function's account
// and region; other ARNs (SNS, EventBridge, S3, other accounts) are refused
// with InvalidParameterValueException when configured.
//
// # Sharing the machine
//
// Pollers run at most Tuning.Concurrency invokes at once, and only
// Tuning.ConcurrencyUnderSync while requests (sync invokes, enqueues) are
// being served and the CPUs are busy: queued events wait, requests do not.
package eventinvoke

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream and subjects of the event queues.
const (
	EventStream   = "KILN_EVENTS"
	eventSubjects = "kiln.events.>"
	sharedPrefix  = "kiln.events.s."
	dedicPrefix   = "kiln.events.d."
	leaseBucket   = "kiln-async-leases"
	queueBucket   = "kiln-async-queues"
)

// Headers of an event message.
const (
	hdrRequestID     = "Kiln-Request-Id"
	hdrAccount       = "Kiln-Account"
	hdrFunction      = "Kiln-Function"
	hdrQualifier     = "Kiln-Qualifier"
	hdrEnqueued      = "Kiln-Enqueued"       // unix milliseconds when accepted
	hdrClientContext = "Kiln-Client-Context" // base64 JSON, as X-Amz-Client-Context
	hdrTrace         = "Kiln-Trace-Id"       // the caller's X-Amzn-Trace-Id (its Lineage counts recursion)
	hdrAttempt       = "Kiln-Attempt"        // function errors so far
	hdrInvokes       = "Kiln-Invokes"        // invokes so far (approximateInvokeCount)
	hdrNotBefore     = "Kiln-Not-Before"     // unix milliseconds; a retry waits until then
	hdrLastVersion   = "Kiln-Last-Version"   // executed version of the last invoke
	hdrLastError     = "Kiln-Last-Error"     // FunctionError of the last invoke
	hdrLastResponse  = "Kiln-Last-Response"  // base64 of the last error document (small ones)
)

// Tuning sets the async path's knobs; zero fields take the defaults.
type Tuning struct {
	// RetryBase is the wait before the first retry of a function error; the
	// n-th retry waits n×RetryBase (Lambda: about 1 then 2 minutes). 0 means 1 min.
	RetryBase time.Duration
	// ThrottleBase and ThrottleMax bound the exponential backoff of throttled
	// events and system errors. 0 means 1 s and 5 min.
	ThrottleBase, ThrottleMax time.Duration
	// Pollers is the number of pollers in this process: 0 means 2, negative
	// means none (this process only enqueues).
	Pollers int
	// Concurrency bounds the async invokes running at once in this
	// process. 0 means 16.
	Concurrency int
	// ConcurrencyUnderSync bounds them while requests are served (sync
	// invokes, event enqueues; and for 50 ms after the last one) and the
	// machine's CPUs are more than 30% busy, so that async load leaves the
	// machine to requests: running queued events yields. 0 means 1.
	ConcurrencyUnderSync int
	// MaxDeferral is how long an event may be held back, on a busy machine,
	// while sync invokes are served (none runs meanwhile); older events run
	// at ConcurrencyUnderSync. 0 means 1 s.
	MaxDeferral time.Duration
	// Shards is the number of shared queues. 0 means 4.
	Shards int
	// DedicateBacklog is the backlog of one function on a shared queue at
	// which the queue manager gives it a dedicated queue. 0 means 1000.
	DedicateBacklog int
	// RetireAfter is how long a dedicated queue stays empty before it is
	// removed. 0 means 10 min.
	RetireAfter time.Duration
	// ManagerInterval is how often the queue manager looks at backlogs. 0 means 2 s.
	ManagerInterval time.Duration
	// LeaseTTL is how long a poller's lease on a queue lasts without
	// renewal. 0 means 10 s.
	LeaseTTL time.Duration
	// EventAgeUnit is how long one second of MaximumEventAgeInSeconds
	// lasts: 0 means a second; tests shorten it to age events quickly.
	EventAgeUnit time.Duration
	// AckWait is how long an event delivered to a poller stays invisible to
	// others without an ack or a progress report (pollers report progress
	// every AckWait/3 while an invoke runs). 0 means 10 s.
	AckWait time.Duration
}

func (t *Tuning) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.RetryBase, time.Minute)
	def(&t.ThrottleBase, time.Second)
	def(&t.ThrottleMax, 5*time.Minute)
	def(&t.RetireAfter, 10*time.Minute)
	def(&t.ManagerInterval, 2*time.Second)
	def(&t.LeaseTTL, 10*time.Second)
	def(&t.AckWait, 10*time.Second)
	def(&t.EventAgeUnit, time.Second)
	def(&t.MaxDeferral, time.Second)
	if t.Pollers == 0 {
		t.Pollers = 2
	}
	if t.Concurrency <= 0 {
		t.Concurrency = 16
	}
	if t.ConcurrencyUnderSync <= 0 {
		t.ConcurrencyUnderSync = 1
	}
	t.ConcurrencyUnderSync = min(t.ConcurrencyUnderSync, t.Concurrency)
	if t.Shards <= 0 {
		t.Shards = 4
	}
	if t.DedicateBacklog <= 0 {
		t.DedicateBacklog = 1000
	}
}

// Invoker is the synchronous invoke path the pollers call: the frontend's
// in-process Resolve and Invoke (*frontend.Frontend).
type Invoker interface {
	Resolve(ctx context.Context, account, function, qualifier string) (*metadata.Target, error)
	Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error)
}

// Config configures the service. NATS is required.
type Config struct {
	// NATS is the connection the async path uses; give it a connection of
	// its own so that its traffic never queues behind other roles'.
	NATS *nats.Conn
	// Region goes into ARNs (function ARNs of records, queue ARNs); empty means us-east-1.
	Region string
	// Replicas of the streams and buckets; 0 means 1.
	Replicas int
	// InvokesInFlight reports the invokes (sync and async) running now, as
	// counting sees them; with it, async invokes yield to sync ones (see
	// Tuning.ConcurrencyUnderSync). Nil means they yield to enqueues only.
	InvokesInFlight func() int
	// StoreFull, when set, says why JetStream takes no writes now (nil
	// when it does): an enqueue waiting for its acknowledgement then
	// fails at once with that error, as JetStream stops when its disk fills.
	StoreFull func() error
	Tuning
	Logger *slog.Logger
}

// Service is the async invoke path of one process: enqueue, queue manager
// and pollers.
type Service struct {
	cfg    Config
	tune   Tuning
	log    *slog.Logger
	js     jetstream.JetStream
	stream jetstream.Stream
	leases jetstream.KeyValue
	queues jetstream.KeyValue

	inv Invoker

	// dedicated maps "account/function" to its dedicated queue's state, from
	// the queue registry, so that Enqueue routes without reading any store.
	dedMu     sync.RWMutex
	dedicated map[string]queueState

	// changed is closed (and replaced) whenever the set of queues changes.
	chMu    sync.Mutex
	changed chan struct{}

	// Async invokes this process runs (slots taken by pollers), and the
	// invokes among them under way in the sync path.
	slotMu      sync.Mutex
	slotUsed    int
	slotWake    chan struct{} // closed when slots are released
	invoking    atomic.Int64
	lastSync    atomic.Int64 // unix nanoseconds when a sync invoke was last seen
	lastRequest atomic.Int64 // ... a sync invoke or an enqueue
	enqueuing   atomic.Int64 // Enqueue calls under way
	cpu         cpuMeter
	fnMu        sync.Mutex
	fns         map[string]*fnState

	kilnQueues *queues.Service // destinations' Kiln queues

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // pollers, manager
	work    sync.WaitGroup // events being handled
	pollers []*poller
	closed  sync.Once
}

// New opens the event stream, the queue registry and the lease bucket, and
// follows the registry. Enqueue works from now on; Start starts the
// manager and the pollers.
func New(ctx context.Context, cfg Config) (_ *Service, err error) {
	if cfg.NATS == nil {
		return nil, errors.New("eventinvoke: no NATS connection")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Replicas = max(cfg.Replicas, 1)
	cfg.Tuning.defaults()
	js, err := jetstream.New(cfg.NATS, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, tune: cfg.Tuning, log: cfg.Logger, js: js,
		dedicated: map[string]queueState{}, changed: make(chan struct{}),
		slotWake: make(chan struct{}), fns: map[string]*fnState{}}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			s.cancel() // the registry's watch
		}
	}()

	s.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventStream,
		Description: "Kiln asynchronous invocations (Event invokes, retries)",
		Subjects:    []string{eventSubjects},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("event stream: %w", err)
	}
	s.leases, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   leaseBucket,
		History:  1,
		TTL:      cfg.Tuning.LeaseTTL,
		Storage:  jetstream.MemoryStorage, // leases die with the servers that hold them
		Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	s.queues, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   queueBucket,
		History:  1,
		Storage:  jetstream.FileStorage,
		Replicas: cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("queue registry: %w", err)
	}
	if s.kilnQueues, err = queues.New(ctx, queues.Config{NATS: cfg.NATS, Region: cfg.Region, Replicas: cfg.Replicas,
		Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if err := s.watchRegistry(ctx); err != nil {
		return nil, err
	}
	for i := range s.tune.Shards {
		if _, err := s.ensureConsumer(ctx, sharedConsumer(i), sharedPrefix+strconv.Itoa(i)+".>"); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start runs the queue manager and the pollers, which invoke through inv.
func (s *Service) Start(inv Invoker) {
	s.inv = inv
	go s.cpu.run(s.ctx.Done())
	s.wg.Add(1)
	go s.manage()
	for range s.tune.Pollers {
		s.pollers = append(s.pollers, newPoller(s))
	}
	for _, p := range s.pollers {
		s.wg.Add(1)
		go p.run()
	}
}

// Close stops the pollers and the manager, gives running invokes a few
// seconds to settle and releases this process's leases. Events still
// unacknowledged are redelivered after AckWait, to this process after a
// restart or to another.
func (s *Service) Close() {
	s.closed.Do(func() {
		s.cancel()
		s.wg.Wait()
		done := make(chan struct{})
		go func() { s.work.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		for _, p := range s.pollers {
			p.releaseAll()
		}
	})
}

// EnqueueSeen notes events being taken elsewhere (by the event frontend
// process): the pollers yield to them as to this process's Enqueue calls.
func (s *Service) EnqueueSeen() { s.lastRequest.Store(time.Now().UnixNano()) }

// Enqueue stores an Event invoke durably and returns its request id: the
// frontend answers 202 after it returns. Publishes are asynchronous and
// pipelined on the connection (many enqueues share round trips), but each
// call waits for its own acknowledgement from JetStream.
func (s *Service) Enqueue(ctx context.Context, t *metadata.Target, payload []byte, clientContext, trace string) (string, error) {
	s.enqueuing.Add(1)
	defer s.enqueuing.Add(-1)
	id := api.NewUUID()
	h := nats.Header{}
	h.Set(hdrRequestID, id)
	h.Set(hdrAccount, t.Account)
	h.Set(hdrFunction, t.Ref.Name)
	if t.Ref.Qualifier != "" {
		h.Set(hdrQualifier, t.Ref.Qualifier)
	}
	h.Set(hdrEnqueued, strconv.FormatInt(time.Now().UnixMilli(), 10))
	if clientContext != "" {
		h.Set(hdrClientContext, base64.StdEncoding.EncodeToString([]byte(clientContext)))
	}
	if trace != "" {
		h.Set(hdrTrace, trace)
	}
	msg := &nats.Msg{Subject: s.subject(t.Account, t.Ref.Name), Header: h, Data: payload}
	if err := s.publish(ctx, msg); err != nil {
		return "", fmt.Errorf("enqueue event for %s: %w", t.Ref.Name, err)
	}
	return id, nil
}

// publishTimeout bounds the wait for JetStream's acknowledgement, which
// never comes when JetStream stopped (it does when its disk fills).
const publishTimeout = 30 * time.Second

// publish stores msg and waits for JetStream's acknowledgement.
func (s *Service) publish(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) error {
	f, err := s.js.PublishMsgAsync(msg, opts...)
	if err != nil {
		return err
	}
	t := time.NewTimer(publishTimeout)
	defer t.Stop()
	var poll <-chan time.Time
	if s.cfg.StoreFull != nil {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		poll = tick.C
	}
	for {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return errors.New("no acknowledgement from JetStream")
		case <-poll:
			if err := s.cfg.StoreFull(); err != nil {
				return err
			}
		}
	}
}

// subject is where a function's new events go: its dedicated queue when it
// has an active one, else its shared queue.
func (s *Service) subject(account, function string) string {
	s.dedMu.RLock()
	st, ok := s.dedicated[account+"/"+function]
	s.dedMu.RUnlock()
	if ok && st.State == stateActive {
		return dedicatedSubject(account, function)
	}
	return s.sharedSubject(account, function)
}

func (s *Service) sharedSubject(account, function string) string {
	h := fnv.New32a()
	h.Write([]byte(account))
	h.Write([]byte{'/'})
	h.Write([]byte(function))
	return sharedPrefix + strconv.Itoa(int(h.Sum32()%uint32(s.tune.Shards))) + "." + account + "." + function
}

func dedicatedSubject(account, function string) string {
	return dedicPrefix + account + "." + function
}

func sharedConsumer(shard int) string { return "shared-" + strconv.Itoa(shard) }

// dedicatedConsumer names a dedicated queue; accounts are 12 digits, so
// the name is unambiguous.
func dedicatedConsumer(account, function string) string { return "d_" + account + "_" + function }

// ensureConsumer creates (or updates) the durable consumer of a queue.
func (s *Service) ensureConsumer(ctx context.Context, name, filter string) (jetstream.Consumer, error) {
	c, err := s.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       name,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.tune.AckWait,
		MaxDeliver:    -1, // the event's maximum age bounds its retries
		MaxAckPending: 100000,
		MaxWaiting:    4096,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      s.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("queue %s: %w", name, err)
	}
	return c, nil
}

// notifyChanged wakes pollers after the set of queues changed.
func (s *Service) notifyChanged() {
	s.chMu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.chMu.Unlock()
}

func (s *Service) changedCh() <-chan struct{} {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	return s.changed
}
