package natsd_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Retry asks again while nobody leads (no responders, a member's "cluster
// not available", an attempt never answered) and stops at once on an
// answer or on any other error.
func TestRetry(t *testing.T) {
	noLeader := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream cluster not available"}
	notFound := fmt.Errorf("get: %w", jetstream.ErrKeyNotFound)
	for _, tc := range []struct {
		name  string
		errs  []error // what each call returns; a nil context.DeadlineExceeded waits out the attempt
		want  error
		calls int
	}{
		{"answered", []error{nil}, nil, 1},
		{"no responders, then answered", []error{nats.ErrNoResponders, fmt.Errorf("wrapped: %w", nats.ErrNoResponders), nil}, nil, 3},
		{"no leader yet, then answered", []error{noLeader, nil}, nil, 2},
		{"an attempt never answered", []error{context.DeadlineExceeded, nil}, nil, 2},
		{"another error is final", []error{nats.ErrTimeout, notFound, nil}, jetstream.ErrKeyNotFound, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := natsd.Retry(context.Background(), func(ctx context.Context) error {
				err := tc.errs[calls]
				calls++
				if errors.Is(err, context.DeadlineExceeded) {
					<-ctx.Done() // the attempt's own bound ends it
					return ctx.Err()
				}
				return err
			})
			if !errors.Is(err, tc.want) || tc.want == nil && err != nil || calls != tc.calls {
				t.Fatalf("Retry: %v after %d calls; want %v after %d", err, calls, tc.want, tc.calls)
			}
		})
	}
}

// Retry ends with its caller's context, returning the last error.
func TestRetryEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	calls := 0
	err := natsd.Retry(ctx, func(context.Context) error { calls++; return nats.ErrNoResponders })
	if !errors.Is(err, nats.ErrNoResponders) || calls < 2 {
		t.Fatalf("Retry: %v after %d calls", err, calls)
	}
}
