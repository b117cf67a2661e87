package slots

import (
	"errors"
	"sort"
	"sync"
	"time"
)

var errNoTakes = errors.New("no take finished in time")

// Decisions is what MeasureTakes saw.
type Decisions struct {
	P50, P99 time.Duration
	PerSec   float64
}

// MeasureTakes runs workers goroutines taking (as take does for goroutine
// g) and returning slots for d, and summarizes the takes' latency. It
// serves TestDecisionLatency and kiln-bench's cluster section alike.
func MeasureTakes(workers int, d time.Duration, take func(g int) (release func(), err error)) (Decisions, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				release, err := take(g)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
				release()
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return Decisions{}, firstErr
	}
	if len(lat) == 0 {
		return Decisions{}, errNoTakes
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return Decisions{P50: lat[len(lat)/2], P99: lat[len(lat)*99/100], PerSec: float64(len(lat)) / time.Since(start).Seconds()}, nil
}
