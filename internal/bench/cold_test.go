package bench

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/invoke"
)

// The bench reads the phases Kiln writes, and earlier Kilns' (--baseline),
// and refuses what it cannot read.
func TestParseColdStart(t *testing.T) {
	c := invoke.ColdStart{Placement: 12 * time.Microsecond, Pool: 7 * time.Millisecond, Sandbox: 4100 * time.Microsecond, Runtime: 210 * time.Microsecond,
		Init: 3 * time.Millisecond, Invoke: 450 * time.Microsecond}
	if got, err := parseColdStart(c.Header()); err != nil || !slices.Equal(got, []time.Duration{c.Placement, c.Pool, c.Sandbox, c.Runtime, c.Init, c.Invoke}) {
		t.Fatalf("parseColdStart(%q) = %v, %v", c.Header(), got, err)
	}
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	for h, want := range map[string][]time.Duration{
		"placement=0.001;pool=0.000;sandbox=2.500;runtime=0.250;init=1.000": {ms(0.001), 0, ms(2.5), ms(0.25), ms(1), -1},  // without invoke
		"placement=0.001;sandbox=2.500;runtime=0.250;init=1.000":            {ms(0.001), -1, ms(2.5), ms(0.25), ms(1), -1}, // without pool
		"placement=0.001;sandbox=2.500;runtime=1.250":                       {ms(0.001), -1, ms(2.5), ms(1.25), -1, -1},    // without init either
	} {
		if got, err := parseColdStart(h); err != nil || !slices.Equal(got, want) {
			t.Errorf("parseColdStart(%q) = %v, %v; want %v", h, got, err, want)
		}
	}
	for _, bad := range []string{"", "placement=1", "placement=1;sandbox=1", "sandbox=1;placement=1;runtime=1", "placement=1;sandbox=x;runtime=1",
		"placement=1;sandbox=1;init=1;runtime=1", "placement=1;sandbox=1;runtime=1;init=1;more=1", "placement=1;sandbox=1;pool=1;runtime=1",
		"placement=1;pool=1;pool=1;sandbox=1;runtime=1", "placement=1;sandbox=1;runtime=1;init",
		"placement=1;sandbox=1;runtime=1;invoke=1;init=1", "placement=1;sandbox=1;runtime=1;init=1;invoke=1;invoke=1"} {
		if _, err := parseColdStart(bad); err == nil {
			t.Errorf("parseColdStart(%q): no error", bad)
		}
	}
}

// The cold-start report splits p50 and p99 by phase, puts what the phases
// leave out in rest, and splits the slowest starts themselves.
func TestSummarizeCold(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	var kiln []coldSample
	for i := range 100 {
		// Placement 0, pool 0, sandbox 1, runtime start 0.5, init 2, first
		// invoke 0.5, rest 1: 5 ms; the 100th's init is 100 ms.
		s := coldSample{total: ms(5), phases: []time.Duration{0, 0, ms(1), ms(0.5), ms(2), ms(0.5)}}
		if i == 99 {
			s.total, s.phases[4] = ms(103), ms(100)
		}
		kiln = append(kiln, s)
	}
	got := summarizeCold(kiln)
	want := []coldRow{{"end to end", ms(5), ms(103)}, {"placement", 0, 0}, {"pool", 0, 0}, {"sandbox", ms(1), ms(1)},
		{"runtime start", ms(0.5), ms(0.5)}, {"init", ms(2), ms(100)}, {"first invoke", ms(0.5), ms(0.5)}, {"rest", ms(1), ms(1)}}
	if !slices.Equal(got.rows, want) {
		t.Errorf("rows\n got %v\nwant %v", got.rows, want)
	}
	if len(got.slowest) != slowestShown || got.slowest[0].total != ms(103) || got.slowest[1].total != ms(5) {
		t.Errorf("slowest: %v", got.slowest)
	}
	// The bare runtime: init and the first invoke.
	bare := summarizeCold([]coldSample{{total: ms(3), phases: []time.Duration{ms(2), ms(0.5)}, first: len(coldPhases) - 2}})
	if want := []coldRow{{"end to end", ms(3), ms(3)}, {"init", ms(2), ms(2)}, {"first invoke", ms(0.5), ms(0.5)}, {"rest", ms(0.5), ms(0.5)}}; !slices.Equal(bare.rows, want) {
		t.Errorf("bare rows %v, want %v", bare.rows, want)
	}
	// An earlier Kiln's: no pool or invoke phase, no row for them.
	old := summarizeCold([]coldSample{{total: ms(4), phases: []time.Duration{0, -1, ms(1), ms(1), ms(1), -1}}})
	if want := []coldRow{{"end to end", ms(4), ms(4)}, {"placement", 0, 0}, {"sandbox", ms(1), ms(1)}, {"runtime start", ms(1), ms(1)},
		{"init", ms(1), ms(1)}, {"rest", ms(1), ms(1)}}; !slices.Equal(old.rows, want) {
		t.Errorf("earlier Kiln's rows %v, want %v", old.rows, want)
	}
	if got := splitCold(old.slowest[0]); !strings.HasSuffix(got, ": placement 0s, sandbox 1ms, runtime 1ms, init 1ms, rest 1ms") {
		t.Errorf("earlier Kiln's split %q", got)
	}
	var b strings.Builder
	printCold(&b, "kiln", got, bare)
	for _, w := range []string{"kiln end to end", "(1.67x, 34.33x the bare runtime)", "103ms: placement 0s, pool 0s, sandbox 1ms, runtime 500µs, init 100ms, invoke 500µs, rest 1ms"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, b.String())
		}
	}
}
