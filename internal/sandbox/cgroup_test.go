package sandbox

import "testing"

func TestWeight(t *testing.T) {
	for _, tc := range []struct{ shares, want int }{
		{2, 1},          // the background's lowest
		{74, 7},         // 128 MB
		{1024, 100},     // 1,769 MB: one vCPU
		{5927, 578},     // 10,240 MB
		{262144, 10000}, // v1's highest, past v2's
	} {
		if got := weight(tc.shares); got != tc.want {
			t.Errorf("weight(%d) = %d, want %d", tc.shares, got, tc.want)
		}
	}
}
