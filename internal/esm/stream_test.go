package esm

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// recs makes records "p1".."pN" (position = ID = "pI", key "k" + I%keys).
func recs(from, to, keys int) []StreamRecord {
	var out []StreamRecord
	for i := from; i <= to; i++ {
		p := fmt.Sprintf("p%d", i)
		out = append(out, StreamRecord{Position: p, ID: p, Key: fmt.Sprintf("k%d", i%keys)})
	}
	return out
}

func positions(rs []StreamRecord) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Position)
	}
	return strings.Join(s, ",")
}

func pieces(ps []piece) string {
	var s []string
	for _, p := range ps {
		s = append(s, fmt.Sprintf("[%s]r%d", positions(p.recs), p.retries))
	}
	return strings.Join(s, " ")
}

func TestAfterInvoke(t *testing.T) {
	fail := func(ids ...string) outcome {
		o := outcome{failed: map[string]bool{}}
		for _, id := range ids {
			o.failed[id] = true
		}
		return o
	}
	for _, c := range []struct {
		name               string
		pol                streamPolicy
		p                  piece
		o                  outcome
		done, failed, next string
	}{
		{"success", streamPolicy{maxRetries: -1}, piece{recs(1, 3, 1), 0}, outcome{}, "p1,p2,p3", "", ""},
		{"error retries the batch", streamPolicy{maxRetries: -1}, piece{recs(1, 3, 1), 4}, outcome{functionError: true}, "", "", "[p1,p2,p3]r5"},
		{"error with retries left", streamPolicy{maxRetries: 2}, piece{recs(1, 3, 1), 1}, outcome{functionError: true}, "", "", "[p1,p2,p3]r2"},
		{"error with retries spent", streamPolicy{maxRetries: 2}, piece{recs(1, 3, 1), 2}, outcome{functionError: true}, "", "p1,p2,p3", ""},
		{"no retries", streamPolicy{maxRetries: 0}, piece{recs(1, 2, 1), 0}, outcome{functionError: true}, "", "p1,p2", ""},
		{"bisect splits without spending a retry", streamPolicy{bisect: true, maxRetries: 0}, piece{recs(1, 5, 1), 0}, outcome{functionError: true}, "", "", "[p1,p2]r0 [p3,p4,p5]r0"},
		{"bisect of one record retries it", streamPolicy{bisect: true, maxRetries: 1}, piece{recs(3, 3, 1), 0}, outcome{functionError: true}, "", "", "[p3]r1"},
		{"bisect of one record, retries spent", streamPolicy{bisect: true, maxRetries: 1}, piece{recs(3, 3, 1), 1}, outcome{functionError: true}, "", "p3", ""},
		{"reported failure: done before the lowest", streamPolicy{maxRetries: -1}, piece{recs(1, 5, 1), 0}, fail("p4", "p3"), "p1,p2", "", "[p3,p4,p5]r1"},
		{"reported failure, retries spent", streamPolicy{maxRetries: 0}, piece{recs(1, 5, 1), 0}, fail("p2"), "p1", "p2,p3,p4,p5", ""},
		{"reported failure with bisect retries the rest", streamPolicy{bisect: true, maxRetries: 3}, piece{recs(1, 4, 1), 0}, fail("p2"), "p1", "", "[p2,p3,p4]r1"},
		{"report of nothing", streamPolicy{maxRetries: 0}, piece{recs(1, 2, 1), 0}, fail(), "p1,p2", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			done, failed, next := afterInvoke(c.pol, c.p, c.o)
			if positions(done) != c.done || positions(failed) != c.failed || pieces(next) != c.next {
				t.Errorf("done %q failed %q next %q; want %q %q %q", positions(done), positions(failed), pieces(next), c.done, c.failed, c.next)
			}
		})
	}
}

// TestBisectIsolatesPoison runs the decisions to the end on a batch with
// one poison record: only it reaches the failure destination, every other
// record is processed, in order.
func TestBisectIsolatesPoison(t *testing.T) {
	pol := streamPolicy{bisect: true, maxRetries: 2}
	queue := []piece{{recs: recs(1, 9, 1)}}
	var done, failed []StreamRecord
	invokes := 0
	for len(queue) > 0 {
		p := queue[0]
		invokes++
		var o outcome
		for _, r := range p.recs {
			o.functionError = o.functionError || r.ID == "p6"
		}
		d, f, next := afterInvoke(pol, p, o)
		done, failed = append(done, d...), append(failed, f...)
		queue = append(next, queue[1:]...)
	}
	if positions(failed) != "p6" || positions(done) != "p1,p2,p3,p4,p5,p7,p8,p9" {
		t.Fatalf("done %s failed %s", positions(done), positions(failed))
	}
	if invokes > 12 {
		t.Errorf("%d invokes", invokes)
	}
}

