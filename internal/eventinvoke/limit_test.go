package eventinvoke

import (
	"testing"
	"time"
)

// TestLimit is the policy that keeps queued events from slowing requests:
// on a busy machine, young events wait while sync invokes run, old ones
// and those competing only with enqueues run at ConcurrencyUnderSync.
func TestLimit(t *testing.T) {
	tune := Tuning{Concurrency: 16, ConcurrencyUnderSync: 1}
	tune.defaults()
	for _, c := range []struct {
		name          string
		busy          int64 // CPU per mille; -1 unknown
		syncRunning   int   // invokes in flight, of which asyncRunning are this service's
		asyncRunning  int64
		enqueuing     int64
		sinceLastSync time.Duration // 0: never
		age           time.Duration
		want          int
	}{
		{name: "idle machine, sync running", busy: 200, syncRunning: 3, age: 0, want: 16},
		{name: "busy, nothing served", busy: 900, want: 16},
		{name: "busy, sync running, young event waits", busy: 900, syncRunning: 1, age: 10 * time.Millisecond, want: 0},
		{name: "busy, sync running, old event runs", busy: 900, syncRunning: 1, age: 2 * time.Second, want: 1},
		{name: "busy, only async invokes running", busy: 900, syncRunning: 2, asyncRunning: 2, want: 16},
		{name: "busy, enqueues only", busy: 900, enqueuing: 1, age: 0, want: 1},
		{name: "busy, sync ended 10 ms ago", busy: 900, sinceLastSync: 10 * time.Millisecond, want: 0},
		{name: "busy, sync ended 1 s ago", busy: 900, sinceLastSync: time.Second, want: 16},
		{name: "load unknown counts as busy", busy: -1, syncRunning: 1, want: 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &Service{tune: tune}
			s.cpu.busy.Store(c.busy)
			running := c.syncRunning
			s.cfg.InvokesInFlight = func() int { return running }
			s.invoking.Store(c.asyncRunning)
			s.enqueuing.Store(c.enqueuing)
			if c.sinceLastSync > 0 {
				s.lastSync.Store(time.Now().Add(-c.sinceLastSync).UnixNano())
				s.lastRequest.Store(s.lastSync.Load())
			}
			if got := s.limit(c.age); got != c.want {
				t.Errorf("limit = %d, want %d", got, c.want)
			}
		})
	}
}
