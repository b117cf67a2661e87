package counting

import (
	"errors"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
)

// lstep is one line of a leases script, at ms milliseconds: grant id of
// fn to holder h (want a reason or ""), return it, renew h's lease (held
// ids of fn "a", pending ids, next), expire, or check the account's use.
type lstep struct {
	ms      int
	op      string // "grant", "return", "renew", "expire", "use", "reserve"
	h       string
	id      uint64
	fn      string
	reason  string
	held    []uint64
	pending []uint64
	next    uint64
	want    int // use: slots counted in the account; expire: slots freed
}

func TestLeasesScripts(t *testing.T) {
	tests := []struct {
		name  string
		limit int
		steps []lstep
	}{
		{"the limit holds across holders; a re-sent grant counts once", 2, []lstep{
			{op: "grant", h: "f1", id: 1, fn: "a"}, {op: "grant", h: "f2", id: 1, fn: "a"},
			{op: "grant", h: "f1", id: 1, fn: "a"}, {op: "use", want: 2},
			{op: "grant", h: "f2", id: 2, fn: "b", reason: ReasonAccount},
			{op: "return", h: "f1", id: 1}, {op: "return", h: "f1", id: 1}, {op: "use", want: 1},
			{op: "grant", h: "f2", id: 3, fn: "b"},
		}},
		{"a renewal frees what its holder no longer lists below next", 5, []lstep{
			{op: "grant", h: "f", id: 1, fn: "a"}, {op: "grant", h: "f", id: 2, fn: "a"},
			{op: "grant", h: "f", id: 3, fn: "a"}, {op: "grant", h: "f", id: 4, fn: "a"},
			// 1 held, 2 asked for (its grant on the way), 3 released (lost), 4 not yet numbered then.
			{op: "renew", h: "f", held: []uint64{1}, pending: []uint64{2}, next: 4},
			{op: "use", want: 3},
		}},
		{"a renewal counts held slots it did not know, over the limit", 1, []lstep{
			{op: "renew", h: "f1", held: []uint64{7, 8}, next: 9}, {op: "use", want: 2},
			{op: "grant", h: "f2", id: 1, fn: "a", reason: ReasonAccount},
			{op: "return", h: "f1", id: 7}, {op: "grant", h: "f2", id: 1, fn: "a", reason: ReasonAccount},
			{op: "return", h: "f1", id: 8}, {op: "grant", h: "f2", id: 1, fn: "a"},
		}},
		{"a silent holder's slots expire after the TTL, not before", 2, []lstep{
			{ms: 0, op: "grant", h: "dead", id: 1, fn: "a"}, {ms: 0, op: "grant", h: "dead", id: 2, fn: "a"},
			{ms: 500, op: "renew", h: "live", next: 1},
			{ms: 1000, op: "expire", want: 0}, {ms: 1000, op: "grant", h: "live", id: 1, fn: "a", reason: ReasonAccount},
			{ms: 1001, op: "expire", want: 2}, {ms: 1001, op: "use", want: 0},
			{ms: 1002, op: "grant", h: "live", id: 2, fn: "a"},
		}},
		{"reserved concurrency is Lambda's reserved reason", 10, []lstep{
			{op: "reserve", fn: "r", want: 1},
			{op: "grant", h: "f1", id: 1, fn: "r"}, {op: "grant", h: "f2", id: 1, fn: "r", reason: ReasonReserved},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{AccountLimit: tt.limit})
			l := NewLeases(c, time.Second)
			t0 := time.Unix(1000, 0)
			for i, s := range tt.steps {
				now := t0.Add(time.Duration(s.ms) * time.Millisecond)
				switch s.op {
				case "grant":
					err := l.Grant(s.h, s.id, Key{Account: "acct", Function: s.fn}, now)
					var e *api.Error
					switch {
					case s.reason == "" && err != nil:
						t.Fatalf("step %d: %v", i, err)
					case s.reason != "" && (!errors.As(err, &e) || e.Reason != s.reason):
						t.Fatalf("step %d: got %v, want %s", i, err, s.reason)
					}
				case "return":
					l.Return(s.h, s.id)
				case "renew":
					var held []Held
					for _, id := range s.held {
						held = append(held, Held{ID: id, Key: Key{Account: "acct", Function: "a"}})
					}
					l.Renew(s.h, held, s.pending, s.next, now)
				case "expire":
					if got := l.Expire(now); got != s.want {
						t.Fatalf("step %d: expired %d, want %d", i, got, s.want)
					}
				case "use":
					if _, got := c.InUse(Key{Account: "acct"}); got != s.want {
						t.Fatalf("step %d: %d in use, want %d", i, got, s.want)
					}
				case "reserve":
					l.Counter().SetReserved(Key{Account: "acct", Function: s.fn}, &s.want)
				}
			}
		})
	}
}

// TestTakeOver: a new leader grants nothing until every holder heard of
// within the TTL renewed, or the TTL ran out; one listening for less than
// the TTL waits it out; what renewals list is counted before any grant.
func TestTakeOver(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Each step: a holder renews (listing the one slot its old leader
	// granted it), then another asks for a slot: refused while taking
	// over ("wait"), by the limit of 1 ("full"), or granted ("ok").
	type step struct {
		ms      int
		renewed string
		want    string
	}
	tests := []struct {
		name      string
		heard     map[string]int // holder → when last heard (ms)
		listening int            // since when the leader listened (ms)
		steps     []step
	}{
		{"nobody heard, listening long enough: at once", nil, -5000, []step{{ms: 0, want: "ok"}}},
		{"waits for every holder heard", map[string]int{"a": -100, "b": -200}, -5000, []step{
			{ms: 0, want: "wait"}, {ms: 10, renewed: "a", want: "wait"}, {ms: 20, renewed: "b", want: "full"}}},
		{"a holder silent longer than the TTL is not waited for", map[string]int{"a": -100, "old": -1500}, -5000, []step{
			{ms: 10, renewed: "a", want: "full"}}},
		{"a silent holder: until the TTL runs out", map[string]int{"a": -100}, -5000, []step{
			{ms: 999, want: "wait"}, {ms: 1000, want: "ok"}}},
		{"listening for less than the TTL: waits it out", map[string]int{"a": -100}, -200, []step{
			{ms: 10, renewed: "a", want: "wait"}, {ms: 800, want: "full"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLeases(New(Config{AccountLimit: 1}), time.Second)
			heard := map[string]time.Time{}
			for h, ms := range tt.heard {
				heard[h] = at(ms)
			}
			l.TakeOver(heard, at(tt.listening), at(0))
			for i, s := range tt.steps {
				if s.renewed != "" {
					l.Renew(s.renewed, []Held{{ID: 1, Key: Key{Account: "acct", Function: "f"}}}, nil, 2, at(s.ms))
					l.Renewed(s.renewed, at(s.ms))
				}
				err := l.Grant("new", uint64(i+1), Key{Account: "acct", Function: "g"}, at(s.ms))
				var e *api.Error
				got := "ok"
				switch {
				case errors.Is(err, ErrTakingOver):
					got = "wait"
				case errors.As(err, &e) && e.Reason == ReasonAccount:
					got = "full"
				case err != nil:
					got = err.Error()
				}
				if got != s.want {
					t.Fatalf("step %d: %s, want %s", i, got, s.want)
				}
			}
		})
	}
}
