// Package counting is the counting service: on every invoke it decides,
// without I/O, whether the account and the function have concurrency left,
// and hands out a slot that the invoke returns when it ends.
package counting

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
)

// Throttle reasons, as Lambda names them in TooManyRequestsException.
const (
	ReasonAccount  = "ConcurrentInvocationLimitExceeded"
	ReasonReserved = "ReservedFunctionConcurrentInvocationLimitExceeded"
	// ReasonScaling is the scaling-rate throttle; Lambda's enum has no
	// dedicated value, this is the closest ("invocation rate").
	ReasonScaling = "FunctionInvocationRateLimitExceeded"
)

// Config sets the limits. The zero value is Lambda's default account.
type Config struct {
	// AccountLimit is the account's concurrency; 0 means 1000.
	AccountLimit int
	// ScaleBurst and ScaleRefill are the scaling rate: a function may start
	// ScaleBurst new execution environments at once and ScaleRefill more
	// every 10 s, refilled continuously. 0 means Lambda's 1000 and 1000.
	ScaleBurst, ScaleRefill int
	// Unlimited turns the scaling rate off.
	Unlimited bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Key names a function within an account.
type Key struct {
	Account, Function string
}

// Counter counts concurrent invokes per account and function.
type Counter struct {
	limit  int
	burst  float64
	refill float64 // environments per second
	cfg    Config

	mu       sync.Mutex
	accounts map[string]*account
	running  atomic.Int64 // slots held, every account
}

type account struct {
	reservedTotal int
	unreservedUse int // invokes of functions without reserved concurrency
	functions     map[string]*function
}

type function struct {
	reserved *int
	inUse    int
	// Scaling-rate token bucket.
	tokens float64
	filled time.Time
}

// New returns a counter.
func New(cfg Config) *Counter {
	if cfg.AccountLimit == 0 {
		cfg.AccountLimit = 1000
	}
	if cfg.ScaleBurst == 0 {
		cfg.ScaleBurst = 1000
	}
	if cfg.ScaleRefill == 0 {
		cfg.ScaleRefill = 1000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Counter{limit: cfg.AccountLimit, burst: float64(cfg.ScaleBurst), refill: float64(cfg.ScaleRefill) / 10,
		cfg: cfg, accounts: map[string]*account{}}
}

// AllowNewEnvironment takes one token of k's scaling rate, or returns a 429
// *api.Error: an invoke that needs a new execution environment asks first;
// one served by a warm environment does not.
func (c *Counter) AllowNewEnvironment(k Key) error {
	if c.cfg.Unlimited {
		return nil
	}
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	_, f := c.fn(k)
	if f.filled.IsZero() {
		f.tokens = c.burst
	} else {
		f.tokens = min(c.burst, f.tokens+now.Sub(f.filled).Seconds()*c.refill)
	}
	f.filled = now
	if f.tokens < 1 {
		return throttle(ReasonScaling, "Rate Exceeded.")
	}
	f.tokens--
	return nil
}

// AccountLimit is the configured account concurrency.
func (c *Counter) AccountLimit() int { return c.limit }

func (c *Counter) fn(k Key) (*account, *function) {
	a := c.accounts[k.Account]
	if a == nil {
		a = &account{functions: map[string]*function{}}
		c.accounts[k.Account] = a
	}
	f := a.functions[k.Function]
	if f == nil {
		f = &function{}
		a.functions[k.Function] = f
	}
	return a, f
}

// SetReserved records a function's reserved concurrency (nil: none). The
// control plane has already checked the account's rules.
func (c *Counter) SetReserved(k Key, reserved *int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, f := c.fn(k)
	// Keep unreservedUse the sum of inUse over functions without a reservation.
	if f.reserved != nil {
		a.reservedTotal -= *f.reserved
	} else {
		a.unreservedUse -= f.inUse
	}
	f.reserved = nil
	if reserved != nil {
		v := *reserved
		f.reserved = &v
		a.reservedTotal += v
	} else {
		a.unreservedUse += f.inUse
	}
}

// Reserved returns k's reserved concurrency as last set, and whether it
// has one.
func (c *Counter) Reserved(k Key) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.accounts[k.Account]; a != nil && a.functions[k.Function] != nil && a.functions[k.Function].reserved != nil {
		return *a.functions[k.Function].reserved, true
	}
	return 0, false
}

// Slot is one granted unit of concurrency. Release returns it; a Slot must be
// released exactly once.
type Slot struct {
	c   *Counter
	key Key
}

// Acquire takes a slot for one invoke of k or returns a 429 *api.Error with
// Lambda's reason.
func (c *Counter) Acquire(k Key) (Slot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acquireLocked(k, false)
}

// Take is Acquire for the frontend, which may as well wait on a remote
// counting service (see the slots package): release returns the slot.
func (c *Counter) Take(_ context.Context, k Key) (release func(), err error) {
	s, err := c.Acquire(k)
	if err != nil {
		return nil, err
	}
	return s.Release, nil
}

// acquireLocked takes a slot; force takes it over the limits (a slot known
// to be running already, learned late).
func (c *Counter) acquireLocked(k Key, force bool) (Slot, error) {
	a, f := c.fn(k)
	if f.reserved != nil {
		if f.inUse >= *f.reserved && !force {
			return Slot{}, throttle(ReasonReserved, "Rate Exceeded.")
		}
	} else {
		if a.unreservedUse >= c.limit-a.reservedTotal && !force {
			return Slot{}, throttle(ReasonAccount, "Rate Exceeded.")
		}
		a.unreservedUse++
	}
	f.inUse++
	c.running.Add(1)
	return Slot{c: c, key: k}, nil
}

// Release returns the slot.
func (s Slot) Release() {
	if s.c == nil {
		return
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.releaseLocked()
}

func (s Slot) releaseLocked() {
	c := s.c
	a, f := c.fn(s.key)
	f.inUse--
	if f.reserved == nil {
		a.unreservedUse--
	}
	c.running.Add(-1)
}

// Running is the number of invokes running, in every account: lock-free,
// for callers that poll it (the async pollers yield while it exceeds
// their own invokes).
func (c *Counter) Running() int { return int(c.running.Load()) }

// InUse reports the invokes running for k and for its whole account.
func (c *Counter) InUse(k Key) (function, account int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, f := c.fn(k)
	total := 0
	for _, g := range a.functions {
		total += g.inUse
	}
	return f.inUse, total
}

func throttle(reason, msg string) *api.Error {
	e := api.Errorf(api.TooManyRequests, "%s", msg)
	e.Reason = reason
	return e
}
