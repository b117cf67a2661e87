package counting

import (
	"errors"
	"time"
)

// Leases is the counting state of one partition of accounts when many
// frontends (holders) share it: every slot is numbered by the holder that
// asked for it, the holder renews its lease by listing what it holds, and a
// holder silent for longer than the TTL loses its slots. It does no I/O and
// reads no clock (the caller passes now); the caller serializes calls.
type Leases struct {
	c       *Counter
	ttl     time.Duration
	holders map[string]*holder
	// Taking over: the holders still to renew, and until when to wait
	// for them (nil waitFor: counting).
	waitFor map[string]bool
	until   time.Time
	quiet   time.Time // not before this, even with waitFor empty
}

// ErrTakingOver refuses a grant while a new leader still learns what
// the holders hold: ask again shortly.
var ErrTakingOver = errors.New("counting: taking the partition over")

type holder struct {
	seen  time.Time
	slots map[uint64]Slot
}

// Held is a slot as its holder lists it.
type Held struct {
	ID  uint64 `json:"i"`
	Key Key    `json:"k"`
}

// NewLeases counts with c; a holder silent for ttl loses its slots.
func NewLeases(c *Counter, ttl time.Duration) *Leases {
	return &Leases{c: c, ttl: ttl, holders: map[string]*holder{}}
}

// Counter is the counter the leases count in (for its reservations).
func (l *Leases) Counter() *Counter { return l.c }

func (l *Leases) holder(name string, now time.Time) *holder {
	h := l.holders[name]
	if h == nil {
		h = &holder{slots: map[uint64]Slot{}}
		l.holders[name] = h
	}
	h.seen = now
	return h
}

// TakeOver starts counting a partition someone led before: slots were
// granted that only the holders know. Nothing is granted until every
// holder in heard (last heard of, as listened since listening) has renewed
// with Renewed, or the TTL ran out (a silent holder's slots would have
// expired by then). A listener up for less than the TTL may not have heard
// of every holder: it waits the TTL out.
func (l *Leases) TakeOver(heard map[string]time.Time, listening, now time.Time) {
	l.waitFor, l.until, l.quiet = map[string]bool{}, now.Add(l.ttl), listening.Add(l.ttl)
	for h, at := range heard {
		if now.Sub(at) <= l.ttl {
			l.waitFor[h] = true
		}
	}
	l.Counting(now)
}

// Renewed records that holder renewed after hearing of the take-over.
func (l *Leases) Renewed(holder string, now time.Time) {
	delete(l.waitFor, holder)
	l.Counting(now)
}

// Counting reports whether the take-over is over (or there was none).
func (l *Leases) Counting(now time.Time) bool {
	if l.waitFor != nil && (len(l.waitFor) == 0 && !now.Before(l.quiet) || !now.Before(l.until)) {
		l.waitFor = nil
	}
	return l.waitFor == nil
}

// Grant takes slot id of k for holder, or returns the 429 *api.Error (or
// ErrTakingOver). A slot already granted under id is granted again: the
// request was re-sent.
func (l *Leases) Grant(holder string, id uint64, k Key, now time.Time) error {
	if !l.Counting(now) {
		return ErrTakingOver
	}
	h := l.holder(holder, now)
	if _, ok := h.slots[id]; ok {
		return nil
	}
	l.c.mu.Lock()
	s, err := l.c.acquireLocked(k, false)
	l.c.mu.Unlock()
	if err != nil {
		return err
	}
	h.slots[id] = s
	return nil
}

// Return frees holder's slot id; an unknown one is already free.
func (l *Leases) Return(holder string, id uint64) {
	h := l.holders[holder]
	if h == nil {
		return
	}
	if s, ok := h.slots[id]; ok {
		delete(h.slots, id)
		s.Release()
	}
}

// Renew renews holder's lease. held is every slot the holder holds, pending
// every id it has asked for and not had an answer to, next the id its next
// request will carry. A slot counted for the holder below next that it
// lists in neither was returned and its release lost (or it gave up on the
// request): it is freed. A held slot not counted is counted, over the
// limits if need be, for it is running: granted by a previous leader of the
// partition, or by this one before the holder's lease lapsed.
func (l *Leases) Renew(holder string, held []Held, pending []uint64, next uint64, now time.Time) {
	h := l.holder(holder, now)
	listed := make(map[uint64]bool, len(held)+len(pending))
	for _, id := range pending {
		listed[id] = true
	}
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	for _, s := range held {
		listed[s.ID] = true
		if _, ok := h.slots[s.ID]; !ok {
			h.slots[s.ID], _ = l.c.acquireLocked(s.Key, true)
		}
	}
	for id, s := range h.slots {
		if id < next && !listed[id] {
			delete(h.slots, id)
			s.releaseLocked()
		}
	}
}

// Expire frees the slots of holders silent for longer than the TTL and
// returns how many it freed.
func (l *Leases) Expire(now time.Time) (freed int) {
	for name, h := range l.holders {
		if now.Sub(h.seen) <= l.ttl {
			continue
		}
		for _, s := range h.slots {
			s.Release()
			freed++
		}
		delete(l.holders, name)
	}
	return freed
}
