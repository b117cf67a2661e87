package partition

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestScripts runs testdata/*.txt. Each line is one journal message with
// one record (sequence numbers count from 1), or an assertion:
//
//	lead EPOCH LEADER
//	create EPOCH ENV WORKER FUNCTION TOKEN
//	started|acquire|release EPOCH ENV TOKEN
//	renew|drain|dead EPOCH ENV
//	check ENV STATUS [TOKEN]      (STATUS "gone" for a dead env)
//	idle FUNCTION ENV|none        PickIdle's choice
//	trim SEQ                      TrimPoint
//	replay-from SEQ               a state replaying messages SEQ.. equals this one
//
// A record line ending in "=> TEXT" must fail with an error containing TEXT
// (and is skipped, as every member skips it).
func TestScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

func runScript(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := New()
	var journal [][]Record
	known := map[string]Env{} // last descriptor of every env the script named
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		where := fmt.Sprintf("%s:%d: %s", path, n+1, line)
		wantErr := ""
		if i := strings.Index(line, "=>"); i >= 0 {
			wantErr, line = strings.TrimSpace(line[i+2:]), strings.TrimSpace(line[:i])
		}
		f := strings.Fields(line)
		num := func(i int) uint64 {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			return v
		}
		var rec *Record
		switch f[0] {
		case "lead":
			rec = &Record{Op: OpLead, Epoch: num(1), Leader: f[2]}
		case "create":
			e := Env{ID: f[2], Worker: f[3], Key: Key{Account: "acct", Function: f[4], Version: "$LATEST", Revision: "r1"}, MemoryMB: 128}
			tok := ""
			if len(f) > 5 {
				tok = f[5]
			}
			r := Transition(OpCreate, num(1), e, tok)
			rec = &r
		case "started", "acquire", "release", "renew", "drain", "dead":
			e, ok := known[f[2]]
			if !ok {
				e = Env{ID: f[2], Worker: "w?", Key: Key{Account: "acct", Function: "f?"}}
			}
			if cur, ok := s.Env(f[2]); ok {
				e = cur
			}
			tok := ""
			if len(f) > 3 {
				tok = f[3]
			}
			r := Transition(Op(f[0]), num(1), e, tok)
			rec = &r
		case "check":
			e, ok := s.Env(f[1])
			if f[2] == "gone" {
				if ok {
					t.Fatalf("%s: env is %s", where, e.Status)
				}
				continue
			}
			if !ok || e.Status.String() != f[2] || len(f) > 3 && e.Token != f[3] {
				t.Fatalf("%s: got %+v (present %v)", where, e, ok)
			}
			continue
		case "idle":
			e, ok := s.PickIdle(Key{Account: "acct", Function: f[1], Version: "$LATEST", Revision: "r1"}, nil)
			got := "none"
			if ok {
				got = e.ID
			}
			if got != f[2] {
				t.Fatalf("%s: picked %s", where, got)
			}
			continue
		case "trim":
			if got := s.TrimPoint(); got != num(1) {
				t.Fatalf("%s: trim point %d", where, got)
			}
			continue
		case "replay-from":
			from := num(1)
			r := New()
			for i := from; i <= uint64(len(journal)); i++ {
				r.Apply(i, journal[i-1]...)
			}
			if !reflect.DeepEqual(strip(r.Envs()), strip(s.Envs())) || r.Epoch != s.Epoch || r.Leader != s.Leader {
				t.Fatalf("%s: replay differs:\n got  %+v epoch %d %s\n want %+v epoch %d %s", where, r.Envs(), r.Epoch, r.Leader, s.Envs(), s.Epoch, s.Leader)
			}
			continue
		default:
			t.Fatalf("%s: unknown command", where)
		}
		if rec.Op != OpLead {
			rec.Leader = s.Leader // a leader stamps its records
		}
		journal = append(journal, []Record{*rec})
		err := s.Apply(uint64(len(journal)), *rec)
		switch {
		case wantErr == "" && err != nil:
			t.Fatalf("%s: %v", where, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Fatalf("%s: got error %v, want %q", where, err, wantErr)
		}
		if rec.Env != nil {
			if e, ok := s.Env(rec.Env.ID); ok {
				known[e.ID] = e
			}
		}
	}
}

// strip drops Seq, which differs only for envs a partial replay saw later.
func strip(es []Env) []Env {
	for i := range es {
		es[i].Seq = 0
	}
	return es
}

func TestTransitions(t *testing.T) {
	all := []Status{Initializing, Idle, Busy, Draining}
	ops := []Op{OpStarted, OpAcquire, OpRelease, OpDrain, OpDead}
	want := map[Op][]Status{
		OpStarted: {Initializing}, OpAcquire: {Idle}, OpRelease: {Busy},
		OpDrain: {Initializing, Idle, Busy, Draining}, OpDead: {Initializing, Idle, Busy, Draining},
	}
	for _, op := range ops {
		for _, from := range all {
			s := New()
			s.Apply(1, Record{Op: OpLead, Epoch: 1, Leader: "m"})
			e := Env{ID: "e", Worker: "w", Key: Key{Function: "f"}, Status: from, Token: "tok"}
			if from == Idle {
				e.Token = ""
			}
			s.apply(2, Record{Op: OpCreate, Epoch: 1, Env: &e})
			s.Applied = 2
			err := s.Apply(3, Transition(op, 1, e, "tok"))
			ok := false
			for _, f := range want[op] {
				ok = ok || f == from
			}
			if (err == nil) != ok {
				t.Errorf("%s from %s: err %v, want legal=%v", op, from, err, ok)
			}
		}
	}
}

func TestFencing(t *testing.T) {
	s := New()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Apply(1, Record{Op: OpLead, Epoch: 1, Leader: "a"}))
	must(s.Apply(2, Transition(OpCreate, 1, Env{ID: "e1", Worker: "w", Key: Key{Function: "f"}}, "")))
	must(s.Apply(3, Record{Op: OpLead, Epoch: 2, Leader: "b"}))
	if err := s.Apply(4, Transition(OpStarted, 1, Env{ID: "e1", Worker: "w", Key: Key{Function: "f"}}, "")); err == nil {
		t.Fatal("stale-epoch record applied")
	}
	if err := s.Apply(5, Record{Op: OpLead, Epoch: 2, Leader: "c"}); err == nil {
		t.Fatal("second leader of one epoch accepted")
	}
	if s.Leader != "b" || s.Epoch != 2 {
		t.Fatalf("leader %s epoch %d", s.Leader, s.Epoch)
	}
	if err := s.Apply(5, Record{Op: OpLead, Epoch: 3, Leader: "c"}); err == nil {
		t.Fatal("re-applied sequence accepted")
	}
}

func TestRingSpreadsAndMovesLittle(t *testing.T) {
	const fns = 20000
	r4, r5 := NewRing(4), NewRing(5)
	count := make([]int, 4)
	moved := 0
	for i := 0; i < fns; i++ {
		name := "fn-" + strconv.Itoa(i)
		p := r4.Of("123456789012", name)
		count[p]++
		if q := r5.Of("123456789012", name); q != p {
			if q != 4 {
				t.Fatalf("%s moved between old partitions %d → %d", name, p, q)
			}
			moved++
		}
	}
	for p, c := range count {
		if c < fns/4*7/10 || c > fns/4*13/10 {
			t.Errorf("partition %d holds %d of %d functions", p, c, fns)
		}
	}
	if share := float64(moved) / fns; share < 0.1 || share > 0.3 {
		t.Errorf("growing 4→5 moved %.2f of functions, want ≈0.2", share)
	}
	if NewRing(1).Of("a", "b") != 0 {
		t.Fatal("one partition")
	}
}
