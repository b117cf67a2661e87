package eventinvoke

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Lambda's defaults for asynchronous invocation.
const (
	DefaultMaximumRetryAttempts     = 2
	DefaultMaximumEventAgeInSeconds = 21600
)

// event is a queued invoke, read from its message's headers.
type event struct {
	requestID, account, function, qualifier string
	clientContext                           string // base64
	trace                                   string // X-Amzn-Trace-Id
	enqueued, notBefore                     time.Time
	attempt                                 int // function errors so far
	invokes                                 int
	lastVersion, lastError                  string
	lastResponse                            []byte
}

func parseEvent(m jetstream.Msg) (*event, error) {
	h := m.Headers()
	ev := &event{requestID: h.Get(hdrRequestID), account: h.Get(hdrAccount), function: h.Get(hdrFunction),
		qualifier: h.Get(hdrQualifier), clientContext: h.Get(hdrClientContext), trace: h.Get(hdrTrace),
		lastVersion: h.Get(hdrLastVersion), lastError: h.Get(hdrLastError)}
	ms, err := strconv.ParseInt(h.Get(hdrEnqueued), 10, 64)
	if ev.requestID == "" || ev.account == "" || ev.function == "" || err != nil {
		return nil, fmt.Errorf("event %q on %s lacks Kiln headers", ev.requestID, m.Subject())
	}
	ev.enqueued = time.UnixMilli(ms)
	if v := h.Get(hdrNotBefore); v != "" {
		ms, _ := strconv.ParseInt(v, 10, 64)
		ev.notBefore = time.UnixMilli(ms)
	}
	ev.attempt, _ = strconv.Atoi(h.Get(hdrAttempt))
	ev.invokes, _ = strconv.Atoi(h.Get(hdrInvokes))
	if v := h.Get(hdrLastResponse); v != "" {
		ev.lastResponse, _ = base64.StdEncoding.DecodeString(v)
	}
	return ev, nil
}

// header writes ev back into message headers (for a retry or a move).
func (ev *event) header() nats.Header {
	h := nats.Header{}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set(hdrRequestID, ev.requestID)
	set(hdrAccount, ev.account)
	set(hdrFunction, ev.function)
	set(hdrQualifier, ev.qualifier)
	set(hdrClientContext, ev.clientContext)
	set(hdrTrace, ev.trace)
	set(hdrEnqueued, strconv.FormatInt(ev.enqueued.UnixMilli(), 10))
	if !ev.notBefore.IsZero() {
		set(hdrNotBefore, strconv.FormatInt(ev.notBefore.UnixMilli(), 10))
	}
	if ev.attempt > 0 {
		set(hdrAttempt, strconv.Itoa(ev.attempt))
	}
	if ev.invokes > 0 {
		set(hdrInvokes, strconv.Itoa(ev.invokes))
	}
	set(hdrLastVersion, ev.lastVersion)
	set(hdrLastError, ev.lastError)
	if len(ev.lastResponse) > 0 && len(ev.lastResponse) <= 8<<10 {
		set(hdrLastResponse, base64.StdEncoding.EncodeToString(ev.lastResponse))
	}
	return h
}

// settings are the asynchronous-invocation settings that apply to an event.
type settings struct {
	retries              int
	maxAge               time.Duration
	onSuccess, onFailure string
}

// settingsOf reads the event-invoke config of the qualifier the event was
// sent to ($LATEST when unqualified), with Lambda's defaults.
func settingsOf(f *metadata.Function, qualifier string, second time.Duration) settings {
	set := settings{retries: DefaultMaximumRetryAttempts, maxAge: DefaultMaximumEventAgeInSeconds * second}
	if qualifier == "" {
		qualifier = metadata.Latest
	}
	c := f.EventInvokeConfigs[qualifier]
	if c == nil {
		return set
	}
	if c.MaximumRetryAttempts != nil {
		set.retries = *c.MaximumRetryAttempts
	}
	if c.MaximumEventAgeInSeconds != nil {
		set.maxAge = time.Duration(*c.MaximumEventAgeInSeconds) * second
	}
	if d := c.DestinationConfig; d != nil {
		if d.OnSuccess != nil {
			set.onSuccess = d.OnSuccess.Destination
		}
		if d.OnFailure != nil {
			set.onFailure = d.OnFailure.Destination
		}
	}
	return set
}

