package sandbox

import "sync"

// cpuMB is the memory that buys one vCPU, as in Lambda.
const cpuMB = 1769

// cpuSet hands each environment the CPUs its memory buys (one per 1,769 MB,
// rounded up) out of those the worker may use, least used first, and keeps
// its threads on them. A runtime then sees its share as its CPU count: Go
// sizes GOMAXPROCS from it (a CFS quota alone leaves it at 2 or more), and
// fewer threads hand work to each other across CPUs, which is what an
// invoke's latency is made of on a virtual machine. An environment whose
// memory buys every CPU is not pinned.
type cpuSet struct {
	mu   sync.Mutex
	cpus []int // allowed CPUs
	use  []int // environments pinned to each
	next int   // where the search for the least used starts, to spread ties
}

func newCPUSet(allowed []int) *cpuSet {
	return &cpuSet{cpus: allowed, use: make([]int, len(allowed))}
}

// take returns the CPUs for an environment of memMB, nil for all of them.
func (s *cpuSet) take(memMB int) []int {
	n := (memMB + cpuMB - 1) / cpuMB
	if n >= len(s.cpus) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	picked := make([]int, 0, n)
	taken := make([]bool, len(s.cpus))
	for range n {
		best := -1
		for j := range s.cpus {
			i := (s.next + j) % len(s.cpus)
			if !taken[i] && (best < 0 || s.use[i] < s.use[best]) {
				best = i
			}
		}
		taken[best] = true
		s.use[best]++
		picked = append(picked, s.cpus[best])
	}
	s.next = (s.next + 1) % len(s.cpus)
	return picked
}

// release returns CPUs that take gave.
func (s *cpuSet) release(cpus []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cpus {
		for i, have := range s.cpus {
			if have == c && s.use[i] > 0 {
				s.use[i]--
				break
			}
		}
	}
}
