package console

import (
	"math"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/frontend"
)

// The series keep the last hour, a minute per slot, in a ring per function:
// what one frontend admitted. Durations go into log-spaced bins (each 1.5×
// the last, from 100 µs to ~12 min), so a percentile is exact to the bin:
// it is given as the bin's upper bound.
const (
	Minutes  = 60
	bins     = 40
	binBase  = 100 * time.Microsecond
	binRatio = 1.5
	// DefaultMaxFunctions bounds the functions with series (~20 KB each);
	// beyond it the one invoked longest ago is dropped.
	DefaultMaxFunctions = 1000
)

// Causes of cold starts, in the order of the counts.
var causes = [...]string{assignment.CauseScaleUp, assignment.CauseIdleReap, assignment.CauseFailover}

// minute is one minute of a ring; its fields are exported so that
// frontends can exchange them (peers.go).
type minute struct {
	At                             int64 // Unix minute
	Invocations, Errors, Throttles uint32
	Cold                           [len(causes)]uint32
	Dur, Init                      [bins]uint32
}

// add sums o into m.
func (m *minute) add(o *minute) {
	m.Invocations += o.Invocations
	m.Errors += o.Errors
	m.Throttles += o.Throttles
	for i := range m.Cold {
		m.Cold[i] += o.Cold[i]
	}
	for i := range m.Dur {
		m.Dur[i] += o.Dur[i]
		m.Init[i] += o.Init[i]
	}
}

type fnSeries struct {
	mins [Minutes]minute
	last time.Time // last invoke
}

// Series is the last hour of per-function invocations, errors, throttles,
// durations and cold starts (by cause) seen by one frontend: it is the
// frontend's Observer. The zero value is not usable: use NewSeries.
type Series struct {
	mu    sync.Mutex
	fns   map[counting.Key]*fnSeries
	fleet [Minutes]minute // cold starts of every function
	max   int
	now   func() time.Time
}

// NewSeries keeps series of at most max functions (0: DefaultMaxFunctions).
func NewSeries(max int) *Series {
	if max <= 0 {
		max = DefaultMaxFunctions
	}
	return &Series{fns: map[counting.Key]*fnSeries{}, max: max, now: time.Now}
}

// slot is the minute of t in ring, reset when it last held an older minute.
func slot(ring *[Minutes]minute, t time.Time) *minute {
	at := t.Unix() / 60
	m := &ring[at%Minutes]
	if m.At != at {
		*m = minute{At: at}
	}
	return m
}

func bin(d time.Duration) int {
	if d <= binBase {
		return 0
	}
	return min(int(math.Ceil(math.Log(float64(d)/float64(binBase))/math.Log(binRatio))), bins-1)
}

// binBound is the upper bound of bin i, in milliseconds.
func binBound(i int) float64 {
	return float64(binBase) * math.Pow(binRatio, float64(i)) / float64(time.Millisecond)
}

// fn returns k's series, making room when needed. Called with mu held.
func (s *Series) fn(k counting.Key) *fnSeries {
	f := s.fns[k]
	if f == nil {
		if len(s.fns) >= s.max {
			var oldest counting.Key
			var at time.Time
			for k2, f2 := range s.fns {
				if at.IsZero() || f2.last.Before(at) {
					oldest, at = k2, f2.last
				}
			}
			delete(s.fns, oldest)
		}
		f = &fnSeries{}
		s.fns[k] = f
	}
	return f
}

// Invoked records an invoke that ran (frontend.Observer).
func (s *Series) Invoked(k counting.Key, o frontend.Outcome) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fn(k)
	f.last = now
	m := slot(&f.mins, now)
	m.Invocations++
	if o.ErrorType != "" {
		m.Errors++
	}
	m.Dur[bin(o.Duration)]++
	if o.ColdCause != "" {
		m.Init[bin(o.Init)]++
		for i, c := range causes {
			if c == o.ColdCause {
				m.Cold[i]++
				slot(&s.fleet, now).Cold[i]++
			}
		}
	}
}

// Throttled records an invoke refused for concurrency (frontend.Observer).
func (s *Series) Throttled(k counting.Key) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	slot(&s.fn(k).mins, now).Throttles++
}

