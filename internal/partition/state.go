// Package partition is the assignment service's replicated state: a pure,
// I/O-free state machine of execution environments (initializing, idle,
// busy, draining, dead) driven by journal records, and the consistent-hash
// ring that maps functions to partitions.
//
// The leader of a partition decides, turns each decision into records,
// appends them to the partition's journal and only then acts; every member
// (the leader included) applies the same records in journal order with
// Apply, so followers hold the leader's state. Every record carries the
// full description of the environment it touches, so a member can start
// replaying anywhere at or before the oldest live record (see TrimPoint):
// the journal behind it is not needed.
package partition

import (
	"errors"
	"fmt"
	"sort"
)

// Status is an execution environment's state.
type Status uint8

const (
	Initializing Status = iota + 1
	Idle
	Busy
	Draining
	Dead
)

var statusNames = [...]string{"", "initializing", "idle", "busy", "draining", "dead"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", s)
}

// MarshalText makes statuses readable in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a status name.
func (s *Status) UnmarshalText(b []byte) error {
	for i, n := range statusNames {
		if i > 0 && n == string(b) {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("unknown status %q", b)
}

// Op is what a record does.
type Op string

const (
	OpLead    Op = "lead"    // a new leader (and epoch) takes the partition
	OpCreate  Op = "create"  // new environment, initializing (placed on Env.Worker)
	OpStarted Op = "started" // initializing → busy with the invoke (Token) that asked for it
	OpAcquire Op = "acquire" // idle → busy with Token
	OpRelease Op = "release" // busy (Token) → idle
	OpRenew   Op = "renew"   // lease renewed; state unchanged
	OpDrain   Op = "drain"   // no new invokes; busy ones finish
	OpDead    Op = "dead"    // gone
)

// Key is the pool an environment belongs to: environments with one key may
// serve each other's invokes.
type Key struct {
	Account  string `json:"a"`
	Function string `json:"f"`
	Version  string `json:"v"`
	Revision string `json:"r"`
}

// Env is an environment as the journal describes it.
type Env struct {
	ID       string `json:"id"`
	Worker   string `json:"w"`
	Zone     string `json:"z,omitempty"`
	Key      Key    `json:"k"`
	MemoryMB int    `json:"m,omitempty"`
	Status   Status `json:"s"`
	Token    string `json:"t,omitempty"` // the invoke holding it (busy, or initializing for it)
	// Addr is where the worker takes invokes for it.
	Addr string `json:"u,omitempty"`
	// Used is when it last started or finished an invoke (leader's clock,
	// unix ns), for reaping idle environments and orphaned busy ones.
	Used int64 `json:"us,omitempty"`
	// Timeout is the function's timeout in seconds: a busy environment
	// older than that was orphaned by its invoke's frontend.
	Timeout int `json:"to,omitempty"`
	// Lease is when its lease was last renewed (leader's clock, unix ns):
	// every record renews it; a renew record only renews it.
	Lease int64 `json:"l,omitempty"`
	// Provisioned: kept for provisioned concurrency (created before
	// traffic, preferred, never reaped for idleness).
	Provisioned bool `json:"p,omitempty"`
	// Seq is the journal sequence of the last record about it (set by Apply).
	Seq uint64 `json:"-"`
}

// Record is one journal entry.
type Record struct {
	Op     Op     `json:"op"`
	Epoch  uint64 `json:"e"`
	Leader string `json:"ld,omitempty"`
	Env    *Env   `json:"env,omitempty"` // the environment after the change
	// Token is the invoke a release comes from (the env's token is cleared).
	Token string `json:"t,omitempty"`
}

// Errors from Apply (a correct leader never appends such records).
var (
	ErrFenced     = errors.New("partition: record from a stale epoch")
	ErrTransition = errors.New("partition: illegal transition")
	ErrUnknownEnv = errors.New("partition: unknown environment")
)

// State is one partition's state machine.
type State struct {
	Epoch  uint64
	Leader string
	// Applied is the sequence of the last applied message; Base the first.
	Applied, Base uint64

	envs    map[string]*Env
	idle    map[Key][]string // idle env ids, most recently used last
	byToken map[string]string
}

// New returns an empty state.
func New() *State {
	return &State{envs: map[string]*Env{}, idle: map[Key][]string{}, byToken: map[string]string{}}
}

// legal lists the allowed transitions per op: from → to.
var legal = map[Op]struct{ from []Status }{
	OpStarted: {[]Status{Initializing}},
	OpAcquire: {[]Status{Idle}},
	OpRelease: {[]Status{Busy}},
	OpRenew:   {[]Status{Initializing, Idle, Busy, Draining}},
	OpDrain:   {[]Status{Initializing, Idle, Busy, Draining}},
	OpDead:    {[]Status{Initializing, Idle, Busy, Draining}},
}

var resulting = map[Op]Status{OpCreate: Initializing, OpStarted: Busy, OpAcquire: Busy, OpRelease: Idle, OpDrain: Draining, OpDead: Dead}

// Check reports whether r would apply, without changing anything.
func (s *State) Check(r Record) error {
	if r.Op == OpLead {
		if r.Epoch <= s.Epoch {
			return fmt.Errorf("%w: lead epoch %d after %d", ErrFenced, r.Epoch, s.Epoch)
		}
		return nil
	}
	if s.Epoch == 0 && s.Base > 0 {
		// Bootstrapping from a trimmed journal: adopt the epoch we find.
	} else if r.Epoch != s.Epoch {
		return fmt.Errorf("%w: %s at epoch %d, partition at %d", ErrFenced, r.Op, r.Epoch, s.Epoch)
	}
	if r.Env == nil || r.Env.ID == "" {
		return fmt.Errorf("%w: %s without environment", ErrTransition, r.Op)
	}
	want, ok := resulting[r.Op]
	if r.Op == OpRenew {
		want, ok = r.Env.Status, true
	}
	if !ok {
		return fmt.Errorf("%w: unknown op %q", ErrTransition, r.Op)
	}
	if r.Env.Status != want {
		return fmt.Errorf("%w: %s must leave %s, record says %s", ErrTransition, r.Op, want, r.Env.Status)
	}
	cur := s.envs[r.Env.ID]
	if r.Op == OpCreate {
		if cur != nil {
			return fmt.Errorf("%w: create of existing %s", ErrTransition, r.Env.ID)
		}
		return nil
	}
	if cur == nil {
		if s.Base > 1 { // replay began after this env's first record
			return nil
		}
		return fmt.Errorf("%w: %s %s", ErrUnknownEnv, r.Op, r.Env.ID)
	}
	if cur.Worker != r.Env.Worker || cur.Key != r.Env.Key {
		return fmt.Errorf("%w: %s changes %s's worker or pool", ErrTransition, r.Op, r.Env.ID)
	}
	okFrom := false
	for _, f := range legal[r.Op].from {
		okFrom = okFrom || cur.Status == f
	}
	if !okFrom {
		return fmt.Errorf("%w: %s of %s env %s", ErrTransition, r.Op, cur.Status, r.Env.ID)
	}
	switch r.Op {
	case OpStarted:
		if cur.Token != r.Env.Token {
			return fmt.Errorf("%w: %s of %s by %q, held by %q", ErrTransition, r.Op, r.Env.ID, r.Env.Token, cur.Token)
		}
	case OpRelease:
		if cur.Token != r.Token {
			return fmt.Errorf("%w: release of %s by %q, held by %q", ErrTransition, r.Env.ID, r.Token, cur.Token)
		}
	case OpAcquire:
		if r.Env.Token == "" {
			return fmt.Errorf("%w: acquire without token", ErrTransition)
		}
	case OpRenew:
		if r.Env.Status != cur.Status || r.Env.Token != cur.Token {
			return fmt.Errorf("%w: renew changes %s", ErrTransition, r.Env.ID)
		}
	}
	return nil
}

// Apply applies the records of journal message seq in order. A record that
// does not Check is skipped (every member skips the same ones, so they stay
// identical) and reported in the returned error. seq 0 applies without
// moving Applied (a leader's tentative change, before its append).
func (s *State) Apply(seq uint64, recs ...Record) error {
	if seq != 0 && seq <= s.Applied {
		return fmt.Errorf("partition: message %d already applied (at %d)", seq, s.Applied)
	}
	if s.Base == 0 && seq != 0 {
		s.Base = seq
	}
	var errs []error
	for _, r := range recs {
		if err := s.Check(r); err != nil {
			errs = append(errs, err)
			continue
		}
		s.apply(seq, r)
	}
	if seq != 0 {
		s.Applied = seq
	}
	return errors.Join(errs...)
}

func (s *State) apply(seq uint64, r Record) {
	if r.Op == OpLead || s.Epoch == 0 {
		s.Epoch, s.Leader = r.Epoch, r.Leader
	}
	if r.Op == OpLead {
		return
	}
	e := *r.Env
	e.Seq = seq
	if old := s.envs[e.ID]; old != nil {
		s.unindex(old)
	}
	if e.Status == Dead {
		delete(s.envs, e.ID)
		return
	}
	s.envs[e.ID] = &e
	s.index(&e)
}

func (s *State) index(e *Env) {
	switch e.Status {
	case Idle:
		s.idle[e.Key] = append(s.idle[e.Key], e.ID)
	case Busy, Initializing:
		if e.Token != "" {
			s.byToken[e.Token] = e.ID
		}
	}
}

func (s *State) unindex(e *Env) {
	switch e.Status {
	case Idle:
		ids := s.idle[e.Key]
		for i := len(ids) - 1; i >= 0; i-- {
			if ids[i] == e.ID {
				ids = append(ids[:i:i], ids[i+1:]...)
				break
			}
		}
		if len(ids) == 0 {
			delete(s.idle, e.Key)
		} else {
			s.idle[e.Key] = ids
		}
	case Busy, Initializing:
		if s.byToken[e.Token] == e.ID {
			delete(s.byToken, e.Token)
		}
	}
}

// Commit records that the tentatively applied (seq 0) records recs were
// appended as message seq.
func (s *State) Commit(seq uint64, recs []Record) {
	for _, r := range recs {
		if r.Env == nil {
			continue
		}
		if e := s.envs[r.Env.ID]; e != nil {
			e.Seq = seq
		}
	}
	if seq > s.Applied {
		s.Applied = seq
	}
	if s.Base == 0 {
		s.Base = seq
	}
}

// Env returns a copy of an environment.
func (s *State) Env(id string) (Env, bool) {
	e, ok := s.envs[id]
	if !ok {
		return Env{}, false
	}
	return *e, true
}

// ByToken returns the environment held (or being created) for an invoke.
func (s *State) ByToken(token string) (Env, bool) {
	id, ok := s.byToken[token]
	if !ok {
		return Env{}, false
	}
	return s.Env(id)
}

// PickIdle returns the most recently used idle environment of k for which
// usable is true (nil usable: any).
func (s *State) PickIdle(k Key, usable func(*Env) bool) (Env, bool) {
	ids := s.idle[k]
	for i := len(ids) - 1; i >= 0; i-- {
		e := s.envs[ids[i]]
		if usable == nil || usable(e) {
			return *e, true
		}
	}
	return Env{}, false
}

// Envs returns every live environment, sorted by id.
func (s *State) Envs() []Env {
	out := make([]Env, 0, len(s.envs))
	for _, e := range s.envs {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Count counts live environments by status.
func (s *State) Count() map[Status]int {
	c := map[Status]int{}
	for _, e := range s.envs {
		c[e.Status]++
	}
	return c
}

// TrimPoint is the oldest journal sequence a replay must start from to
// rebuild every live environment: the oldest live lease's record. With no
// live environment it is the last applied message (which carries the
// epoch). The journal before it can be purged.
func (s *State) TrimPoint() uint64 {
	tp := s.Applied
	for _, e := range s.envs {
		if e.Seq != 0 && e.Seq < tp {
			tp = e.Seq
		}
	}
	return tp
}

// Transition returns the record that moves e to op's resulting status;
// token is the invoke for acquire and started (it becomes the env's) and
// for release (it must be the env's).
func Transition(op Op, epoch uint64, e Env, token string) Record {
	if st, ok := resulting[op]; ok {
		e.Status = st
	}
	r := Record{Op: op, Epoch: epoch}
	switch op {
	case OpCreate, OpAcquire, OpStarted:
		e.Token = token
	case OpRelease:
		e.Token, r.Token = "", token
	}
	e.Seq = 0
	r.Env = &e
	return r
}
