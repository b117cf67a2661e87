package worker

import (
	"sync"
	"time"
)

// Default log limits of a function (per worker): a function that floods
// its log keeps its invokes, but not unbounded storage.
const (
	DefaultLogRate  = 1 << 20  // bytes per second
	DefaultLogBurst = 16 << 20 // bytes at once
)

// logLimit is a function's log rate limit on this worker, a token bucket
// in bytes shared by the function's environments here. Platform lines
// (START, END, REPORT) are not counted against it.
type logLimit struct {
	rate, burst float64
	envs        int // environments holding it; guarded by Worker.mu

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newLogLimit(rate, burst int64, now time.Time) *logLimit {
	return &logLimit{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: now}
}

// allow takes n bytes from the bucket at now, if it holds them.
func (l *logLimit) allow(n int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.last) {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
	}
	if l.tokens < float64(n) {
		return false
	}
	l.tokens -= float64(n)
	return true
}

// logLimitOf returns the limit of an account's function, shared by its
// environments on this worker (nil when logs are not limited); release
// gives it back when the environment is gone.
func (w *Worker) logLimitOf(account, function string) (l *logLimit, release func()) {
	if w.cfg.LogRate < 0 {
		return nil, func() {}
	}
	key := account + "/" + function
	w.mu.Lock()
	defer w.mu.Unlock()
	l = w.logLimits[key]
	if l == nil {
		l = newLogLimit(w.cfg.LogRate, w.cfg.LogBurst, time.Now())
		w.logLimits[key] = l
	}
	l.envs++
	return l, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if l.envs--; l.envs == 0 {
			delete(w.logLimits, key)
		}
	}
}
