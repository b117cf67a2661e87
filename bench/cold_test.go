package bench

import (
	"testing"
	"time"

	"github.com/kiln-dev/kiln/invoke"
)

// The bench reads the phases Kiln writes, and refuses what it cannot read.
func TestParseColdStart(t *testing.T) {
	c := invoke.ColdStart{Placement: 12 * time.Microsecond, Sandbox: 4100 * time.Microsecond, Runtime: 3 * time.Millisecond}
	got, err := parseColdStart(c.Header())
	if err != nil || len(got) != 3 || got[0] != c.Placement || got[1] != c.Sandbox || got[2] != c.Runtime {
		t.Fatalf("parseColdStart(%q) = %v, %v", c.Header(), got, err)
	}
	for _, bad := range []string{"", "placement=1", "sandbox=1;placement=1;runtime=1", "placement=1;sandbox=x;runtime=1", "placement=1;sandbox=1;runtime=1;init=1"} {
		if _, err := parseColdStart(bad); err == nil {
			t.Errorf("parseColdStart(%q): no error", bad)
		}
	}
}