func TestExpired(t *testing.T) {
	now := time.Unix(1000, 0)
	rs := recs(1, 4, 1)
	for i := range rs {
		rs[i].Arrival = now.Add(-time.Duration(100-i*20) * time.Second) // ages 100, 80, 60, 40
	}
	for _, c := range []struct {
		age       time.Duration
		old, rest string
	}{
		{0, "", "p1,p2,p3,p4"},
		{90 * time.Second, "p1", "p2,p3,p4"},
		{60 * time.Second, "p1,p2", "p3,p4"},
		{time.Second, "p1,p2,p3,p4", ""},
	} {
		old, rest := expired(streamPolicy{maxAge: c.age}, rs, now)
		if positions(old) != c.old || positions(rest) != c.rest {
			t.Errorf("max age %v: old %s rest %s, want %s %s", c.age, positions(old), positions(rest), c.old, c.rest)
		}
	}
}

func TestLanes(t *testing.T) {
	rs := recs(1, 200, 13)
	if got := lanes(rs, 1); len(got) != 1 || positions(got[0]) != positions(rs) {
		t.Fatal("one lane is the shard")
	}
	got := lanes(rs, 5)
	if len(got) < 2 || len(got) > 5 {
		t.Fatalf("%d lanes", len(got))
	}
	laneOf, n := map[string]int{}, 0
	for i, l := range got {
		prev := 0
		for _, r := range l {
			var seq int
			fmt.Sscanf(r.Position, "p%d", &seq)
			if seq <= prev {
				t.Fatalf("lane %d out of order: %s", i, positions(l))
			}
			prev = seq
			if j, ok := laneOf[r.Key]; ok && j != i {
				t.Fatalf("key %s in lanes %d and %d", r.Key, j, i)
			}
			laneOf[r.Key] = i
			n++
		}
	}
	if n != 200 {
		t.Fatalf("%d records in lanes", n)
	}
}

func TestBatches(t *testing.T) {
	rs := recs(1, 7, 1)
	base := time.Unix(600, 0)
	for i, sec := range []int{0, 10, 59, 60, 61, 125, 130} {
		rs[i].Arrival = base.Add(time.Duration(sec) * time.Second)
		rs[i].Data = []byte("0123456789")
	}
	for _, c := range []struct {
		size, bytes int
		window      time.Duration
		want        string
	}{
		{3, 1 << 20, 0, "p1,p2,p3 p4,p5,p6 p7"},
		{10, 1 << 20, 0, "p1,p2,p3,p4,p5,p6,p7"},
		{10, 1 << 20, time.Minute, "p1,p2,p3 p4,p5 p6,p7"},
		{2, 1 << 20, time.Minute, "p1,p2 p3 p4,p5 p6,p7"},
		{10, 25, 0, "p1,p2 p3,p4 p5,p6 p7"}, // 10 bytes each and a comma
		{10, 5, 0, "p1 p2 p3 p4 p5 p6 p7"},  // larger than the limit alone
	} {
		var got []string
		for _, b := range batches(rs, c.size, c.bytes, c.window) {
			got = append(got, positions(b))
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("size %d bytes %d window %v: %v, want %s", c.size, c.bytes, c.window, got, c.want)
		}
	}
}

func TestRoundCheckpoint(t *testing.T) {
	r := newRound(recs(1, 6, 1))
	steps := []struct {
		mark string
		cp   string
	}{
		{"p2", ""},
		{"p1", "p2"},
		{"p4,p5", ""},
		{"p3", "p5"},
		{"p6", "p6"},
		{"p6", ""},
	}
	for _, s := range steps {
		var rs []StreamRecord
		for _, p := range strings.Split(s.mark, ",") {
			rs = append(rs, StreamRecord{Position: p})
		}
		cp, ok := r.mark(rs)
		if ok != (s.cp != "") || cp != s.cp {
			t.Fatalf("mark %s: checkpoint %q %v, want %q", s.mark, cp, ok, s.cp)
		}
	}
}

func TestShardKey(t *testing.T) {
	for in, want := range map[string]string{
		"shardId-000000000001": "shardId-000000000001",
		"my.topic-3":           "my_2etopic-3",
		"a_b":                  "a_5fb",
	} {
		if got := shardKey(in); got != want {
			t.Errorf("shardKey(%q) = %q, want %q", in, got, want)
		}
	}
	if reflect.DeepEqual(shardKey("a.b"), shardKey("a_2eb")) {
		t.Error("escapes collide")
	}
}
