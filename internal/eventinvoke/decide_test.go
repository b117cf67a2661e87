package eventinvoke

import (
	"errors"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
)

// The retry policy, step by step, without JetStream.
func TestRetryPolicy(t *testing.T) {
	now := time.Unix(1700000000, 0)
	const backoff, retryBase = 2 * time.Second, time.Minute
	gone := api.Errorf(api.ResourceNotFound, "Function not found")
	throttle := &api.Error{Type: api.TooManyRequests, Status: 429}
	fresh := &event{enqueued: now.Add(-time.Minute)}

	t.Run("arrival", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			ev   *event
			err  error
			want decision
		}{
			{"malformed", nil, errors.New("lacks Kiln headers"), decision{step: term}},
			{"not due", &event{notBefore: now.Add(30 * time.Second)}, nil, decision{step: later, delay: 30 * time.Second}},
			{"due", &event{notBefore: now}, nil, decision{step: goOn}},
			{"new", fresh, nil, decision{step: goOn}},
		} {
			if got := onArrival(tc.ev, tc.err, now); got != tc.want {
				t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
			}
		}
	})

	t.Run("resolved", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			err    error
			maxAge time.Duration
			want   decision
		}{
			{"gone", gone, 0, decision{step: drop}},
			{"lookup failed", errors.New("nats: timeout"), 0, decision{step: later, delay: backoff}},
			{"expired", nil, time.Minute, decision{step: settle, condition: ConditionEventAgeExceeded}},
			{"young enough", nil, time.Hour, decision{step: goOn}},
		} {
			if got := onResolved(fresh, tc.err, tc.maxAge, now, backoff); got != tc.want {
				t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
			}
		}
	})

	t.Run("invoked", func(t *testing.T) {
		set := settings{retries: 2, maxAge: time.Hour} // fresh expires 59 minutes from now
		failed := &invoke.Response{FunctionError: "Unhandled", ExecutedVersion: "3", Payload: []byte(`{"errorType":"Boom"}`)}
		for _, tc := range []struct {
			name         string
			ev           event
			set          settings
			res          *invoke.Response
			err          error
			want         decision
			attempt      int
			invokes      int
			notBefore    time.Time
			lastResponse string
		}{
			{name: "gone", ev: *fresh, set: set, err: gone, want: decision{step: drop}},
			{name: "throttled", ev: *fresh, set: set, err: throttle, want: decision{step: later, delay: backoff}},
			{name: "stopped as recursive", ev: *fresh, set: set, err: api.Errorf(api.RecursiveInvocation, "loop"),
				want: decision{step: settle, condition: ConditionRecursiveInvocation}},
			{name: "system error near expiry", ev: event{enqueued: now.Add(-time.Hour + time.Second)}, set: set, err: errors.New("worker lost"),
				want: decision{step: later, delay: time.Second + time.Millisecond}},
			{name: "system error past expiry", ev: event{enqueued: now.Add(-2 * time.Hour)}, set: set, err: errors.New("worker lost"),
				want: decision{step: later, delay: time.Millisecond}},
			{name: "failed, first retry", ev: *fresh, set: set, res: failed, want: decision{step: retry},
				attempt: 1, invokes: 1, notBefore: now.Add(retryBase), lastResponse: `{"errorType":"Boom"}`},
			{name: "failed, second retry", ev: event{enqueued: fresh.enqueued, attempt: 1, invokes: 1}, set: set, res: failed, want: decision{step: retry},
				attempt: 2, invokes: 2, notBefore: now.Add(2 * retryBase), lastResponse: `{"errorType":"Boom"}`},
			{name: "failed, retry capped at expiry", ev: event{enqueued: now.Add(-time.Hour + 10*time.Second)}, set: set, res: failed,
				want: decision{step: retry}, attempt: 1, invokes: 1, notBefore: now.Add(10 * time.Second), lastResponse: `{"errorType":"Boom"}`},
			{name: "failed, retries exhausted", ev: event{enqueued: fresh.enqueued, attempt: 2, invokes: 2}, set: set, res: failed,
				want: decision{step: settle, condition: ConditionRetriesExhausted}, attempt: 3, invokes: 3, lastResponse: `{"errorType":"Boom"}`},
			{name: "failed, no retries", ev: *fresh, set: settings{retries: 0, maxAge: time.Hour}, res: failed,
				want: decision{step: settle, condition: ConditionRetriesExhausted}, attempt: 1, invokes: 1, lastResponse: `{"errorType":"Boom"}`},
			{name: "succeeded", ev: *fresh, set: set, res: &invoke.Response{Payload: []byte(`"ok"`)},
				want: decision{step: settle, condition: ConditionSuccess}, invokes: 1},
			{name: "succeeded on a retry", ev: event{enqueued: fresh.enqueued, attempt: 1, invokes: 1, lastError: "Unhandled"}, set: set,
				res: &invoke.Response{Payload: []byte(`"ok"`)}, want: decision{step: settle, condition: ConditionSuccess}, attempt: 1, invokes: 2},
		} {
			got, d := onInvoked(tc.ev, tc.set, tc.res, tc.err, now, backoff, retryBase)
			if d != tc.want || got.attempt != tc.attempt || got.invokes != tc.invokes || !got.notBefore.Equal(tc.notBefore) ||
				string(got.lastResponse) != tc.lastResponse {
				t.Errorf("%s: %+v, event attempt %d invokes %d notBefore %v last %q; want %+v, %d, %d, %v, %q", tc.name, d,
					got.attempt, got.invokes, got.notBefore, got.lastResponse, tc.want, tc.attempt, tc.invokes, tc.notBefore, tc.lastResponse)
			}
		}
	})
}
