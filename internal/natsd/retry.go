package natsd

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ElectionWait bounds how long a request waits for a stream or consumer
// that has no leader (an election after its leader's server died or was
// cut off takes NATS several seconds; a loaded host more).
const ElectionWait = 30 * time.Second

// attemptTimeout bounds one attempt of Retry: a request that reached a
// leader as it died is never answered, and would otherwise wait out the
// caller's whole context.
const attemptTimeout = 5 * time.Second

// Transient reports an error of a JetStream request that no leader
// answered: the stream or consumer is between leaders (an election, a
// replica set changing, a loaded host missing heartbeats), which is late,
// not failed.
func Transient(err error) bool {
	const clusterNotAvailable = 10008 // a member answered: no leader yet
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == clusterNotAvailable
}

// Retry calls fn until it returns nil or an error that is not Transient,
// for at most ElectionWait or until ctx ends, waiting between calls (25 ms,
// doubling to 1 s); it returns fn's last error. Each call's context ends
// after attemptTimeout, and an attempt that ran out of it is retried.
func Retry(ctx context.Context, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(ElectionWait)
	for wait := 25 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := fn(actx)
		cancel()
		lost := Transient(err) || errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
		if !lost || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
