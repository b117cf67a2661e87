package worker

import (
	"testing"
	"time"
)

func TestLogLimit(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	l := newLogLimit(100, 1000, t0) // 100 bytes/s, 1,000 at once
	for _, step := range []struct {
		after time.Duration
		n     int
		want  bool
	}{
		{0, 600, true},               // the burst
		{0, 400, true},               // the rest of it
		{0, 1, false},                // empty
		{time.Second, 100, true},     // one second refills 100
		{time.Second, 101, false},    // not 101
		{-time.Hour, 1, false},       // a clock going back refills nothing
		{time.Hour, 1000, true},      // refills only up to the burst
		{2 * time.Hour, 1001, false}, // a line over the burst never passes
		{2 * time.Hour, 1000, true},  // and takes nothing
	} {
		if got := l.allow(step.n, t0.Add(step.after)); got != step.want {
			t.Fatalf("%v later, %d bytes: %v, want %v", step.after, step.n, got, step.want)
		}
	}
}