// Point is one minute of a function's series. Durations are milliseconds
// (0: no invoke, or no cold start for the init duration).
type Point struct {
	Time        int64          `json:"time"` // Unix milliseconds of the minute's start
	Invocations int            `json:"invocations"`
	Errors      int            `json:"errors"`
	Throttles   int            `json:"throttles"`
	ColdStarts  map[string]int `json:"coldStarts,omitempty"`
	P50         float64        `json:"p50"`
	P99         float64        `json:"p99"`
	InitP50     float64        `json:"initP50"`
	InitP99     float64        `json:"initP99"`
}

// Summary is a function's last hour in one line.
type Summary struct {
	LastInvoke  *time.Time `json:"lastInvoke,omitempty"`
	Invocations int        `json:"invocations"`
	Errors      int        `json:"errors"`
	Throttles   int        `json:"throttles"`
	ErrorRate   float64    `json:"errorRate"` // errors / invocations
}

// hour sums the last hour's minutes of rings (this frontend's and its
// peers'), oldest first, as points.
func hour(now time.Time, rings ...[]minute) []Point {
	cur := now.Unix() / 60
	var sum [Minutes]minute
	for _, r := range rings {
		for i := range r {
			if m := &r[i]; m.At > cur-Minutes && m.At <= cur {
				sum[m.At%Minutes].add(m)
				sum[m.At%Minutes].At = m.At
			}
		}
	}
	out := make([]Point, 0, Minutes)
	for at := cur - Minutes + 1; at <= cur; at++ {
		p := Point{Time: at * 60 * 1000}
		if m := &sum[at%Minutes]; m.At == at {
			p.Invocations, p.Errors, p.Throttles = int(m.Invocations), int(m.Errors), int(m.Throttles)
			for i, n := range m.Cold {
				if n > 0 {
					if p.ColdStarts == nil {
						p.ColdStarts = map[string]int{}
					}
					p.ColdStarts[causes[i]] = int(n)
				}
			}
			p.P50, p.P99 = quantile(&m.Dur, .5), quantile(&m.Dur, .99)
			p.InitP50, p.InitP99 = quantile(&m.Init, .5), quantile(&m.Init, .99)
		}
		out = append(out, p)
	}
	return out
}

func quantile(h *[bins]uint32, q float64) float64 {
	var n uint32
	for _, c := range h {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := uint32(math.Ceil(q * float64(n)))
	var seen uint32
	for i, c := range h {
		if seen += c; seen >= rank {
			return binBound(i)
		}
	}
	return binBound(bins - 1)
}

// minutes is a copy of k's ring.
func (s *Series) minutes(k counting.Key) []minute {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.fns[k]; f != nil {
		return append([]minute(nil), f.mins[:]...)
	}
	return nil
}

// coldMinutes is a copy of the fleet's ring of cold starts.
func (s *Series) coldMinutes() []minute {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]minute(nil), s.fleet[:]...)
}

// summaries sums the last hour of each of keys that has a series.
func (s *Series) summaries(keys []counting.Key) map[counting.Key]Summary {
	cur := s.now().Unix() / 60
	out := map[counting.Key]Summary{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		f := s.fns[k]
		if f == nil {
			continue
		}
		var sum Summary
		for i := range f.mins {
			if m := &f.mins[i]; m.At > cur-Minutes && m.At <= cur {
				sum.Invocations += int(m.Invocations)
				sum.Errors += int(m.Errors)
				sum.Throttles += int(m.Throttles)
			}
		}
		if !f.last.IsZero() {
			last := f.last
			sum.LastInvoke = &last
		}
		var total Summary
		total.merge(sum)
		out[k] = total
	}
	return out
}

// merge adds o's sums into s, keeping the later last invoke, and sets the
// error rate.
func (s *Summary) merge(o Summary) {
	s.Invocations += o.Invocations
	s.Errors += o.Errors
	s.Throttles += o.Throttles
	if o.LastInvoke != nil && (s.LastInvoke == nil || o.LastInvoke.After(*s.LastInvoke)) {
		s.LastInvoke = o.LastInvoke
	}
	s.ErrorRate = 0
	if s.Invocations > 0 {
		s.ErrorRate = float64(s.Errors) / float64(s.Invocations)
	}
}
