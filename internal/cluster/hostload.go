package cluster

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"
)

// hostLoad measures the host's CPU in use from /proc/stat, for the worker's
// heartbeat. The host, not the worker: the environments' CPU is spread over
// their own cgroups, and the host's figure is what a new one competes with.
type hostLoad struct {
	at          time.Time
	busy, total uint64
	last        int
}

// millis returns the CPU in use over the last second or so, in thousandths
// of a CPU; 0 until two samples were taken or when /proc/stat is missing.
// It reads /proc/stat at most once a second, so that the figure is not
// the noise of a few clock ticks.
func (h *hostLoad) millis(now time.Time) int {
	if now.Sub(h.at) < time.Second {
		return h.last
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	var busy, total uint64
	cpus := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) > 8 && f[0] == "cpu":
			// user nice system idle iowait irq softirq steal (guest time is within user)
			for i, v := range f[1:9] {
				n, _ := strconv.ParseUint(v, 10, 64)
				total += n
				if i != 3 && i != 4 {
					busy += n
				}
			}
		case len(f) > 0 && strings.HasPrefix(f[0], "cpu"):
			cpus++
		}
	}
	if !h.at.IsZero() && total > h.total {
		h.last = int((busy - h.busy) * uint64(cpus) * 1000 / (total - h.total))
	}
	h.at, h.busy, h.total = now, busy, total
	return h.last
}
