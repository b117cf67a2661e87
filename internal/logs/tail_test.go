package logs_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/kiln-dev/kiln/internal/logs"
)

// Tail reads a group from a time on, then only what came after its cursor,
// in pages of at most limit, across streams; a group not there yet has no
// events.
func TestTail(t *testing.T) {
	e := start(t, t.TempDir(), logs.Config{})
	tail := func(cursor string, start time.Time, limit int) ([]string, string) {
		t.Helper()
		evs, next, err := e.store.Tail(ctx, account, "/aws/lambda/f", cursor, start.UnixMilli(), limit)
		noErr(t, err)
		var out []string
		for _, ev := range evs {
			out = append(out, ev.Message)
		}
		return out, next
	}
	want := func(got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("tailed %q, want %q", got, want)
		}
	}
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	got, cursor := tail("", t0, 10) // no group yet
	want(got, nil)
	for _, bad := range []string{"n/", "n/x", "00000000000000000001000000", "n/00000000000000000001000000x"} {
		if _, _, err := e.store.Tail(ctx, account, "/aws/lambda/f", bad, 0, 10); !errors.Is(err, logs.ErrBadCursor) {
			t.Errorf("cursor %q: %v, want ErrBadCursor", bad, err)
		}
	}
	e.store.Append(account, "/aws/lambda/other", "s1", lines(t0, time.Millisecond, "other%d", 2))
	e.store.Append(account, "/aws/lambda/f", "s1", append(lines(t0.Add(-time.Hour), 0, "too old%d", 1), lines(t0, time.Millisecond, "a%d", 3)...))
	noErr(t, e.store.Flush(ctx))
	got, cursor = tail(cursor, t0, 10)
	want(got, []string{"a0", "a1", "a2"})
	// Past the cursor, even an event older than the first read's start is new.
	e.store.Append(account, "/aws/lambda/f", "s3", lines(t0.Add(-time.Hour), 0, "late%d", 1))
	noErr(t, e.store.Flush(ctx))
	got, cursor = tail(cursor, t0, 10)
	want(got, []string{"late0"})
	e.store.Append(account, "/aws/lambda/f", "s2", lines(time.Now(), 0, "b%d", 3))
	e.store.Append(account, "/aws/lambda/f", "s1", []logline.Line{{Time: time.Now(), Message: "c"}})
	noErr(t, e.store.Flush(ctx))
	got, cursor = tail(cursor, t0, 2)
	want(got, []string{"b0", "b1"})
	got, cursor = tail(cursor, t0, 10)
	want(got, []string{"b2", "c"})
	got, _ = tail(cursor, t0, 10)
	want(got, nil)
	// Nothing from the start on: the cursor moves to the end, and what
	// comes next is read, whatever its time.
	got, cursor = tail("", time.Now().Add(time.Hour), 10)
	want(got, nil)
	e.store.Append(account, "/aws/lambda/f", "s1", lines(t0, 0, "d%d", 1))
	noErr(t, e.store.Flush(ctx))
	got, _ = tail(cursor, t0, 10)
	want(got, []string{"d0"})
}
