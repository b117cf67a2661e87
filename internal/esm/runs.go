package esm

import "sync"

// run is a mapping running in this process: a queue mapping's batch loops
// (runner) or a stream mapping's shard readers (streamRun).
type run interface {
	mapping() *Mapping
	stop()
}

// runSet is the mappings of one kind this process runs, by UUID.
type runSet[R run] struct {
	mu   sync.Mutex
	runs map[string]R
}

func (s *runSet[R]) get(id string) (R, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[id]
	return r, ok
}

func (s *runSet[R]) add(id string, r R) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs == nil {
		s.runs = map[string]R{}
	}
	s.runs[id] = r
}

func (s *runSet[R]) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.runs))
	for id := range s.runs {
		ids = append(ids, id)
	}
	return ids
}

// stop ends and forgets mapping id's run, if any.
func (s *runSet[R]) stop(id string) {
	s.mu.Lock()
	r, ok := s.runs[id]
	delete(s.runs, id)
	s.mu.Unlock()
	if ok {
		r.stop()
	}
}

// stopAll ends and forgets every run.
func (s *runSet[R]) stopAll() {
	s.mu.Lock()
	runs := s.runs
	s.runs = nil
	s.mu.Unlock()
	for _, r := range runs {
		r.stop()
	}
}

// stale is the runs of mappings not in want, or changed since they started.
func (s *runSet[R]) stale(want map[string]*Mapping) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, r := range s.runs {
		if m, ok := want[id]; !ok || m.LastModified != r.mapping().LastModified {
			ids = append(ids, id)
		}
	}
	return ids
}