// fnState is what this process knows of one function's async invokes.
type fnState struct {
	inFlight       int
	throttledUntil time.Time     // no invokes before then (the sync path said 429)
	backoff        time.Duration // the next throttle's wait
}

func (s *Service) fnState(key string) *fnState {
	f := s.fns[key]
	if f == nil {
		f = &fnState{}
		s.fns[key] = f
	}
	return f
}

// startInvoke takes a place for one invoke of a function whose reserved
// concurrency is reserved (nil: none), or says how long to wait.
func (s *Service) startInvoke(key string, reserved *int, now time.Time) (bool, time.Duration) {
	s.fnMu.Lock()
	defer s.fnMu.Unlock()
	f := s.fnState(key)
	if now.Before(f.throttledUntil) {
		return false, f.throttledUntil.Sub(now)
	}
	if reserved != nil && f.inFlight >= *reserved {
		return false, s.tune.ThrottleBase
	}
	f.inFlight++
	return true, 0
}

// endInvoke returns the place; a throttle closes the function for a while
// (doubling each time, up to ThrottleMax), anything else reopens it.
func (s *Service) endInvoke(key string, throttled bool, now time.Time) {
	s.fnMu.Lock()
	defer s.fnMu.Unlock()
	f := s.fnState(key)
	f.inFlight--
	if !throttled {
		f.backoff = 0
		if f.inFlight == 0 && f.throttledUntil.Before(now) {
			delete(s.fns, key)
		}
		return
	}
	f.backoff = min(max(2*f.backoff, s.tune.ThrottleBase/4), s.tune.ThrottleMax)
	if until := now.Add(jitter(f.backoff)); until.After(f.throttledUntil) {
		f.throttledUntil = until
	}
}

// capacity is how many more invokes of a function may start now (for a
// dedicated queue's fetches), or how long to wait when none may.
func (s *Service) capacity(ctx context.Context, account, function string) (int, time.Duration) {
	limit := maxBatch
	if t, err := s.inv.Resolve(ctx, account, function, ""); err == nil && t.Function.ReservedConcurrency != nil {
		limit = *t.Function.ReservedConcurrency
	}
	now := time.Now()
	s.fnMu.Lock()
	defer s.fnMu.Unlock()
	f := s.fns[account+"/"+function]
	if f == nil {
		return max(limit, 1), 0 // reserved 0: fetch one at a time; it throttles and backs off
	}
	if now.Before(f.throttledUntil) {
		return 0, f.throttledUntil.Sub(now)
	}
	if free := limit - f.inFlight; free > 0 || limit == 0 && f.inFlight == 0 {
		return max(free, 1), 0
	}
	return 0, 10 * time.Millisecond
}

// backoff is the wait before an event's next try after a throttle or a
// system error: exponential in its deliveries, from ThrottleBase to ThrottleMax.
func (s *Service) backoff(m jetstream.Msg) time.Duration {
	n := uint64(1)
	if md, err := m.Metadata(); err == nil {
		n = md.NumDelivered
	}
	d := s.tune.ThrottleBase
	for i := uint64(1); i < n && d < s.tune.ThrottleMax; i++ {
		d *= 2
	}
	return jitter(min(d, s.tune.ThrottleMax))
}

// jitter spreads waits by ±10%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()-0.5)*0.2*float64(d))
}

