package logs

import (
	"slices"
	"testing"
)

// TestWindow: which events of a stored message a read takes, for the
// boundaries of its page tokens, its time range and its pattern.
func TestWindow(t *testing.T) {
	data := appendBatchHeader(nil, 1000, 10, 50, 5)
	for i, ts := range []int64{10, 20, 30, 40, 50} {
		data = appendEvent(data, ts, []string{"START a", "ERROR b", "info c", "ERROR d", "END e"}[i])
	}
	const seq = 7
	at := func(i int) *pos { return &pos{seq, i} }
	ts := func(v int64) *int64 { return &v }
	errors, _ := parsePattern("ERROR")
	for _, tc := range []struct {
		name   string
		w      window
		limit  int // events take takes before it stops; 0: all
		want   []string
		goesOn bool
	}{
		{"all", timeWindow(nil, nil), 0, []string{"START a", "ERROR b", "info c", "ERROR d", "END e"}, true},
		{"from a forward token", window{after: at(2), lo: -1 << 62, hi: 1 << 62}, 0, []string{"info c", "ERROR d", "END e"}, true},
		{"a forward token of a later message", window{after: &pos{seq + 1, 0}, lo: -1 << 62, hi: 1 << 62}, 0, nil, true},
		{"before a backward token", window{before: at(2), lo: -1 << 62, hi: 1 << 62}, 0, []string{"START a", "ERROR b"}, false},
		{"a backward token of an earlier message", window{before: &pos{seq - 1, 3}, lo: -1 << 62, hi: 1 << 62}, 0, nil, false},
		{"a backward token of a later message", window{before: &pos{seq + 1, 0}, lo: -1 << 62, hi: 1 << 62}, 0,
			[]string{"START a", "ERROR b", "info c", "ERROR d", "END e"}, true},
		{"time range, inclusive", timeWindow(ts(20), ts(40)), 0, []string{"ERROR b", "info c", "ERROR d"}, true},
		{"time range outside the message", timeWindow(ts(51), nil), 0, nil, true},
		{"pattern", window{lo: -1 << 62, hi: 1 << 62, pattern: errors}, 0, []string{"ERROR b", "ERROR d"}, true},
		{"a full page stops the scan", timeWindow(nil, nil), 2, []string{"START a", "ERROR b"}, false},
	} {
		var got []string
		var corrupt error
		goesOn := tc.w.events(seq, data, &corrupt, func(ev outEvent) bool {
			if tc.limit > 0 && len(got) == tc.limit {
				return false
			}
			if ev.pos.seq != seq || ev.ingestion != 1000 {
				t.Errorf("%s: event %+v", tc.name, ev)
			}
			got = append(got, ev.message)
			return true
		})
		if !slices.Equal(got, tc.want) || goesOn != tc.goesOn || corrupt != nil {
			t.Errorf("%s: %q, goes on %v (%v); want %q, %v", tc.name, got, goesOn, corrupt, tc.want, tc.goesOn)
		}
	}
	var corrupt error
	all := timeWindow(nil, nil)
	if !all.events(seq, data[:len(data)-3], &corrupt, func(outEvent) bool { return true }) || corrupt == nil {
		t.Error("a truncated message is not skipped as corrupt")
	}
}
