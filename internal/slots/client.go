package slots

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/nats-io/nats.go"
)

// Client is a frontend's counting service (frontend.Counter): it asks the
// leader of the account's partition for each slot and renews its leases.
type Client struct {
	nc     *nats.Conn
	ring   *partition.Ring
	holder string
	every  time.Duration
	// Deadline bounds one Take over every retry (a partition without a
	// leader for that long); 0 means 10 s.
	Deadline time.Duration

	mu      sync.Mutex
	next    uint64
	held    map[uint64]counting.Key
	pending map[uint64]counting.Key
	epochs  []uint64
	changed []chan struct{} // closed when a partition's epoch changes
	sub     *nats.Subscription
	stop    chan struct{}
	done    chan struct{}
}

// ClientConfig configures a client; NC is required.
type ClientConfig struct {
	NC         *nats.Conn
	Partitions int           // as the members'; 0 means 1
	TTL        time.Duration // as the members'; 0 means 3 s
	// Holder names this frontend process; empty means a random name. A
	// restarted frontend must not reuse its predecessor's.
	Holder string
}

// NewClient starts renewing this frontend's leases; Close stops.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Partitions < 1 {
		cfg.Partitions = 1
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Holder == "" {
		var b [8]byte
		rand.Read(b[:])
		cfg.Holder = hex.EncodeToString(b[:])
	}
	c := &Client{nc: cfg.NC, ring: partition.NewRing(cfg.Partitions), holder: cfg.Holder,
		every: cfg.TTL / heartbeatsPerTTL, next: 1, held: map[uint64]counting.Key{}, pending: map[uint64]counting.Key{},
		epochs: make([]uint64, cfg.Partitions), changed: make([]chan struct{}, cfg.Partitions),
		stop: make(chan struct{}), done: make(chan struct{})}
	for p := range c.changed {
		c.changed[p] = make(chan struct{})
	}
	var err error
	c.sub, err = cfg.NC.Subscribe(subjLead, func(msg *nats.Msg) {
		var l leadMsg
		if json.Unmarshal(msg.Data, &l) == nil && c.sawEpoch(l.Partition, l.Epoch) {
			// A new leader counts what the frontends hold before granting:
			// tell it now rather than at the next tick.
			c.heartbeat()
		}
	})
	if err != nil {
		return nil, err
	}
	// Heard of by the members before asking anything, so a member taking
	// a partition over knows to wait for this frontend.
	c.heartbeat()
	go c.renew()
	return c, nil
}

// Close stops renewing: the leases lapse within the TTL.
func (c *Client) Close() {
	close(c.stop)
	<-c.done
	c.sub.Unsubscribe()
}

func (c *Client) renew() {
	defer close(c.done)
	t := time.NewTicker(c.every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.heartbeat()
		}
	}
}

func (c *Client) heartbeat() {
	c.mu.Lock()
	hb := heartbeat{Holder: c.holder, Next: c.next, Epochs: append([]uint64(nil), c.epochs...)}
	for id, k := range c.held {
		hb.Held = append(hb.Held, counting.Held{ID: id, Key: k})
	}
	for id, k := range c.pending {
		hb.Pending = append(hb.Pending, counting.Held{ID: id, Key: k})
	}
	c.mu.Unlock()
	b, _ := json.Marshal(hb)
	c.nc.Publish(subjHeartbeat, b)
}

// sawEpoch records partition p's newest leader epoch, and reports whether
// epoch is newer than any seen before; asks waiting on the old leader are
// re-sent.
func (c *Client) sawEpoch(p int, epoch uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p < 0 || p >= len(c.epochs) || epoch <= c.epochs[p] {
		return false
	}
	c.epochs[p] = epoch
	close(c.changed[p])
	c.changed[p] = make(chan struct{})
	return true
}

// Take asks for a slot of k: release returns it; err is a 429 *api.Error
// with Lambda's reason, or the service unreachable for the Deadline.
func (c *Client) Take(ctx context.Context, k counting.Key) (release func(), err error) {
	p := PartitionOf(c.ring, k.Account)
	d := c.Deadline
	if d == 0 {
		d = 10 * time.Second
	}
	deadline := time.Now().Add(d)
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		id := c.next
		c.next++
		c.pending[id] = k
		changed := c.changed[p]
		c.mu.Unlock()
		rep, err := c.ask(ctx, p, acquireMsg{Holder: c.holder, ID: id, Key: k}, deadline, changed)
		c.mu.Lock()
		delete(c.pending, id)
		granted := err == nil && !rep.Retry && rep.Reason == "" && c.epochs[p] <= rep.Epoch
		if granted {
			c.held[id] = k
		}
		c.mu.Unlock()
		if err == nil && !rep.Retry && c.sawEpoch(p, rep.Epoch) {
			c.heartbeat()
		}
		switch {
		case granted:
			return func() { c.release(p, id) }, nil
		case err != nil:
			return nil, err
		case rep.Reason != "":
			return nil, throttle(rep.Reason)
		}
		// No leader, a leader still counting, or a deposed one: ask again
		// with a new number (the old one is freed by the next heartbeat).
		if time.Now().After(deadline) {
			return nil, unavailable(p, errors.New("no leader counting"))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-time.After(min(time.Duration(attempt+1)*10*time.Millisecond, 100*time.Millisecond)):
		}
	}
}

// ask sends one acquire. No responders (no leader yet), no answer (a dead
// leader that NATS still routes to) and a new leader while waiting are a
// Retry.
func (c *Client) ask(ctx context.Context, p int, req acquireMsg, deadline time.Time, changed <-chan struct{}) (acquireReply, error) {
	b, _ := json.Marshal(req)
	if per := time.Now().Add(time.Second); per.Before(deadline) {
		deadline = per
	}
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	go func() {
		select {
		case <-changed:
			cancel()
		case <-actx.Done():
		}
	}()
	msg, err := c.nc.RequestWithContext(actx, partitionSubject(p, "acquire"), b)
	var rep acquireReply
	switch {
	case err != nil && ctx.Err() == nil && (errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)):
		rep.Retry = true
	case err != nil:
		return rep, err
	default:
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			return rep, unavailable(p, err)
		}
	}
	return rep, nil
}

func (c *Client) release(p int, id uint64) {
	c.mu.Lock()
	_, ok := c.held[id]
	delete(c.held, id)
	c.mu.Unlock()
	if !ok {
		return
	}
	// Not waited for: a lost release is found by the next heartbeat.
	b, _ := json.Marshal(releaseMsg{Holder: c.holder, ID: id})
	c.nc.Publish(partitionSubject(p, "release"), b)
}

// Holding is how many slots this frontend holds.
func (c *Client) Holding() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held)
}

func throttle(reason string) *api.Error {
	e := api.Errorf(api.TooManyRequests, "Rate Exceeded.")
	e.Reason = reason
	return e
}

func reasonOf(err error) string {
	var e *api.Error
	if errors.As(err, &e) && e.Reason != "" {
		return e.Reason
	}
	return counting.ReasonAccount
}

func unavailable(p int, err error) error {
	return &api.Error{Status: http.StatusInternalServerError, Type: api.Service,
		Message: fmt.Sprintf("counting partition %d: %v", p, err)}
}
