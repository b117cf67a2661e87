// Package placement chooses the worker on which a new execution environment
// starts. It knows every worker's capacity, its last reported load and what
// it has placed there. It does no I/O: the cluster role feeds it heartbeats
// and requests, so a decision depends only on the calls made before it.
//
// # The rule
//
// A worker is a candidate if it is not draining and the environment fits
// on every resource: memory, and CPU (Lambda's share: MemoryMB/1,769 of a
// CPU, as the sandbox enforces it). Among candidates, Place picks by, in
// order:
//
//  1. the zone holding the fewest environments of this function: a zone
//     outage then takes as small a share of the function as possible;
//  2. the worker holding the fewest environments of this function: a
//     worker's failure takes few of them, and a function's environments,
//     whose load rises and falls together, do not peak on one host;
//  3. the highest dominant-resource utilisation after placing (the larger
//     of its memory and CPU shares): best fit, so different functions,
//     whose peaks rarely coincide, share workers, and whole workers stay
//     free for large requests;
//  4. the lowest measured CPU load: among equally packed workers (empty
//     ones, typically), start where the host is least busy;
//  5. the smallest ID, so that the choice is deterministic.
//
// Environments on a draining worker are leaving, so they count for no
// zone. Measured load only breaks ties and never excludes a worker: what
// environments may use is bounded by their cgroup limits, which placement
// already books, while measured load lags a heartbeat and, on a shared
// host, includes the neighbours; refusing work on that basis would turn
// noise into throttles. Draining only stops new placements: running
// invokes are never moved.
//
// A decision is two passes over the workers (O(workers)), under one lock:
// the function's count per zone, then the choice.
package placement

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// ErrNoCapacity means no registered worker can hold another environment.
var ErrNoCapacity = errors.New("placement: no worker has capacity")

// MBPerCPU is the memory that buys one whole vCPU in Lambda.
const MBPerCPU = 1769

// WorkerInfo is what a worker tells placement about itself, on every heartbeat.
type WorkerInfo struct {
	ID        string
	Zone      string
	MemoryMB  int // capacity for environments; 0 means unbounded
	CPUMillis int // capacity for environments, in thousandths of a CPU; 0 means unbounded
	// LoadMillis is the CPU the worker's host was measured to use recently,
	// in thousandths of a CPU (0 when unknown).
	LoadMillis int
}

// Request asks for a worker for one new environment. Release must be given
// the same request.
type Request struct {
	Function  string // account-qualified function name, to spread its environments
	MemoryMB  int
	CPUMillis int // 0 means Lambda's share of MemoryMB (see CPU)
}

// CPU is the CPU the environment is given, in thousandths of a CPU.
func (r Request) CPU() int {
	if r.CPUMillis > 0 {
		return r.CPUMillis
	}
	return (r.MemoryMB*1000 + MBPerCPU - 1) / MBPerCPU // rounded up, never to overbook
}

type workerState struct {
	info     WorkerInfo
	zone     int // index in Service.zones
	usedMB   int
	usedCPU  int
	byFunc   map[string]int
	draining bool
	n        int // this decision's count of the function, to look it up once
}

// Service is the placement service.
type Service struct {
	mu      sync.Mutex
	workers map[string]*workerState
	list    []*workerState // the same workers, for a cheap pass
	zoneIdx map[string]int
	perZone []int // this decision's count of the function per zone
}

// New returns a placement service with no workers.
func New() *Service {
	return &Service{workers: map[string]*workerState{}, zoneIdx: map[string]int{}}
}

// Register adds a worker or updates its zone, capacity and load.
func (s *Service) Register(info WorkerInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	z, ok := s.zoneIdx[info.Zone]
	if !ok {
		z = len(s.perZone)
		s.zoneIdx[info.Zone] = z
		s.perZone = append(s.perZone, 0)
	}
	if w, ok := s.workers[info.ID]; ok {
		w.info, w.zone = info, z
		return
	}
	w := &workerState{info: info, zone: z, byFunc: map[string]int{}}
	s.workers[info.ID] = w
	s.list = append(s.list, w)
}

