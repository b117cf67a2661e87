package placement

import (
	"context"
	"testing"
)

func TestBookings(t *testing.T) {
	s := New()
	s.Register(WorkerInfo{ID: "w2", Zone: "b", MemoryMB: 4096, CPUMillis: 2000})
	s.Register(WorkerInfo{ID: "w1", Zone: "a", MemoryMB: 4096, CPUMillis: 2000})
	req := Request{Function: "1/f", MemoryMB: 1769}
	for range 3 {
		if _, err := s.Place(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	s.Drain("w2")
	s.Release("w1", req)
	got := s.Bookings()
	if len(got) != 2 || got[0].ID != "w1" || got[1].ID != "w2" {
		t.Fatalf("bookings %+v: want w1, w2", got)
	}
	// Three placed (the zones take turns: w1, w2, then w1), one released.
	for i, want := range []Booking{
		{WorkerInfo: WorkerInfo{ID: "w1", Zone: "a", MemoryMB: 4096, CPUMillis: 2000}, BookedMB: 1769, BookedCPU: 1000, Envs: 1},
		{WorkerInfo: WorkerInfo{ID: "w2", Zone: "b", MemoryMB: 4096, CPUMillis: 2000}, BookedMB: 1769, BookedCPU: 1000, Envs: 1, Draining: true},
	} {
		if got[i] != want {
			t.Errorf("worker %d: %+v, want %+v", i, got[i], want)
		}
	}
}
