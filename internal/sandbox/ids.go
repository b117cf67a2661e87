package sandbox

import (
	"errors"
	"sync"
)

// idRanges hands out the host user id ranges of environments: slot i is
// host ids uidBase+i*idsPerEnv and up. A slot is reused only after the
// environment that held it is gone (its agent reaped, so every process
// of its user namespace too): two live environments never share host ids,
// however many come and go. The search starts after the last slot given,
// so that a freed range rests as long as possible before it is reused.
type idRanges struct {
	mu   sync.Mutex
	used []bool
	next int
	live int
}

var errNoIDRange = errors.New("sandbox: every host user id range is in use")

func newIDRanges(slots, start int) *idRanges {
	return &idRanges{used: make([]bool, slots), next: start % slots}
}

// take reserves a free slot.
func (r *idRanges) take() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live == len(r.used) {
		return 0, errNoIDRange
	}
	for r.used[r.next] {
		r.next = (r.next + 1) % len(r.used)
	}
	slot := r.next
	r.used[slot], r.live = true, r.live+1
	r.next = (slot + 1) % len(r.used)
	return slot, nil
}

// give returns a slot taken before.
func (r *idRanges) give(slot int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.used[slot] {
		r.used[slot], r.live = false, r.live-1
	}
}