// Drain stops placing on a worker. What runs there keeps running.
func (s *Service) Drain(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.workers[id]; ok {
		w.draining = true
	}
}

// Remove forgets a worker (it went silent); it is placed on again once it
// registers anew, with nothing booked.
func (s *Service) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.workers[id]; !ok {
		return
	}
	delete(s.workers, id)
	for i, w := range s.list {
		if w.info.ID == id {
			s.list[i] = s.list[len(s.list)-1]
			s.list = s.list[:len(s.list)-1]
			break
		}
	}
}

// Place picks a worker by the package's rule and books the environment on it.
func (s *Service) Place(ctx context.Context, req Request) (string, error) {
	cpu := req.CPU()
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.perZone)
	for _, w := range s.list {
		w.n = w.byFunc[req.Function]
		if !w.draining {
			s.perZone[w.zone] += w.n
		}
	}
	var best *workerState
	var bestUtil float64
	var shortMem, shortCPU, draining int
	for _, w := range s.list {
		switch {
		case w.draining:
			draining++
			continue
		case w.info.MemoryMB > 0 && w.usedMB+req.MemoryMB > w.info.MemoryMB:
			shortMem++
			continue
		case w.info.CPUMillis > 0 && w.usedCPU+cpu > w.info.CPUMillis:
			shortCPU++
			continue
		}
		util := max(share(w.usedMB+req.MemoryMB, w.info.MemoryMB), share(w.usedCPU+cpu, w.info.CPUMillis))
		if best == nil || better(s.perZone, w, util, best, bestUtil) {
			best, bestUtil = w, util
		}
	}
	if best == nil {
		return "", fmt.Errorf("%w for %d MB and %d mCPU (of %d workers, %d short of memory, %d of CPU, %d draining)",
			ErrNoCapacity, req.MemoryMB, cpu, len(s.list), shortMem, shortCPU, draining)
	}
	best.usedMB += req.MemoryMB
	best.usedCPU += cpu
	best.byFunc[req.Function]++
	return best.info.ID, nil
}

// better reports whether candidate w (utilisation u after placing) beats
// candidate b (utilisation bu): the package's rule, step by step.
func better(perZone []int, w *workerState, u float64, b *workerState, bu float64) bool {
	if zw, zb := perZone[w.zone], perZone[b.zone]; zw != zb {
		return zw < zb
	}
	if w.n != b.n {
		return w.n < b.n
	}
	if u != bu {
		return u > bu
	}
	if w.info.LoadMillis != b.info.LoadMillis {
		return w.info.LoadMillis < b.info.LoadMillis
	}
	return w.info.ID < b.info.ID
}

// share is used/capacity; an unbounded resource is never the dominant one.
func share(used, capacity int) float64 {
	if capacity <= 0 {
		return 0
	}
	return float64(used) / float64(capacity)
}

// Release gives back what Place took, when the environment ends (or never
// started). A worker removed and registered anew since has nothing booked
// for it, so such a release is ignored.
func (s *Service) Release(workerID string, req Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workers[workerID]
	if !ok || w.byFunc[req.Function] == 0 {
		return
	}
	w.usedMB -= req.MemoryMB
	w.usedCPU -= req.CPU()
	if w.byFunc[req.Function]--; w.byFunc[req.Function] == 0 {
		delete(w.byFunc, req.Function)
	}
}

// Booking is what placement holds of one worker: its capacity and what it
// has booked there.
type Booking struct {
	WorkerInfo
	BookedMB, BookedCPU int
	Envs                int // environments booked
	Draining            bool
}

// Bookings lists every worker's bookings, by ID (the console's fleet page).
func (s *Service) Bookings() []Booking {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Booking, 0, len(s.list))
	for _, w := range s.list {
		b := Booking{WorkerInfo: w.info, BookedMB: w.usedMB, BookedCPU: w.usedCPU, Draining: w.draining}
		for _, n := range w.byFunc {
			b.Envs += n
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Booking) int { return strings.Compare(a.ID, b.ID) })
	return out
}
