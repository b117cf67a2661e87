package worker

import (
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/agentproto"
	"github.com/kiln-dev/kiln/internal/invoke"
)

// A cold start is split at the agent's times when they fall in order inside
// it; else at the handover, the rest counted as init.
func TestSplitColdStart(t *testing.T) {
	ms := func(n int64) int64 { return n * int64(time.Millisecond) }
	d := func(n int64) time.Duration { return time.Duration(ms(n)) }
	for _, tc := range []struct {
		name string
		st   *agentproto.Started
		want invoke.ColdStart
	}{
		{"agent's times", &agentproto.Started{Begun: ms(103), Exec: ms(104)}, invoke.ColdStart{Sandbox: d(3), Runtime: d(1), Init: d(6)}},
		{"none", nil, invoke.ColdStart{Sandbox: d(2), Init: d(8)}},
		{"exec before begun", &agentproto.Started{Begun: ms(104), Exec: ms(103)}, invoke.ColdStart{Sandbox: d(2), Init: d(8)}},
		{"begun before the cold start", &agentproto.Started{Begun: ms(99), Exec: ms(104)}, invoke.ColdStart{Sandbox: d(2), Init: d(8)}},
		{"exec after ready", &agentproto.Started{Begun: ms(103), Exec: ms(111)}, invoke.ColdStart{Sandbox: d(2), Init: d(8)}},
		{"exec at ready", &agentproto.Started{Begun: ms(103), Exec: ms(110)}, invoke.ColdStart{Sandbox: d(3), Runtime: d(7)}},
	} {
		if got := splitColdStart(ms(100), ms(102), ms(110), tc.st); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
