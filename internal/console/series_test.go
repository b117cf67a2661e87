package console

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/frontend"
)

func TestQuantiles(t *testing.T) {
	for _, c := range []struct {
		name     string
		ms       []float64
		p50, p99 float64 // the bins' bounds, ms
	}{
		{"none", nil, 0, 0},
		{"one", []float64{1}, binBound(bin(time.Millisecond)), binBound(bin(time.Millisecond))},
		{"a slow tail", append(repeat(2, 98), 900, 900), binBound(bin(2 * time.Millisecond)), binBound(bin(900 * time.Millisecond))},
		{"beyond the last bin", []float64{3600e3}, binBound(bins - 1), binBound(bins - 1)},
	} {
		var h [bins]uint32
		for _, ms := range c.ms {
			h[bin(time.Duration(ms*float64(time.Millisecond)))]++
		}
		if p50, p99 := quantile(&h, .5), quantile(&h, .99); p50 != c.p50 || p99 != c.p99 {
			t.Errorf("%s: p50 %v p99 %v, want %v %v", c.name, p50, p99, c.p50, c.p99)
		}
	}
	// A bin's bound is within a factor binRatio above what it holds.
	for _, d := range []time.Duration{150 * time.Microsecond, time.Millisecond, 37 * time.Millisecond, 2 * time.Second} {
		b := binBound(bin(d))
		if ms := float64(d) / 1e6; b < ms || b > ms*binRatio {
			t.Errorf("%v lands in a bin bounded by %v ms", d, b)
		}
	}
}

func repeat(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// The ring keeps an hour: a minute's slot is reused 60 minutes on, and
// nothing older shows.
func TestSeriesHour(t *testing.T) {
	now := time.Date(2026, 1, 1, 10, 0, 30, 0, time.UTC)
	s := NewSeries(0)
	s.now = func() time.Time { return now }
	k := counting.Key{Account: "1", Function: "f"}
	s.Invoked(k, frontend.Outcome{Duration: time.Millisecond, ColdCause: assignment.CauseIdleReap, Init: 100 * time.Millisecond})
	s.Invoked(k, frontend.Outcome{Duration: time.Millisecond, ErrorType: "Unhandled"})
	s.Throttled(k)
	h := hour(s.now(), s.minutes(k))
	if len(h) != Minutes {
		t.Fatalf("%d points", len(h))
	}
	last := h[Minutes-1]
	if last.Invocations != 2 || last.Errors != 1 || last.Throttles != 1 || last.ColdStarts[assignment.CauseIdleReap] != 1 || last.InitP50 == 0 {
		t.Errorf("this minute: %+v", last)
	}
	if sum := s.summaries([]counting.Key{k})[k]; sum.ErrorRate != .5 || sum.LastInvoke == nil {
		t.Errorf("summary %+v", sum)
	}
	if cs := hour(s.now(), s.coldMinutes()); cs[Minutes-1].ColdStarts[assignment.CauseIdleReap] != 1 {
		t.Errorf("fleet cold starts %+v", cs[Minutes-1])
	}
	now = now.Add(59 * time.Minute)
	if h := hour(s.now(), s.minutes(k)); h[0].Invocations != 2 {
		t.Errorf("59 minutes on, the first point is %+v", h[0])
	}
	now = now.Add(time.Minute)
	s.Invoked(k, frontend.Outcome{Duration: time.Millisecond}) // reuses the slot
	sum := 0
	for _, p := range hour(s.now(), s.minutes(k)) {
		sum += p.Invocations
	}
	if sum != 1 {
		t.Errorf("an hour on: %d invocations in the hour, want 1", sum)
	}
}

// At its bound the series drops the function invoked longest ago.
func TestSeriesBound(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := NewSeries(2)
	s.now = func() time.Time { now = now.Add(time.Second); return now }
	for _, f := range []string{"a", "b", "a", "c"} {
		s.Invoked(counting.Key{Function: f}, frontend.Outcome{})
	}
	if len(s.fns) != 2 || s.fns[counting.Key{Function: "b"}] != nil {
		t.Errorf("kept %v, want a and c", s.fns)
	}
}

// frontends are consoles that ask each other directly (the cluster asks
// over NATS: e2e's TestConsole invokes through one frontend and reads the
// other's console).
type frontends []*Console

func (fs frontends) peersOf(i int) Peers {
	return askFunc(func(q []byte) (out [][]byte) {
		for j, c := range fs {
			if j != i {
				out = append(out, c.Answer(q))
			}
		}
		return out
	})
}

type askFunc func([]byte) [][]byte

func (f askFunc) Ask(_ context.Context, q []byte) [][]byte { return f(q) }

// Each frontend's console adds the others' series to its own: sums,
// the later last invoke, percentiles over the merged bins, cold starts.
func TestPeersMerge(t *testing.T) {
	now := time.Date(2026, 1, 1, 10, 0, 30, 0, time.UTC)
	fs := make(frontends, 2)
	for i := range fs {
		s := NewSeries(0)
		s.now = func() time.Time { return now }
		fs[i] = New(Config{Series: s})
	}
	for i := range fs {
		fs[i].cfg.Peers = fs.peersOf(i)
	}
	k := counting.Key{Account: "1", Function: "f"}
	fs[0].cfg.Series.Invoked(k, frontend.Outcome{Duration: time.Millisecond, ColdCause: assignment.CauseScaleUp})
	now = now.Add(time.Second)
	for range 3 {
		fs[1].cfg.Series.Invoked(k, frontend.Outcome{Duration: time.Second, ErrorType: "Unhandled"})
	}
	fs[1].cfg.Series.Invoked(counting.Key{Account: "1", Function: "g"}, frontend.Outcome{ColdCause: assignment.CauseFailover})
	for i, c := range fs {
		sum := c.summaries(context.Background(), []counting.Key{k})[k]
		if sum.Invocations != 4 || sum.Errors != 3 || sum.ErrorRate != .75 || sum.LastInvoke == nil || !sum.LastInvoke.Equal(now) {
			t.Errorf("frontend %d: summary %+v", i, sum)
		}
		p := c.hour(context.Background(), k)[Minutes-1]
		if p.Invocations != 4 || p.P50 != binBound(bin(time.Second)) || p.P99 != binBound(bin(time.Second)) || p.ColdStarts[assignment.CauseScaleUp] != 1 {
			t.Errorf("frontend %d: this minute %+v", i, p)
		}
		cold := c.coldStarts(context.Background())[Minutes-1].ColdStarts
		if cold[assignment.CauseScaleUp] != 1 || cold[assignment.CauseFailover] != 1 {
			t.Errorf("frontend %d: cold starts %v", i, cold)
		}
	}
}
