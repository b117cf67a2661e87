package worker

import (
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
)

// peakProc is a Process that only reports a memory high-water mark.
type peakProc struct{ peak int64 }

func (p peakProc) Kill() error          { return nil }
func (p peakProc) Wait() error          { return nil }
func (p peakProc) MaxMemoryUsed() int64 { return p.peak }

// TestReport: the END and REPORT lines, byte for byte as Lambda writes them.
func TestReport(t *testing.T) {
	for _, tc := range []struct {
		name     string
		res      invoke.Result
		first    bool
		initType string
		dropped  int64
		want     string
	}{
		{"Warm", invoke.Result{Duration: 1234567 * time.Nanosecond}, false, "", 0,
			"END RequestId: r1\nREPORT RequestId: r1\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 21 MB\t\n"},
		{"First", invoke.Result{Duration: 2 * time.Millisecond}, true, "on-demand", 3,
			"END RequestId: r1\nREPORT RequestId: r1\tDuration: 2.00 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 21 MB\tInit Duration: 45.68 ms\tLog Lines Dropped: 3\t\n"},
		{"Provisioned", invoke.Result{Duration: 999 * time.Microsecond}, true, "provisioned-concurrency", 0,
			"END RequestId: r1\nREPORT RequestId: r1\tDuration: 1.00 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 21 MB\t\n"},
		{"Timeout", invoke.Result{Duration: 3 * time.Second, ErrorType: "Sandbox.Timedout"}, false, "", 0,
			"END RequestId: r1\nREPORT RequestId: r1\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 128 MB\tMax Memory Used: 21 MB\tStatus: timeout\n"},
		{"OutOfMemory", invoke.Result{Duration: 10 * time.Microsecond, ErrorType: "Runtime.OutOfMemory"}, false, "", 0,
			"END RequestId: r1\nREPORT RequestId: r1\tDuration: 0.01 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 21 MB\tStatus: error\tError Type: Runtime.OutOfMemory\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{proc: peakProc{20<<20 + 1}, initDuration: 45678 * time.Microsecond}
			e.spec.Function = api.FunctionConfiguration{MemorySize: 128}
			e.spec.InitType = tc.initType
			e.log.dropped = tc.dropped
			if got := e.report("r1", &tc.res, tc.first); got != tc.want {
				t.Errorf("report:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
