package placement

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt with the output the code gives")

// TestScripts runs testdata/*.txt, in the style of etcd raft's datadriven
// tests. A block is one or more command lines, a "----" line, and the
// output they must give, up to a blank line; "#" lines between blocks are
// comments. Commands:
//
//	worker ID ZONE MEM CPU [load=N]   register or update a worker (MB, mCPU)
//	place FN MEM [cpu=N] [n=K]        place K environments: the workers, or the error
//	release WORKER FN MEM [cpu=N] [n=K]
//	drain ID
//	remove ID
//	workers                           every worker's bookings
//
// go test ./placement -run Scripts -rewrite writes the actual output back.
func TestScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

type block struct {
	pre  []string // comments and blank lines before it
	cmds []string
	want []string
	line int
}

func parseScript(t *testing.T, text string) (blocks []block, tail []string) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var b block
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case len(b.cmds) == 0 && (strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#")):
			b.pre = append(b.pre, l)
		case l == "----":
			if len(b.cmds) == 0 {
				t.Fatalf("line %d: ---- without a command", i+1)
			}
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
				b.want = append(b.want, lines[i])
			}
			i-- // the blank line starts the next block's prefix
			blocks = append(blocks, b)
			b = block{}
		default:
			if len(b.cmds) == 0 {
				b.line = i + 1
			}
			b.cmds = append(b.cmds, l)
		}
	}
	if len(b.cmds) > 0 {
		t.Fatalf("line %d: command without ----", b.line)
	}
	return blocks, b.pre
}

func runScript(t *testing.T, path string) {
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks, tail := parseScript(t, string(text))
	s := New()
	var out strings.Builder
	for _, b := range blocks {
		var got []string
		for _, c := range b.cmds {
			if o := runCommand(t, s, c); o != "" {
				got = append(got, strings.Split(o, "\n")...)
			}
		}
		if !*rewrite && !slices.Equal(got, b.want) {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, b.line, strings.Join(b.cmds, "; "),
				strings.Join(got, "\n"), strings.Join(b.want, "\n"))
		}
		for _, l := range slices.Concat(b.pre, b.cmds, []string{"----"}, got) {
			out.WriteString(l + "\n")
		}
	}
	for _, l := range tail {
		out.WriteString(l + "\n")
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runCommand runs one command line and returns its output.
func runCommand(t *testing.T, s *Service, line string) string {
	t.Helper()
	var args []string
	opt := map[string]int{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			opt[k] = atoi(t, line, v)
		} else {
			args = append(args, f)
		}
	}
	need := func(n int) {
		if len(args) != n {
			t.Fatalf("%q: want %d arguments", line, n-1)
		}
	}
	n := max(1, opt["n"])
	switch args[0] {
	case "worker":
		need(5)
		s.Register(WorkerInfo{ID: args[1], Zone: args[2], MemoryMB: atoi(t, line, args[3]),
			CPUMillis: atoi(t, line, args[4]), LoadMillis: opt["load"]})
	case "place":
		need(3)
		req := Request{Function: args[1], MemoryMB: atoi(t, line, args[2]), CPUMillis: opt["cpu"]}
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
		need(4)
		for range n {
			s.Release(args[1], Request{Function: args[2], MemoryMB: atoi(t, line, args[3]), CPUMillis: opt["cpu"]})
		}
	case "drain":
		need(2)
		s.Drain(args[1])
	case "remove":
		need(2)
		s.Remove(args[1])
	case "workers":
		need(1)
		return dump(s)
	default:
		t.Fatalf("%q: unknown command", line)
	}
	return ""
}

func atoi(t *testing.T, line, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return n
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
