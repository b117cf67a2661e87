package load_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/load"
)

// Every goroutine runs until stop, and none after it returns.
func TestRepeat(t *testing.T) {
	var calls [3]atomic.Int64
	stop := load.Repeat(3, func(i int) { calls[i].Add(1); time.Sleep(time.Millisecond) })
	for deadline := time.Now().Add(10 * time.Second); calls[0].Load() == 0 || calls[1].Load() == 0 || calls[2].Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("calls %d %d %d after 10s", calls[0].Load(), calls[1].Load(), calls[2].Load())
		}
	}
	stop()
	stop()
	before := calls[0].Load() + calls[1].Load() + calls[2].Load()
	time.Sleep(20 * time.Millisecond)
	if after := calls[0].Load() + calls[1].Load() + calls[2].Load(); after != before {
		t.Errorf("%d calls after stop returned", after-before)
	}
}
