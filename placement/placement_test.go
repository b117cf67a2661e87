package placement

import (
	"context"
	"errors"
	"testing"
)

func TestPlace(t *testing.T) {
	type op struct {
		kind     string // "place", "release", "drain"
		function string
		mb       int
		worker   string // the worker expected (place) or acted on (release, drain)
		err      error
	}
	tests := []struct {
		name    string
		workers []WorkerInfo
		ops     []op
	}{
		{"spreads one function over workers", []WorkerInfo{{ID: "a", MemoryMB: 1000}, {ID: "b", MemoryMB: 1000}}, []op{
			{kind: "place", function: "f", mb: 100, worker: "a"},
			{kind: "place", function: "f", mb: 100, worker: "b"},
			{kind: "place", function: "f", mb: 100, worker: "a"},
		}},
		{"ties go to the most free memory", []WorkerInfo{{ID: "a", MemoryMB: 1000}, {ID: "b", MemoryMB: 2000}}, []op{
			{kind: "place", function: "f", mb: 100, worker: "b"},
			{kind: "place", function: "g", mb: 100, worker: "b"},
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
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			for _, w := range tt.workers {
				s.Register(w)
			}
			for i, o := range tt.ops {
				switch o.kind {
				case "drain":
					s.Drain(o.worker)
				case "release":
					s.Release(o.worker, Request{Function: o.function, MemoryMB: o.mb})
				case "place":
					got, err := s.Place(context.Background(), Request{Function: o.function, MemoryMB: o.mb})
					if !errors.Is(err, o.err) || err == nil && got != o.worker {
						t.Fatalf("op %d: placed on %q (%v), want %q (%v)", i, got, err, o.worker, o.err)
					}
				}
			}
		})
	}
}
