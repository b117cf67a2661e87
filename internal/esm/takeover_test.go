package esm_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/queues"
	"github.com/kiln-dev/kiln/internal/server"
	"github.com/nats-io/nats.go"
)

// httpInvoker invokes through Kiln's endpoint with the Lambda SDK, as a
// poller role on another machine would reach a frontend.
type httpInvoker struct{ c *lambda.Client }

func (h httpInvoker) Invoke(ctx context.Context, req invoke.Request) (*invoke.Response, error) {
	out, err := h.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: &req.Function, Payload: req.Payload})
	if err != nil {
		return nil, err
	}
	return &invoke.Response{FunctionError: aws.ToString(out.FunctionError), Payload: out.Payload}, nil
}

// startPollers runs a Pollers component with connections of its own to
// s's JetStream, as another process would (reading s's streams).
func startPollers(t *testing.T, s *server.Server, inv esm.Invoker) (*esm.Pollers, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(s.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	qs, err := queues.New(ctx, queues.Config{NATS: nc})
	if err != nil {
		t.Fatal(err)
	}
	p, err := esm.New(ctx, esm.Config{NATS: nc, Invoker: inv, Queues: qs, Streams: s.Streams(), ReceiveWait: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	return p, nc
}

// TestLeaseTakeover: two pollers share the mapping's lease; the one that
// holds it loses its NATS connection mid-stream (it keeps running, cut
// off: its renewals and deletes fail), the other takes the mapping over
// when the lease expires, and every message is processed at least once
// with the queue drained.
func TestLeaseTakeover(t *testing.T) {
	s := kilntest.Start(t, server.Config{NATSListen: "127.0.0.1:0"})
	s.Pollers().Close() // the two below are the only pollers
	r := newRigOn(t, s, sqsGo, 10, false)
	inv := httpInvoker{r.lam}
	first, firstNC := startPollers(t, s, inv)
	defer first.Close()

	var bodies []string
	for i := range 300 {
		bodies = append(bodies, fmt.Sprint("m-", i))
	}
	r.send(t, bodies[:100])
	deadline := time.Now().Add(60 * time.Second)
	for len(r.seen(t)) < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("the first poller processed %d messages in 60s", len(r.seen(t)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	second, _ := startPollers(t, s, inv)
	defer second.Close()
	firstNC.Close()
	r.send(t, bodies[100:])
	r.drained(t, 90*time.Second)
	seen := r.seen(t)
	var missing []string
	for _, b := range bodies {
		if len(seen[b]) == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d messages never processed: %s", len(missing), strings.Join(missing[:min(5, len(missing))], " "))
	}
}
