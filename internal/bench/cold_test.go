package bench

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/invoke"
)

// The bench reads the phases Kiln writes, and refuses what it cannot read.
func TestParseColdStart(t *testing.T) {
	c := invoke.ColdStart{Placement: 12 * time.Microsecond, Sandbox: 4100 * time.Microsecond, Runtime: 210 * time.Microsecond, Init: 3 * time.Millisecond}
	got, err := parseColdStart(c.Header())
	if err != nil || len(got) != 4 || got[0] != c.Placement || got[1] != c.Sandbox || got[2] != c.Runtime || got[3] != c.Init {
		t.Fatalf("parseColdStart(%q) = %v, %v", c.Header(), got, err)
	}
	// An earlier Kiln's header (a --baseline build): no init phase.
	if got, err := parseColdStart("placement=0.001;sandbox=2.500;runtime=1.250"); err != nil || len(got) != 3 || got[2] != 1250*time.Microsecond {
		t.Errorf("earlier header: %v, %v", got, err)
	}
	for _, bad := range []string{"", "placement=1", "placement=1;sandbox=1", "sandbox=1;placement=1;runtime=1", "placement=1;sandbox=x;runtime=1",
		"placement=1;sandbox=1;init=1;runtime=1", "placement=1;sandbox=1;runtime=1;init=1;more=1"} {
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
		// Placement 0, sandbox 1, runtime start 0.5, init 2, rest 1.5: 5 ms;
		// the 100th's init is 100 ms.
		s := coldSample{total: ms(5), phases: []time.Duration{0, ms(1), ms(0.5), ms(2)}}
		if i == 99 {
			s.total, s.phases[3] = ms(103), ms(100)
		}
		kiln = append(kiln, s)
	}
	got := summarizeCold(kiln)
	want := []coldRow{{"end to end", ms(5), ms(103)}, {"placement", 0, 0}, {"sandbox", ms(1), ms(1)},
		{"runtime start", ms(0.5), ms(0.5)}, {"init", ms(2), ms(100)}, {"rest", ms(1.5), ms(1.5)}}
	if !slices.Equal(got.rows, want) {
		t.Errorf("rows\n got %v\nwant %v", got.rows, want)
	}
	if len(got.slowest) != slowestShown || got.slowest[0].total != ms(103) || got.slowest[1].total != ms(5) {
		t.Errorf("slowest: %v", got.slowest)
	}
	// The bare runtime: init alone; an earlier Kiln: three phases.
	bare := summarizeCold([]coldSample{{total: ms(3), phases: []time.Duration{ms(2)}, first: 3}})
	if want := []coldRow{{"end to end", ms(3), ms(3)}, {"init", ms(2), ms(2)}, {"rest", ms(1), ms(1)}}; !slices.Equal(bare.rows, want) {
		t.Errorf("bare rows %v, want %v", bare.rows, want)
	}
	old := summarizeCold([]coldSample{{total: ms(4), phases: []time.Duration{0, ms(1), ms(2)}}})
	if old.rows[3].name != "runtime" || old.rows[4] != (coldRow{"rest", ms(1), ms(1)}) {
		t.Errorf("earlier Kiln's rows %v", old.rows)
	}
	var b strings.Builder
	printCold(&b, "kiln", got, bare)
	for _, w := range []string{"kiln end to end", "(1.67x, 34.33x the bare runtime)", "103ms: placement 0s, sandbox 1ms, runtime 500µs, init 100ms, rest 1.5ms"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, b.String())
		}
	}
}
