package sandbox

import (
	"errors"
	"testing"
)

func TestIDRangesNeverShareALiveRange(t *testing.T) {
	r := newIDRanges(3, 2)
	var got []int
	for range 3 {
		s, err := r.take()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if got[0] != 2 || got[1] != 0 || got[2] != 1 {
		t.Fatalf("slots %v, want [2 0 1]", got)
	}
	if _, err := r.take(); !errors.Is(err, errNoIDRange) {
		t.Fatalf("a fourth environment got a range: %v", err)
	}
	// Only a freed slot comes back, and the one after the last given first.
	r.give(0)
	r.give(0) // twice is harmless
	if s, err := r.take(); err != nil || s != 0 {
		t.Fatalf("after freeing 0: %d %v", s, err)
	}
	r.give(2)
	r.give(1)
	if s, _ := r.take(); s != 1 {
		t.Fatalf("took %d, want 1 (the first free after the last given)", s)
	}
	if s, _ := r.take(); s != 2 {
		t.Fatalf("took %d, want 2", s)
	}
}

// TestIDRangesChurn: many more environments than ranges come and go while
// some stay; no live range is ever handed out twice.
func TestIDRangesChurn(t *testing.T) {
	r := newIDRanges(64, 0)
	live := map[int]bool{}
	var order []int
	for i := range 10000 {
		if len(order) == 64 || (i%3 == 0 && len(order) > 0) {
			s := order[i%len(order)]
			order = append(order[:i%len(order)], order[i%len(order)+1:]...)
			delete(live, s)
			r.give(s)
			continue
		}
		s, err := r.take()
		if err != nil {
			t.Fatalf("take %d with %d live: %v", i, len(live), err)
		}
		if live[s] {
			t.Fatalf("range %d handed out while in use", s)
		}
		live[s] = true
		order = append(order, s)
	}
}
