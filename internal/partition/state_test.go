package partition

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/kilntest/script"
)

// TestScripts runs testdata/*.txt, scripts in the format of package
// kilntest/script. Each line is one journal message with one record
// (sequence numbers count from 1), or an assertion:
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
	script.Run(t, "testdata/*.txt", newScript)
}

// newScript gives one script its own state and journal.
func newScript() func(script.Line) string {
	s := New()
	var journal [][]Record
	known := map[string]Env{} // last descriptor of every env the script named
	return func(l script.Line) string {
		f := l.Args
		num := func(i int) uint64 { return uint64(l.Int(f[i])) }
		var rec *Record
		switch l.Cmd {
		case "lead":
			rec = &Record{Op: OpLead, Epoch: num(0), Leader: f[1]}
		case "create":
			e := Env{ID: f[1], Worker: f[2], Key: Key{Account: "acct", Function: f[3], Version: "$LATEST", Revision: "r1"}, MemoryMB: 128}
			tok := ""
			if len(f) > 4 {
				tok = f[4]
			}
			r := Transition(OpCreate, num(0), e, tok)
			rec = &r
		case "started", "acquire", "release", "renew", "drain", "dead":
			e, ok := known[f[1]]
			if !ok {
				e = Env{ID: f[1], Worker: "w?", Key: Key{Account: "acct", Function: "f?"}}
			}
			if cur, ok := s.Env(f[1]); ok {
				e = cur
			}
			tok := ""
			if len(f) > 2 {
				tok = f[2]
			}
			r := Transition(Op(l.Cmd), num(0), e, tok)
			rec = &r
		case "check":
			e, ok := s.Env(f[0])
			if f[1] == "gone" {
				if ok {
					l.Fatalf("env is %s", e.Status)
				}
				return ""
			}
			if !ok || e.Status.String() != f[1] || len(f) > 2 && e.Token != f[2] {
				l.Fatalf("got %+v (present %v)", e, ok)
			}
			return ""
		case "idle":
			e, ok := s.PickIdle(Key{Account: "acct", Function: f[0], Version: "$LATEST", Revision: "r1"}, nil)
			got := "none"
			if ok {
				got = e.ID
			}
			if got != f[1] {
				l.Fatalf("picked %s", got)
			}
			return ""
		case "trim":
			if got := s.TrimPoint(); got != num(0) {
				l.Fatalf("trim point %d", got)
			}
			return ""
		case "replay-from":
			from := num(0)
			r := New()
			for i := from; i <= uint64(len(journal)); i++ {
				r.Apply(i, journal[i-1]...)
			}
			if !reflect.DeepEqual(strip(r.Envs()), strip(s.Envs())) || r.Epoch != s.Epoch || r.Leader != s.Leader {
				l.Fatalf("replay differs:\n got  %+v epoch %d %s\n want %+v epoch %d %s", r.Envs(), r.Epoch, r.Leader, s.Envs(), s.Epoch, s.Leader)
			}
			return ""
		default:
			l.Fatalf("unknown command")
		}
		if rec.Op != OpLead {
			rec.Leader = s.Leader // a leader stamps its records
		}
		journal = append(journal, []Record{*rec})
		err := s.Apply(uint64(len(journal)), *rec)
		switch {
		case l.Want == "" && err != nil:
			l.Fatalf("%v", err)
		case l.Want != "" && (err == nil || !strings.Contains(err.Error(), l.Want)):
			l.Fatalf("got error %v, want %q", err, l.Want)
		}
		if rec.Env != nil {
			if e, ok := s.Env(rec.Env.ID); ok {
				known[e.ID] = e
			}
		}
		return ""
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

// BenchmarkWarmCycle is the state machine's part of one warm invoke as a
// partition leader decides it: pick an idle environment (provisioned
// first), acquire it, release it. assignment's BenchmarkWarmCycle is the
// same cycle in kiln up's service; docs/architecture.md compares them.
func BenchmarkWarmCycle(b *testing.B) {
	s := New()
	s.Apply(1, Record{Op: OpLead, Epoch: 1, Leader: "m"})
	k := Key{Account: "acct", Function: "f", Version: "1", Revision: "r1"}
	for i := range 4 {
		id := "e" + strconv.Itoa(i)
		s.Apply(0, Transition(OpCreate, 1, Env{ID: id, Worker: "w1", Key: k, MemoryMB: 128}, "t"+id))
		e, _ := s.Env(id)
		s.Apply(0, Transition(OpStarted, 1, e, "t"+id))
		e, _ = s.Env(id)
		s.Apply(0, Transition(OpRelease, 1, e, "t"+id))
	}
	provisioned := func(e *Env) bool { return e.Provisioned }
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e, ok := s.PickIdle(k, provisioned)
		if !ok {
			e, ok = s.PickIdle(k, nil)
		}
		if !ok {
			b.Fatal("no idle environment")
		}
		token := strconv.Itoa(i)
		if err := s.Apply(0, Transition(OpAcquire, 1, e, token)); err != nil {
			b.Fatal(err)
		}
		e, _ = s.Env(e.ID)
		if err := s.Apply(0, Transition(OpRelease, 1, e, token)); err != nil {
			b.Fatal(err)
		}
	}
}
