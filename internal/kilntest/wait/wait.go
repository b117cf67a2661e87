// Package wait lets tests wait for a condition instead of sleeping for a
// guessed time: how long something takes depends on the host (a loaded
// 2-core machine, a slow Firecracker guest), so tests poll for what they
// need, with deadlines generous enough never to be met by a healthy run.
//
// It imports nothing of Kiln, so any package's own tests can use it.
package wait

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Deadline is the default bound of For: long, as a test only reaches it
// when the condition is never going to hold.
const Deadline = 60 * time.Second

// For calls cond every few milliseconds until it returns nil, and fails tb
// with what and cond's last error if it has not within Deadline.
func For(tb testing.TB, what string, cond func() error) {
	tb.Helper()
	Within(tb, Deadline, what, cond)
}

// Within is For with deadline d.
func Within(tb testing.TB, d time.Duration, what string, cond func() error) {
	tb.Helper()
	if err := Until(d, cond); err != nil {
		tb.Fatalf("%s: still %v after %v", what, err, d)
	}
}

// Until calls cond until it returns nil, and returns nil then, or cond's
// last error once d has passed. The pause between calls grows from 5 ms to
// 100 ms: quick when the condition is quick, gentle on a loaded host.
func Until(d time.Duration, cond func() error) error {
	end := time.Now().Add(d)
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 100*time.Millisecond) {
		err := cond()
		if err == nil || time.Now().After(end) {
			return err
		}
		time.Sleep(pause)
	}
}

// Retry calls fn, each time with a context of its own that ends after 5 s,
// until it returns nil, and fails tb if it has not within Deadline: for
// calls that fail while a cluster settles (replicated streams electing
// their leaders).
func Retry(tb testing.TB, what string, fn func(ctx context.Context) error) {
	tb.Helper()
	For(tb, what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return fn(ctx)
	})
}

// True is For with a condition that has nothing to say while it does not
// hold.
func True(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	For(tb, what, func() error {
		if !cond() {
			return errNotYet
		}
		return nil
	})
}

var errNotYet = errors.New("not so")
