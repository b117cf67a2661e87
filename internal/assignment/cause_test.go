package assignment

import "testing"

func TestCauses(t *testing.T) {
	var c Causes
	type step struct {
		lost  string // "" takes a cold start
		n     int
		fn    string
		cause string // of the cold start
	}
	for _, s := range []step{
		{fn: "f", cause: CauseScaleUp},
		{lost: CauseIdleReap, n: 2, fn: "f"},
		{lost: CauseFailover, n: 1, fn: "f"},
		{fn: "g", cause: CauseScaleUp}, // another function's marks are its own
		{fn: "f", cause: CauseFailover},
		{fn: "f", cause: CauseIdleReap},
		{fn: "f", cause: CauseIdleReap},
		{fn: "f", cause: CauseScaleUp},
		{lost: CauseIdleReap, n: 3, fn: "f"},
		{lost: "forget", fn: "f"},
		{fn: "f", cause: CauseScaleUp},
	} {
		switch s.lost {
		case "":
			if got := c.Cold("1", s.fn); got != s.cause {
				t.Fatalf("cold start of %s: %s, want %s", s.fn, got, s.cause)
			}
		case "forget":
			c.Forget("1", s.fn)
		default:
			c.Lost("1", s.fn, s.lost, s.n)
		}
	}
	if len(c.lost) != 0 {
		t.Errorf("marks left: %v", c.lost)
	}
}
