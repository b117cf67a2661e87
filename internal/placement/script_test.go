package placement

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/kilntest/script"
)

// TestScripts runs testdata/*.txt, scripts in the format of package
// kilntest/script: each command's output is checked by the ---- block
// after it. Commands:
//
//	worker ID ZONE MEM CPU [load=N]   register or update a worker (MB, mCPU)
//	place FN MEM [cpu=N] [n=K]        place K environments: the workers, or the error
//	release WORKER FN MEM [cpu=N] [n=K]
//	drain ID
//	remove ID
//	workers                           every worker's bookings
//
// go test ./internal/placement -run Scripts -rewrite writes the actual output back.
func TestScripts(t *testing.T) {
	script.Run(t, "testdata/*.txt", func() func(script.Line) string {
		s := New()
		return func(l script.Line) string { return runCommand(s, l) }
	})
}

// runCommand runs one command line and returns its output.
func runCommand(s *Service, l script.Line) string {
	if l.Want != "" {
		l.Fatalf("placement expects output in a ---- block, not after =>")
	}
	var args []string
	opt := map[string]int{}
	for _, f := range l.Args {
		if k, v, ok := strings.Cut(f, "="); ok {
			opt[k] = l.Int(v)
		} else {
			args = append(args, f)
		}
	}
	need := func(n int) {
		if len(args) != n {
			l.Fatalf("want %d arguments", n)
		}
	}
	n := max(1, opt["n"])
	switch l.Cmd {
	case "worker":
		need(4)
		s.Register(WorkerInfo{ID: args[0], Zone: args[1], MemoryMB: l.Int(args[2]),
			CPUMillis: l.Int(args[3]), LoadMillis: opt["load"]})
	case "place":
		need(2)
		req := Request{Function: args[0], MemoryMB: l.Int(args[1]), CPUMillis: opt["cpu"]}
		var placed []string
		for range n {
			id, err := s.Place(context.Background(), req)
			if err != nil {
				placed = append(placed, "error: "+err.Error())
				break
			}
			placed = append(placed, id)
		}
		return strings.Join(placed, " ")
	case "release":
		need(3)
		for range n {
			s.Release(args[0], Request{Function: args[1], MemoryMB: l.Int(args[2]), CPUMillis: opt["cpu"]})
		}
	case "drain":
		need(1)
		s.Drain(args[0])
	case "remove":
		need(1)
		s.Remove(args[0])
	case "workers":
		need(0)
		return dump(s)
	default:
		l.Fatalf("unknown command")
	}
	return ""
}

// dump shows every worker: zone, memory and CPU booked of capacity, and
// environments by function.
func dump(s *Service) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := slices.Clone(s.list)
	slices.SortFunc(ws, func(a, b *workerState) int { return strings.Compare(a.info.ID, b.info.ID) })
	var lines []string
	for _, w := range ws {
		l := fmt.Sprintf("%s zone=%s mem=%d/%d cpu=%d/%d", w.info.ID, w.info.Zone, w.usedMB, w.info.MemoryMB, w.usedCPU, w.info.CPUMillis)
		if w.draining {
			l += " draining"
		}
		fns := make([]string, 0, len(w.byFunc))
		for fn, n := range w.byFunc {
			fns = append(fns, fmt.Sprintf("%s:%d", fn, n))
		}
		slices.Sort(fns)
		if len(fns) > 0 {
			l += " " + strings.Join(fns, ",")
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}
