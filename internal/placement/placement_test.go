package placement

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestRequestCPU(t *testing.T) {
	for _, tt := range []struct {
		req  Request
		want int
	}{
		{Request{MemoryMB: 1769}, 1000},
		{Request{MemoryMB: 3538}, 2000},
		{Request{MemoryMB: 128}, 73}, // 72.4, rounded up
		{Request{MemoryMB: 10240}, 5789},
		{Request{MemoryMB: 128, CPUMillis: 500}, 500},
		{Request{}, 0},
	} {
		if got := tt.req.CPU(); got != tt.want {
			t.Errorf("%+v: CPU %d, want %d", tt.req, got, tt.want)
		}
	}
}

func TestPlace(t *testing.T) {
	type op struct {
		kind     string // "place", "release", "drain", "remove"
		function string
		mb, cpu  int
		worker   string // the worker expected (place) or acted on (release, drain, remove)
		err      error
	}
	tests := []struct {
		name    string
		workers []WorkerInfo
		ops     []op
	}{
		{"spreads one function over zones before workers", []WorkerInfo{
			{ID: "a1", Zone: "a", MemoryMB: 1000}, {ID: "a2", Zone: "a", MemoryMB: 1000}, {ID: "b1", Zone: "b", MemoryMB: 1000}}, []op{
			{kind: "place", function: "f", mb: 100, worker: "a1"},
			{kind: "place", function: "f", mb: 100, worker: "b1"},
			{kind: "place", function: "f", mb: 100, worker: "a2"},
			{kind: "place", function: "f", mb: 100, worker: "b1"},
		}},
		{"packs unrelated functions onto the fullest worker", []WorkerInfo{{ID: "a", MemoryMB: 1000}, {ID: "b", MemoryMB: 2000}}, []op{
			{kind: "place", function: "f", mb: 100, worker: "a"}, // 10% of a beats 5% of b
			{kind: "place", function: "g", mb: 100, worker: "a"},
			{kind: "place", function: "h", mb: 900, worker: "b"}, // does not fit on a any more
			{kind: "place", function: "i", mb: 100, worker: "b"}, // a would be 30%, b 50%: b is fuller
		}},
		{"dominant resource decides the fit", []WorkerInfo{
			{ID: "a", MemoryMB: 4000, CPUMillis: 4000}, {ID: "b", MemoryMB: 4000, CPUMillis: 1000}}, []op{
			{kind: "place", function: "f", mb: 100, cpu: 500, worker: "b"}, // b's CPU share 50%
			{kind: "place", function: "g", mb: 100, cpu: 600, worker: "a"}, // fits only on a
			{kind: "place", function: "h", mb: 100, cpu: 500, worker: "b"}, // exactly full
			{kind: "place", function: "i", mb: 100, cpu: 1, worker: "a"},
		}},
		{"CPU rejects while memory fits", []WorkerInfo{{ID: "a", MemoryMB: 10240, CPUMillis: 1000}}, []op{
			{kind: "place", function: "f", mb: 1769, worker: "a"},
			{kind: "place", function: "f", mb: 128, err: ErrNoCapacity},
			{kind: "release", function: "f", mb: 1769, worker: "a"},
			{kind: "place", function: "f", mb: 128, worker: "a"},
		}},
		{"full workers are skipped, then no capacity", []WorkerInfo{{ID: "a", MemoryMB: 256}, {ID: "b", MemoryMB: 128}}, []op{
			{kind: "place", function: "f", mb: 256, worker: "a"},
			{kind: "place", function: "f", mb: 128, worker: "b"},
			{kind: "place", function: "f", mb: 128, err: ErrNoCapacity},
			{kind: "release", function: "f", mb: 256, worker: "a"},
			{kind: "place", function: "f", mb: 128, worker: "a"},
		}},
		{"draining workers get nothing new", []WorkerInfo{{ID: "a", MemoryMB: 1000}, {ID: "b", MemoryMB: 1000}}, []op{
			{kind: "drain", worker: "a"},
			{kind: "place", function: "f", mb: 100, worker: "b"},
			{kind: "place", function: "f", mb: 100, worker: "b"},
			{kind: "drain", worker: "b"},
			{kind: "place", function: "f", mb: 100, err: ErrNoCapacity},
		}},
		{"a removed worker's releases are ignored", []WorkerInfo{{ID: "a", MemoryMB: 200}}, []op{
			{kind: "place", function: "f", mb: 200, worker: "a"},
			{kind: "remove", worker: "a"},
			{kind: "place", function: "f", mb: 100, err: ErrNoCapacity},
			{kind: "register", worker: "a"},
			{kind: "release", function: "f", mb: 200, worker: "a"}, // booked before the removal
			{kind: "place", function: "f", mb: 200, worker: "a"},
			{kind: "place", function: "g", mb: 1, err: ErrNoCapacity},
		}},
		{"unbounded workers (kiln up) always fit", []WorkerInfo{{ID: "w"}}, []op{
			{kind: "place", function: "f", mb: 10240, worker: "w"},
			{kind: "place", function: "f", mb: 10240, worker: "w"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			for _, w := range tt.workers {
				s.Register(w)
			}
			for i, o := range tt.ops {
				req := Request{Function: o.function, MemoryMB: o.mb, CPUMillis: o.cpu}
				switch o.kind {
				case "drain":
					s.Drain(o.worker)
				case "remove":
					s.Remove(o.worker)
				case "register":
					for _, w := range tt.workers {
						if w.ID == o.worker {
							s.Register(w)
						}
					}
				case "release":
					s.Release(o.worker, req)
				case "place":
					got, err := s.Place(context.Background(), req)
					if !errors.Is(err, o.err) || err == nil && got != o.worker {
						t.Fatalf("op %d: placed on %q (%v), want %q (%v)", i, got, err, o.worker, o.err)
					}
				}
			}
		})
	}
}

// BenchmarkPlace places and releases on 100 workers in 3 zones, each
// holding environments of many functions.
func BenchmarkPlace(b *testing.B) {
	s := New()
	for i := range 100 {
		s.Register(WorkerInfo{ID: fmt.Sprintf("w%03d", i), Zone: string(rune('a' + i%3)),
			MemoryMB: 64 << 10, CPUMillis: 32000, LoadMillis: i * 37 % 1000})
	}
	fns := make([]string, 500)
	for i := range fns {
		fns[i] = fmt.Sprintf("acct/fn%d", i)
	}
	for i := range 2000 { // about a third full
		if _, err := s.Place(context.Background(), Request{Function: fns[i%len(fns)], MemoryMB: 128 << (i % 4)}); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req := Request{Function: fns[i%len(fns)], MemoryMB: 512}
		id, err := s.Place(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		s.Release(id, req)
	}
}
