package cluster

import (
	"os"
	"testing"
	"time"
)

func TestHostLoad(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc/stat")
	}
	var h hostLoad
	now := time.Now()
	if got := h.millis(now); got != 0 {
		t.Fatalf("first sample: %d, want 0 (nothing to compare with)", got)
	}
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); { // busy: some load to see
	}
	if got := h.millis(now.Add(500 * time.Millisecond)); got != 0 {
		t.Fatalf("within the second: %d, want the last figure (0)", got)
	}
	if got := h.millis(now.Add(time.Second)); got <= 0 {
		t.Fatalf("load %d mCPU while spinning on a CPU", got)
	}
}
