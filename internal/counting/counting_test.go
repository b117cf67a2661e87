package counting

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
)

func ptr(n int) *int { return &n }

// step is one line of a counting script: acquire for fn (want a throttle
// reason or ""), release the oldest slot of fn, or set fn's reservation.
type step struct {
	op     string // "acquire", "release", "reserve"
	fn     string
	n      *int
	reason string
}

func TestScripts(t *testing.T) {
	tests := []struct {
		name  string
		limit int
		steps []step
	}{
		{"account limit", 2, []step{
			{op: "acquire", fn: "a"}, {op: "acquire", fn: "b"},
			{op: "acquire", fn: "a", reason: ReasonAccount},
			{op: "release", fn: "a"}, {op: "acquire", fn: "b"},
		}},
		{"reserved caps its function and shrinks the pool", 3, []step{
			{op: "reserve", fn: "r", n: ptr(1)},
			{op: "acquire", fn: "r"}, {op: "acquire", fn: "r", reason: ReasonReserved},
			{op: "acquire", fn: "a"}, {op: "acquire", fn: "a"},
			{op: "acquire", fn: "a", reason: ReasonAccount},
		}},
		{"reserved zero throttles everything", 10, []step{
			{op: "reserve", fn: "z", n: ptr(0)},
			{op: "acquire", fn: "z", reason: ReasonReserved},
		}},
		{"reservation is not borrowed by others while idle", 2, []step{
			{op: "reserve", fn: "r", n: ptr(1)},
			{op: "acquire", fn: "a"}, {op: "acquire", fn: "a", reason: ReasonAccount},
			{op: "acquire", fn: "r"},
		}},
		{"removing a reservation while running moves its slots to the pool", 2, []step{
			{op: "reserve", fn: "r", n: ptr(1)},
			{op: "acquire", fn: "r"}, {op: "reserve", fn: "r", n: nil},
			{op: "acquire", fn: "a"}, {op: "acquire", fn: "a", reason: ReasonAccount},
			{op: "release", fn: "r"}, {op: "acquire", fn: "a"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{AccountLimit: tt.limit})
			held := map[string][]Slot{}
			for i, s := range tt.steps {
				k := Key{Account: "111111111111", Function: s.fn}
				switch s.op {
				case "reserve":
					c.SetReserved(k, s.n)
				case "release":
					held[s.fn][0].Release()
					held[s.fn] = held[s.fn][1:]
				case "acquire":
					slot, err := c.Acquire(k)
					var e *api.Error
					switch {
					case s.reason == "" && err != nil:
						t.Fatalf("step %d: acquire %s: %v", i, s.fn, err)
					case s.reason != "" && (!errors.As(err, &e) || e.Reason != s.reason || e.Status != 429):
						t.Fatalf("step %d: acquire %s: got %v, want throttle %s", i, s.fn, err, s.reason)
					case err == nil:
						held[s.fn] = append(held[s.fn], slot)
					}
				}
			}
		})
	}
}

// TestRaceExact checks the limit holds exactly under concurrent acquires.
func TestRaceExact(t *testing.T) {
	c := New(Config{AccountLimit: 50})
	k := Key{Account: "111111111111", Function: "f"}
	var mu sync.Mutex
	var got []Slot
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := c.Acquire(k); err == nil {
				mu.Lock()
				got = append(got, s)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(got) != 50 || c.Running() != 50 {
		t.Fatalf("granted %d slots (%d running), want 50", len(got), c.Running())
	}
	for _, s := range got {
		s.Release()
	}
	if fn, acct := c.InUse(k); fn != 0 || acct != 0 || c.Running() != 0 {
		t.Fatalf("after releases in use = %d/%d, %d running", fn, acct, c.Running())
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	c := New(Config{})
	k := Key{Account: "111111111111", Function: "f"}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s, err := c.Acquire(k)
			if err != nil {
				b.Fatal(err)
			}
			s.Release()
		}
	})
}

func TestScalingRate(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New(Config{ScaleBurst: 10, ScaleRefill: 10, Now: func() time.Time { return now }})
	k := Key{Account: "111111111111", Function: "f"}
	for i := range 10 {
		if err := c.AllowNewEnvironment(k); err != nil {
			t.Fatalf("env %d of the burst: %v", i, err)
		}
	}
	var e *api.Error
	if err := c.AllowNewEnvironment(k); !errors.As(err, &e) || e.Reason != ReasonScaling {
		t.Fatalf("past the burst: %v", err)
	}
	// 10 per 10 s refills one per second, continuously.
	now = now.Add(1500 * time.Millisecond)
	if err := c.AllowNewEnvironment(k); err != nil {
		t.Fatalf("after 1.5 s: %v", err)
	}
	if err := c.AllowNewEnvironment(k); err == nil {
		t.Fatal("second env after 1.5 s allowed")
	}
	// Another function has its own rate.
	if err := c.AllowNewEnvironment(Key{Account: "111111111111", Function: "g"}); err != nil {
		t.Fatal(err)
	}
	// The bucket never holds more than the burst.
	now = now.Add(time.Hour)
	for range 10 {
		c.AllowNewEnvironment(k)
	}
	if err := c.AllowNewEnvironment(k); err == nil {
		t.Fatal("bucket exceeded its burst")
	}
	if err := New(Config{Unlimited: true, ScaleBurst: 1}).AllowNewEnvironment(k); err != nil {
		t.Fatal(err)
	}
}
