// Package placement chooses the worker on which a new execution environment
// starts. It knows every worker's capacity and what it has placed there.
package placement

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNoCapacity means no registered worker can hold another environment.
var ErrNoCapacity = errors.New("placement: no worker has capacity")

// WorkerInfo is what a worker tells placement about itself.
type WorkerInfo struct {
	ID       string
	Zone     string
	MemoryMB int // capacity for environments; 0 means unbounded
}

// Request asks for a worker for one new environment.
type Request struct {
	Function string // account-qualified function name, to spread its environments
	MemoryMB int
}

type workerState struct {
	info     WorkerInfo
	usedMB   int
	byFunc   map[string]int
	draining bool
}

// Service is the placement service.
type Service struct {
	mu      sync.Mutex
	workers map[string]*workerState
}

// New returns a placement service with no workers.
func New() *Service { return &Service{workers: map[string]*workerState{}} }

// Register adds a worker or updates its capacity.
func (s *Service) Register(info WorkerInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.workers[info.ID]; ok {
		w.info = info
		return
	}
	s.workers[info.ID] = &workerState{info: info, byFunc: map[string]int{}}
}

// Drain stops placing on a worker.
func (s *Service) Drain(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.workers[id]; ok {
		w.draining = true
	}
}

// Remove forgets a worker (it went silent); it is placed on again once it
// registers anew.
func (s *Service) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.workers, id)
}

// Place picks a worker: the one holding the fewest environments of this
// function (spreading a function), then the one with most free memory.
func (s *Service) Place(ctx context.Context, req Request) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *workerState
	for _, w := range s.workers {
		if w.draining || w.info.MemoryMB > 0 && w.usedMB+req.MemoryMB > w.info.MemoryMB {
			continue
		}
		if best == nil || w.byFunc[req.Function] < best.byFunc[req.Function] ||
			w.byFunc[req.Function] == best.byFunc[req.Function] && (free(w) > free(best) ||
				free(w) == free(best) && w.info.ID < best.info.ID) { // ties: by ID, so placement is deterministic
			best = w
		}
	}
	if best == nil {
		return "", fmt.Errorf("%w for %d MB", ErrNoCapacity, req.MemoryMB)
	}
	best.usedMB += req.MemoryMB
	best.byFunc[req.Function]++
	return best.info.ID, nil
}

// Release gives back what Place took, when the environment ends (or never started).
func (s *Service) Release(workerID string, req Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workers[workerID]
	if !ok {
		return
	}
	w.usedMB -= req.MemoryMB
	if w.byFunc[req.Function]--; w.byFunc[req.Function] <= 0 {
		delete(w.byFunc, req.Function)
	}
}

func free(w *workerState) int {
	if w.info.MemoryMB == 0 {
		return int(^uint(0) >> 1)
	}
	return w.info.MemoryMB - w.usedMB
}
