package sandbox

import (
	"reflect"
	"testing"
)

func TestCPUSet(t *testing.T) {
	s := newCPUSet([]int{0, 1, 2, 3})
	steps := []struct {
		memMB   int
		release []int
		want    []int
	}{
		{memMB: 128, want: []int{0}},
		{memMB: 1769, want: []int{1}},    // least used first
		{memMB: 1770, want: []int{2, 3}}, // two vCPUs' worth
		{memMB: 512, want: []int{3}},     // all used once: ties spread from a moving start
		{memMB: 4 * 1769, want: nil},     // every CPU: not pinned
		{memMB: 10240, want: nil},
		{release: []int{2, 3}, memMB: 128, want: []int{2}},
		{memMB: 128, want: []int{1}},
	}
	for i, st := range steps {
		if st.release != nil {
			s.release(st.release)
		}
		if got := s.take(st.memMB); !reflect.DeepEqual(got, st.want) {
			t.Fatalf("step %d (%d MB): got %v, want %v (use %v)", i, st.memMB, got, st.want, s.use)
		}
	}
	if want := []int{1, 2, 1, 1}; !reflect.DeepEqual(s.use, want) {
		t.Fatalf("use %v, want %v", s.use, want)
	}
}