// keepAlive tells JetStream, every third of AckWait, that m is still being
// worked on, until the returned stop is called.
func (s *Service) keepAlive(m jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(s.tune.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				m.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// handle takes one event through one try: it invokes the function through
// the synchronous path and acknowledges the event only once its outcome is
// settled (delivered to its destinations), or puts it back for later. What
// becomes of the event at each step is decided in decide.go.
func (s *Service) handle(q queue, m jetstream.Msg) {
	ev, err := parseEvent(m)
	now := time.Now()
	if d := onArrival(ev, err, now); d.step != goOn {
		if d.step == term {
			s.log.Warn("async: malformed event dropped", "err", err)
		}
		s.carryOut(m, ev, nil, settings{}, nil, d)
		return
	}
	// An event taken is finished even while the service closes (Close
	// waits a few seconds for it): its invoke has started or is about to.
	ctx := context.WithoutCancel(s.ctx)
	// The function has a queue of its own now: move the event there, so a
	// heavy function's backlog does not hold up the others on this one.
	if q.shared && s.activeDedicated(ev.account, ev.function) {
		err := s.publish(ctx, &nats.Msg{Subject: dedicatedSubject(ev.account, ev.function), Header: ev.header(), Data: m.Data()},
			jetstream.WithMsgID(ev.requestID+"/move/"+strconv.Itoa(ev.attempt)))
		if err != nil {
			m.NakWithDelay(s.backoff(m))
			return
		}
		m.Ack()
		return
	}

	t, err := s.inv.Resolve(ctx, ev.account, ev.function, ev.qualifier)
	var set settings
	if err == nil {
		set = settingsOf(t.Function, ev.qualifier, s.tune.EventAgeUnit)
	}
	if d := onResolved(ev, err, set.maxAge, now, s.backoff(m)); d.step != goOn {
		if d.step == drop {
			s.log.Info("async: function or qualifier gone, event dropped", "function", ev.function, "qualifier", ev.qualifier, "request", ev.requestID)
		}
		s.carryOut(m, ev, t, set, nil, d)
		return
	}

	key := ev.account + "/" + ev.function
	if ok, wait := s.startInvoke(key, t.Function.ReservedConcurrency, now); !ok {
		m.NakWithDelay(min(max(jitter(wait), s.backoff(m)), untilExpiry(ev.enqueued.Add(set.maxAge), now)))
		return
	}
	stop := s.keepAlive(m)
	s.invoking.Add(1)
	res, err := s.invokeContained(ctx, invoke.Request{Account: ev.account, Function: ev.function, Qualifier: ev.qualifier,
		Payload: m.Data(), ClientContext: ev.clientContext, TraceID: ev.trace, Background: true})
	s.invoking.Add(-1)
	stop()
	throttled := isThrottle(err)
	now = time.Now()
	s.endInvoke(key, throttled, now)
	next, d := onInvoked(*ev, set, res, err, now, s.backoff(m), s.tune.RetryBase)
	switch {
	case d.step == drop:
		s.log.Info("async: function gone, event dropped", "function", ev.function, "request", ev.requestID)
	case err != nil && !throttled:
		s.log.Warn("async: invoke failed, will retry", "function", ev.function, "request", ev.requestID, "err", err)
	}
	s.carryOut(m, &next, t, set, res, d)
}

// invokeContained turns a panic in the invoke path into a failed try: the
// event is retried as after any failure, the counts stay balanced, and the
// process serving everyone else's invokes lives on.
func (s *Service) invokeContained(ctx context.Context, req invoke.Request) (res *invoke.Response, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("async: invoke panicked", "function", req.Function, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("async: invoke panicked: %v", r)
		}
	}()
	return s.inv.Invoke(ctx, req)
}

// carryOut does to m what d decided for its event ev.
func (s *Service) carryOut(m jetstream.Msg, ev *event, t *metadata.Target, set settings, res *invoke.Response, d decision) {
	switch d.step {
	case term:
		m.Term()
	case later:
		m.NakWithDelay(d.delay)
	case drop:
		m.Ack()
	case settle:
		s.settle(m, ev, t, set, d.condition, res)
	case retry:
		// A new message carrying the attempt count; the message id keeps a
		// redelivered failure from retrying twice.
		err := s.publish(context.WithoutCancel(s.ctx), &nats.Msg{Subject: s.subject(ev.account, ev.function), Header: ev.header(), Data: m.Data()},
			jetstream.WithMsgID(ev.requestID+"/retry/"+strconv.Itoa(ev.attempt)))
		if err != nil {
			m.NakWithDelay(s.backoff(m))
			return
		}
		m.Ack()
	}
}

// settle sends an event's outcome to its destinations (a success to
// OnSuccess; a failure to OnFailure and the dead-letter queue) and then
// acknowledges it. A destination that cannot take it now is retried; one
// that never can is logged and skipped.
func (s *Service) settle(m jetstream.Msg, ev *event, t *metadata.Target, set settings, condition string, res *invoke.Response) {
	type delivery struct {
		arn  string
		body []byte
		h    nats.Header
	}
	var out []delivery
	record := func() []byte {
		r := Record{Version: "1.0", Timestamp: time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
			RequestContext: RequestContext{RequestID: ev.requestID, Condition: condition, ApproximateInvokeCount: ev.invokes,
				FunctionArn: api.QualifiedARN(s.cfg.Region, ev.account, ev.function, qualifierOrLatest(ev.qualifier))},
			RequestPayload: rawJSON(m.Data())}
		switch {
		case res != nil:
			r.ResponseContext = &ResponseContext{StatusCode: 200, ExecutedVersion: res.ExecutedVersion, FunctionError: res.FunctionError}
			r.ResponsePayload = rawJSON(res.Payload)
		case ev.invokes > 0:
			r.ResponseContext = &ResponseContext{StatusCode: 200, ExecutedVersion: ev.lastVersion, FunctionError: ev.lastError}
			r.ResponsePayload = rawJSON(ev.lastResponse)
		}
		b, _ := json.Marshal(r)
		return b
	}
	if condition == ConditionSuccess {
		if set.onSuccess != "" {
			out = append(out, delivery{set.onSuccess, record(), nil})
		}
	} else {
		if set.onFailure != "" {
			out = append(out, delivery{set.onFailure, record(), nil})
		}
		if dlq := t.Config.DeadLetterConfig; dlq != nil && dlq.TargetArn != "" {
			// As Lambda's dead-letter queues: the event itself, with the
			// request id and the error as attributes (here, headers).
			h := nats.Header{}
			h.Set("RequestID", ev.requestID)
			code, msg := "200", "Event age exceeded"
			switch {
			case condition == ConditionRecursiveInvocation:
				code, msg = "400", "Recursive invocation stopped: one chain of requests invoked the function more than 16 times"
			case condition == ConditionRetriesExhausted || ev.lastError != "":
				msg = errorMessage(ev.lastResponse)
			case ev.invokes == 0:
				code = "429"
			}
			h.Set("ErrorCode", code)
			h.Set("ErrorMessage", msg)
			out = append(out, delivery{dlq.TargetArn, m.Data(), h})
		}
	}
	for i, d := range out {
		msgID := ev.requestID + "/" + condition + "/" + strconv.Itoa(i)
		if err := s.deliverWithRetry(m, ev.account, d.arn, d.body, d.h, msgID); err != nil {
			return // put back: the whole outcome is tried again later
		}
	}
	m.Ack()
}

func qualifierOrLatest(q string) string {
	if q == "" {
		return metadata.Latest
	}
	return q
}

// errorMessage is the first KB of an error document's errorMessage.
func errorMessage(doc []byte) string {
	var e struct {
		ErrorMessage string `json:"errorMessage"`
	}
	json.Unmarshal(doc, &e)
	msg := e.ErrorMessage
	if msg == "" {
		msg = string(doc)
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	for i := 0; i < len(msg); i++ { // header values are one line
		if msg[i] == '\r' || msg[i] == '\n' {
			msg = msg[:i]
			break
		}
	}
	return msg
}

// deliverWithRetry tries a delivery a few times; after that the event is
// put back (nak) and the error returned.
func (s *Service) deliverWithRetry(m jetstream.Msg, account, arn string, body []byte, h nats.Header, msgID string) error {
	stop := s.keepAlive(m)
	defer stop()
	wait := 100 * time.Millisecond
	var err error
	for try := 0; try < 5; try++ {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
		err = s.deliver(ctx, account, arn, body, h, msgID)
		cancel()
		var perm errPermanent
		if err == nil {
			return nil
		}
		if errors.As(err, &perm) {
			s.log.Warn("async: destination refuses the record, dropped", "destination", arn, "err", err)
			return nil
		}
		if s.ctx.Err() != nil {
			break
		}
		sleep(s.ctx, wait)
		wait *= 2
	}
	s.log.Warn("async: destination delivery failed, event put back", "destination", arn, "err", err)
	m.NakWithDelay(s.backoff(m))
	return err
}
