package assignment

import "sync"

// Why a cold start happened: the talk's three sources of new environments.
const (
	// CauseScaleUp: more invokes at once than the function had environments.
	CauseScaleUp = "scale-up"
	// CauseIdleReap: it replaces an environment reaped for idleness.
	CauseIdleReap = "idle-reap"
	// CauseFailover: it replaces an environment lost with its worker (or
	// with a partition's owner, in the single-owner baseline).
	CauseFailover = "failover"
)

// Causes labels cold starts. Each environment a function loses, to the
// idle reaper or to a failure, leaves a mark; the function's next cold
// start takes one (it replaces that environment), and cold starts without
// a mark are scale-ups. Marks are per function and bounded by the
// environments it had, and a function's change (Forget) drops them.
type Causes struct {
	mu   sync.Mutex
	lost map[[2]string]map[string]int // account, function → cause → environments lost
}

// Lost records n environments of a function lost to cause.
func (c *Causes) Lost(account, function, cause string, n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost == nil {
		c.lost = map[[2]string]map[string]int{}
	}
	k := [2]string{account, function}
	if c.lost[k] == nil {
		c.lost[k] = map[string]int{}
	}
	c.lost[k][cause] += n
}

// Cold is the cause of a cold start of the function now, taking its mark.
// A failure's mark goes first: it is the rarer and more telling cause.
func (c *Causes) Cold(account, function string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [2]string{account, function}
	m := c.lost[k]
	for _, cause := range []string{CauseFailover, CauseIdleReap} {
		if m[cause] > 0 {
			if m[cause]--; m[cause] == 0 {
				delete(m, cause)
			}
			if len(m) == 0 {
				delete(c.lost, k)
			}
			return cause
		}
	}
	return CauseScaleUp
}

// Forget drops a function's marks (it changed or was deleted: its
// environments were retired on purpose).
func (c *Causes) Forget(account, function string) {
	c.mu.Lock()
	delete(c.lost, [2]string{account, function})
	c.mu.Unlock()
}
