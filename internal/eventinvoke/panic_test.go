package eventinvoke_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
)

// panicky stands in for the invoke path with a bug: its first invoke
// panics. (The real path cannot be made to panic on purpose.)
type panicky struct {
	fn    *metadata.Function
	calls atomic.Int32
	ran   chan string
}

func (p *panicky) Resolve(_ context.Context, account, function, _ string) (*metadata.Target, error) {
	return &metadata.Target{Account: account, Function: p.fn, Config: &p.fn.Latest}, nil
}

func (p *panicky) Invoke(_ context.Context, req invoke.Request) (*invoke.Response, error) {
	if p.calls.Add(1) == 1 {
		panic("a bug in the invoke path")
	}
	p.ran <- string(req.Payload)
	return &invoke.Response{Payload: []byte("null")}, nil
}

// TestInvokePanicIsRetried: an event whose invoke panics is tried again
// like any failed invoke, and the process goes on.
func TestInvokePanicIsRetried(t *testing.T) {
	s, err := eventinvoke.New(ctx, eventinvoke.Config{NATS: natstest.Connect(t), Tuning: fast})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := &panicky{fn: &metadata.Function{Account: "123456789012", Name: "f"}, ran: make(chan string, 1)}
	p.fn.Latest.FunctionName = "f"
	s.Start(p)
	target := &metadata.Target{Account: p.fn.Account, Ref: api.FunctionRef{Name: "f"}, Function: p.fn, Config: &p.fn.Latest}
	if _, err := s.Enqueue(ctx, target, []byte(`{"n":1}`), "", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-p.ran:
		if got != `{"n":1}` || p.calls.Load() != 2 {
			t.Fatalf("payload %s after %d calls", got, p.calls.Load())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the event was not retried after the panic (%d calls)", p.calls.Load())
	}
}
