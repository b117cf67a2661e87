package bench

import (
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
