package counting

import (
	"errors"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/api"
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
