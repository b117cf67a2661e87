package eventinvoke

import (
	"bytes"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// cpuMeter follows how busy the machine's CPUs are (from /proc/stat), so
// that async invokes yield to sync ones only when they compete for CPU:
// async functions that mostly wait (I/O, sleeps) keep their concurrency.
type cpuMeter struct {
	busy atomic.Int64 // per mille of CPU time busy over the last interval; -1 unknown
}

const cpuInterval = 100 * time.Millisecond

func (c *cpuMeter) run(done <-chan struct{}) {
	c.busy.Store(-1)
	prevBusy, prevTotal, ok := readCPU()
	t := time.NewTicker(cpuInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		busy, total, ok2 := readCPU()
		if ok && ok2 && total > prevTotal {
			c.busy.Store(int64(1000 * (busy - prevBusy) / (total - prevTotal)))
		} else {
			c.busy.Store(-1)
		}
		prevBusy, prevTotal, ok = busy, total, ok2
	}
}

// contended says whether async invokes should yield: the CPUs are more
// than 30% busy, or their load is unknown. (On two cores, one sequential
// client of sync invokes keeps them about half busy: async invokes yield to
// it. Functions that mostly wait keep the CPUs idle and run at full
// concurrency beside light sync traffic.)
func (c *cpuMeter) contended() bool {
	b := c.busy.Load()
	return b < 0 || b > 300
}

// readCPU sums the "cpu" line of /proc/stat: busy and total jiffies.
func readCPU() (busy, total uint64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 5 || string(f[0]) != "cpu" {
		return 0, 0, false
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, true
}
