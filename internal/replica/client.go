package replica

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Invoker runs an invoke on a worker (an HTTP client across processes).
type Invoker interface {
	Invoke(ctx context.Context, addr, envID string, inv *invoke.Invocation) (*invoke.Result, error)
}

// Client is the frontend's assignment service: it sends each request to
// the leader of the function's partition, follows the lease bucket to
// learn leaders, and re-sends (with the same token, so a retry is
// idempotent) when a leader dies or steps down.
type Client struct {
	nc      *nats.Conn
	ring    *partition.Ring
	invoker Invoker
	// Deadline bounds one Acquire or Release over every retry; 0 means 30 s.
	Deadline time.Duration
	// AttemptTimeout bounds one send to a leader that neither answers nor
	// loses its lease (a lost message); the request is then re-sent with
	// the same token. 0 means 5 s.
	AttemptTimeout time.Duration

	mu      sync.Mutex
	leaders map[int]Lease
	changed map[int]chan struct{}
	watch   jetstream.KeyWatcher

	Retries atomic.Int64 // requests re-sent (leader lost, no responders)
}

// NewClient follows the partitions' leases until Close.
func NewClient(ctx context.Context, nc *nats.Conn, partitions, replicas int, invoker Invoker) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := LeaseKV(ctx, js, replicas)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, ring: partition.NewRing(partitions), invoker: invoker, leaders: map[int]Lease{},
		changed: map[int]chan struct{}{}, watch: w}
	go c.follow()
	return c, nil
}

// Close stops following the leases.
func (c *Client) Close() { c.watch.Stop() }

// Ring maps functions to partitions.
func (c *Client) Ring() *partition.Ring { return c.ring }

// Leader is the member leading partition p as last seen.
func (c *Client) Leader(p int) Lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaders[p]
}

func (c *Client) follow() {
	for e := range c.watch.Updates() {
		if e == nil || !strings.HasPrefix(e.Key(), "p") {
			continue
		}
		p, err := strconv.Atoi(e.Key()[1:])
		if err != nil {
			continue
		}
		var l Lease
		if e.Operation() == jetstream.KeyValuePut {
			json.Unmarshal(e.Value(), &l)
		}
		c.mu.Lock()
		old := c.leaders[p]
		c.leaders[p] = l
		if old.Member != l.Member || old.Epoch != l.Epoch {
			if ch := c.changed[p]; ch != nil {
				close(ch)
				delete(c.changed, p)
			}
		}
		c.mu.Unlock()
	}
}

// target returns partition p's leader as last seen and a channel closed
// when that changes.
func (c *Client) target(p int) (string, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.changed[p]
	if ch == nil {
		ch = make(chan struct{})
		c.changed[p] = ch
	}
	return c.leaders[p].Member, ch
}

// call sends req to partition p's leader until it answers without Retry.
func (c *Client) call(ctx context.Context, p int, req Request) (Reply, error) {
	body, _ := json.Marshal(req)
	d := c.Deadline
	if d == 0 {
		d = 30 * time.Second
	}
	per := c.AttemptTimeout
	if per == 0 {
		per = 5 * time.Second
	}
	deadline := time.Now().Add(d)
	last := errors.New("no lease yet")
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if attempt > 0 {
			c.Retries.Add(1)
		}
		leader, changed := c.target(p)
		if leader == "" { // no lease (yet): wait for one
			select {
			case <-changed:
			case <-time.After(min(time.Duration(attempt+1)*10*time.Millisecond, 100*time.Millisecond)):
			case <-ctx.Done():
				return Reply{}, ctx.Err()
			}
			continue
		}
		end := time.Now().Add(per)
		if end.After(deadline) {
			end = deadline
		}
		actx, cancel := context.WithDeadline(ctx, end)
		go func() {
			select {
			case <-changed: // the leader changed: re-send to the new one
				cancel()
			case <-actx.Done():
			}
		}()
		msg, err := c.nc.RequestWithContext(actx, Subject(p, leader), body)
		cancel()
		if err == nil {
			var rep Reply
			if err = json.Unmarshal(msg.Data, &rep); err == nil && !rep.Retry {
				return rep, nil
			}
			if err == nil {
				err = errors.New(rep.Error)
			}
		}
		last = err
		if ctx.Err() != nil {
			return Reply{}, ctx.Err()
		}
		// No leader yet (no responders), or it stepped down: wait for the
		// lease to move, briefly.
		select {
		case <-changed:
		case <-time.After(min(time.Duration(attempt+1)*10*time.Millisecond, 100*time.Millisecond)):
		case <-ctx.Done():
			return Reply{}, ctx.Err()
		}
	}
	return Reply{}, &api.Error{Status: 500, Type: api.Service,
		Message: fmt.Sprintf("assignment partition %d has no leader: %v", p, last)}
}

// Acquire implements frontend.Assigner.
func (c *Client) Acquire(ctx context.Context, req assignment.Request) (*assignment.Env, error) {
	p := c.ring.Of(req.Account, req.Function.FunctionName)
	token := newToken()
	rep, err := c.call(ctx, p, Request{Op: "acquire", Token: token, Account: req.Account, Function: req.Function})
	if err != nil {
		return nil, err
	}
	switch {
	case rep.InitError != nil:
		return nil, rep.InitError
	case rep.APIError != nil:
		return nil, rep.APIError
	case rep.Error != "":
		return nil, fmt.Errorf("assignment: %s", rep.Error)
	case rep.Env == nil:
		return nil, errors.New("assignment: empty reply")
	}
	l := &Leased{c: c, Partition: p, Token: token, Env: *rep.Env}
	return &assignment.Env{ID: rep.Env.ID, Worker: l, Cold: rep.Cold, Cause: rep.Cause, InitDuration: rep.InitDuration, Phases: rep.Phases}, nil
}

// Release implements frontend.Assigner.
func (c *Client) Release(e *assignment.Env, reusable bool) {
	l, ok := e.Worker.(*Leased)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.call(ctx, l.Partition, Request{Op: "release", Token: l.Token, Env: l.Env.ID, Reusable: reusable})
}

// Leased is an environment leased to one invoke; it is the
// assignment.Worker the frontend invokes.
type Leased struct {
	c         *Client
	Partition int
	Token     string
	Env       partition.Env
}

func (l *Leased) ID() string { return l.Env.Worker }

func (l *Leased) Invoke(ctx context.Context, envID string, inv *invoke.Invocation) (*invoke.Result, error) {
	return l.c.invoker.Invoke(ctx, l.Env.Addr, envID, inv)
}

func (l *Leased) Create(context.Context, invoke.EnvSpec) (*invoke.EnvInfo, error) {
	return nil, errors.New("replica: create goes through the partition leader")
}

func (l *Leased) Destroy(context.Context, string) error {
	return errors.New("replica: destroy goes through the partition leader")
}

func newToken() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
