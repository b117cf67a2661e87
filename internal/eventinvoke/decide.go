package eventinvoke

import (
	"errors"
	"net/http"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
)

// The retry policy of asynchronous invokes, apart from JetStream: each
// function decides what becomes of an event at one step of handle, from
// what that step learnt, and handle carries it out on the message.

// step is what to do with an event's message.
type step int

const (
	goOn   step = iota // on to the next step
	term               // malformed: dropped for good (never redelivered)
	later              // tried again after delay (not due, throttled, a system error)
	drop               // its function or qualifier is gone: acknowledged, no outcome
	settle             // its outcome (condition) goes to its destinations, then it is acknowledged
	retry              // a function error with retries left: queued again for notBefore
)

// decision is a step and what it needs.
type decision struct {
	step      step
	delay     time.Duration // later
	condition string        // settle
}

// onArrival decides on an event as it is taken: parseErr when its headers
// are not Kiln's.
func onArrival(ev *event, parseErr error, now time.Time) decision {
	switch {
	case parseErr != nil:
		return decision{step: term}
	case ev.notBefore.After(now):
		return decision{step: later, delay: ev.notBefore.Sub(now)}
	}
	return decision{step: goOn}
}

// onResolved decides once the function was looked up (resolveErr) and,
// when it was found, its event age limit (maxAge) is known.
func onResolved(ev *event, resolveErr error, maxAge time.Duration, now time.Time, backoff time.Duration) decision {
	switch {
	case isNotFound(resolveErr):
		return decision{step: drop}
	case resolveErr != nil:
		return decision{step: later, delay: backoff}
	case !now.Before(ev.enqueued.Add(maxAge)):
		return decision{step: settle, condition: ConditionEventAgeExceeded}
	}
	return decision{step: goOn}
}

// onInvoked decides on an invoke's outcome (res, or err) and returns the
// event as it goes on: a function error counts an attempt and is retried
// (after attempt×retryBase, no later than the event expires) until the
// retries run out; a throttle or a system error is tried again after
// backoff, also no later than the event expires.
func onInvoked(ev event, set settings, res *invoke.Response, err error, now time.Time, backoff, retryBase time.Duration) (event, decision) {
	expiry := ev.enqueued.Add(set.maxAge)
	switch {
	case isNotFound(err):
		return ev, decision{step: drop}
	case isRecursion(err):
		return ev, decision{step: settle, condition: ConditionRecursiveInvocation}
	case err != nil:
		return ev, decision{step: later, delay: min(backoff, untilExpiry(expiry, now))}
	case res.FunctionError != "":
		ev.invokes++
		ev.attempt++
		ev.lastVersion, ev.lastError, ev.lastResponse = res.ExecutedVersion, res.FunctionError, res.Payload
		if ev.attempt > set.retries {
			return ev, decision{step: settle, condition: ConditionRetriesExhausted}
		}
		ev.notBefore = now.Add(time.Duration(ev.attempt) * retryBase)
		if ev.notBefore.After(expiry) {
			ev.notBefore = expiry
		}
		return ev, decision{step: retry}
	}
	ev.invokes++
	return ev, decision{step: settle, condition: ConditionSuccess}
}

// untilExpiry is how long from now an event that expires at expiry may
// still wait (a moment past it, so that it is then found expired).
func untilExpiry(expiry, now time.Time) time.Duration {
	return max(expiry.Sub(now), 0) + time.Millisecond
}

func isNotFound(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Type == api.ResourceNotFound
}

// isRecursion: the invoke was stopped by recursion detection; trying it
// again cannot succeed.
func isRecursion(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Type == api.RecursiveInvocation
}

func isThrottle(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Status == http.StatusTooManyRequests
}
