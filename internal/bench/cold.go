package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// coldTarget is a Kiln whose cold starts are measured, with the client of
// its warm runs.
type coldTarget struct {
	name  string
	kiln  *kilnProcess
	warm  *client
	first coldSample // its first invoke, the first cold start after it started
}

// coldSample is one cold start: its time end to end at the client and,
// for Kiln, the phases of its X-Kiln-Cold-Start header (for the bare
// runtime, init and invoke: its exec to its first /next, and its first
// event to its result).
type coldSample struct {
	total  time.Duration
	phases []time.Duration // coldPhases[first:]'s; nil when Kiln gave none
	first  int
}

// coldStarts measures n cold starts of each Kiln and of the bare runtime
// (the function's bootstrap forked and executed by this process, with no
// sandbox: the baseline), interleaved (the i-th of each back to back, in
// turns first), and prints p50/p99 end to end and of each phase.
func coldStarts(ctx context.Context, out io.Writer, kilns []coldTarget, bare *bareRuntimes, n int, zip, payload []byte) error {
	fmt.Fprintf(out, "\ncold starts: %d functions, first invoke of each, end to end\n", n)
	names := []string{"bare runtime"}
	for _, k := range kilns {
		names = append(names, k.name)
	}
	samples := make([][]coldSample, len(names))
	for i := range n {
		for j := range names {
			k := (i + j) % len(names)
			var s coldSample
			var err error
			if k == 0 {
				s, err = bare.coldStart(ctx)
			} else {
				s, err = kilns[k-1].coldStart(ctx, fmt.Sprintf("bench-cold-%d", i), zip, payload)
			}
			if err != nil {
				return fmt.Errorf("%s: cold start %d: %w", names[k], i, err)
			}
			samples[k] = append(samples[k], s)
		}
	}
	base := summarizeCold(samples[0])
	for k, name := range names {
		printCold(out, name, summarizeCold(samples[k]), base)
		if k > 0 {
			fmt.Fprintf(out, "  first after start-up %s\n", splitCold(kilns[k-1].first))
		}
	}
	fmt.Fprintln(out, "  (phases from Kiln's X-Kiln-Cold-Start header (pool: waiting for a prepared agent; an earlier Kiln gives none, its sandbox holds the wait); first invoke: from its event to its result in the environment; rest: the end-to-end time outside them (the client, its signing, auth, resolve, counting, the hops to and from the environment); the bare runtime is its bootstrap forked by this process, pinned to one CPU, with init from its exec to its first /next)")
	return nil
}

func (k coldTarget) coldStart(ctx context.Context, name string, zip, payload []byte) (coldSample, error) {
	if err := k.kiln.createEcho(ctx, name, zip, oneVCPU); err != nil {
		return coldSample{}, err
	}
	c := signedClient(k.kiln.endpoint, name, payload, 1)
	c.http = k.warm.http // the warm runs' connection: a cold start, not a new connection, is measured
	return k.exchange(ctx, c)
}

// exchange invokes with c and reads the phases of the cold start.
func (k coldTarget) exchange(ctx context.Context, c *client) (coldSample, error) {
	d, h, err := c.exchange(ctx)
	if err != nil {
		return coldSample{}, err
	}
	s := coldSample{total: d}
	if v := h.Get("X-Kiln-Cold-Start"); v != "" { // else a Kiln from before the header (measured with --kiln)
		if s.phases, err = parseColdStart(v); err != nil {
			return coldSample{}, err
		}
	}
	return s, nil
}

// coldStart starts a bare runtime and invokes it once.
func (b *bareRuntimes) coldStart(ctx context.Context) (coldSample, error) {
	start := time.Now()
	r, err := b.start(ctx, 0)
	if err != nil {
		return coldSample{}, err
	}
	defer r.stop()
	init := time.Since(start)
	inv, err := r.invoke(ctx, b.payload)
	if err != nil {
		return coldSample{}, err
	}
	total := time.Since(start)
	return coldSample{total: total, phases: []time.Duration{init, inv}, first: len(coldPhases) - 2}, nil
}

// coldSummary is a series of cold starts in rows: end to end, each phase
// the series has, and the rest; and its slowest starts, split.
type coldSummary struct {
	rows    []coldRow
	slowest []coldSample
}

type coldRow struct {
	name     string
	p50, p99 time.Duration
}

// slowestShown is how many of the slowest cold starts the report splits
// by phase: the tail's own split, which per-phase p99s (each from a
// different start) do not give.
const slowestShown = 3

func summarizeCold(ss []coldSample) coldSummary {
	var sum coldSummary
	if len(ss) == 0 {
		return sum
	}
	col := func(f func(coldSample) time.Duration) []time.Duration {
		ds := make([]time.Duration, len(ss))
		for i, s := range ss {
			ds[i] = f(s)
		}
		return ds
	}
	add := func(name string, f func(coldSample) time.Duration) {
		st := summarize(col(f), 0)
		sum.rows = append(sum.rows, coldRow{name, st.P50, st.P99})
	}
	add("end to end", func(s coldSample) time.Duration { return s.total })
	phases := len(ss[0].phases)
	for _, s := range ss {
		phases = min(phases, len(s.phases))
	}
	first := ss[0].first
	for p := range phases {
		if slices.ContainsFunc(ss, func(s coldSample) bool { return s.phases[p] < 0 }) {
			continue // a phase an earlier Kiln does not give
		}
		name := coldPhases[first+p]
		switch name {
		case "runtime":
			name = "runtime start"
		case "invoke":
			name = "first invoke"
		}
		add(name, func(s coldSample) time.Duration { return s.phases[p] })
	}
	if phases > 0 {
		add("rest", rest)
	}
	byTotal := slices.Clone(ss)
	slices.SortStableFunc(byTotal, func(a, b coldSample) int { return cmp.Compare(b.total, a.total) })
	sum.slowest = byTotal[:min(slowestShown, len(byTotal))]
	return sum
}

// rest is a start's time outside its phases.
func rest(s coldSample) time.Duration {
	r := s.total
	for _, p := range s.phases {
		r -= max(p, 0)
	}
	return r
}

// printCold prints a summary, with ratios of its end-to-end p50 and p99
// against base's.
func printCold(out io.Writer, name string, s coldSummary, base coldSummary) {
	for i, r := range s.rows {
		label := "  " + r.name
		if i == 0 {
			label = name + " " + r.name
		}
		fmt.Fprintf(out, "%-26s p50 %10s  p99 %10s", label, round(r.p50), round(r.p99))
		if i == 0 && len(base.rows) > 0 && base.rows[0].p50 > 0 {
			fmt.Fprintf(out, "  (%.2fx, %.2fx the bare runtime)", float64(r.p50)/float64(base.rows[0].p50), float64(r.p99)/float64(base.rows[0].p99))
		}
		fmt.Fprintln(out)
	}
	if len(s.rows) <= 4 { // no phases, or only the bare runtime's
		return
	}
	for _, sl := range s.slowest {
		fmt.Fprintf(out, "  slowest %s\n", splitCold(sl))
	}
}

// splitCold is a start's time and its split ("12ms: placement 1µs, ...").
func splitCold(s coldSample) string {
	if s.phases == nil {
		return round(s.total)
	}
	parts := make([]string, 0, len(s.phases)+1)
	for p, d := range s.phases {
		if d >= 0 {
			parts = append(parts, coldPhases[s.first+p]+" "+round(d))
		}
	}
	parts = append(parts, "rest "+round(rest(s)))
	return fmt.Sprintf("%10s: %s", round(s.total), strings.Join(parts, ", "))
}

// coldPhases are the phases of X-Kiln-Cold-Start, in its order (see
// invoke.ColdStart). Earlier Kilns give no pool phase (their sandbox
// phase holds the wait) nor invoke (the first invoke, then in the rest),
// and the earliest no init either (their runtime phase holds the
// runtime's start and init).
var coldPhases = []string{"placement", "pool", "sandbox", "runtime", "init", "invoke"}

// optionalPhase are the phases an earlier Kiln's header lacks.
var optionalPhase = map[string]bool{"pool": true, "init": true, "invoke": true}

// parseColdStart reads X-Kiln-Cold-Start ("placement=0.012;pool=0.000;
// sandbox=4.100;runtime=0.200;init=3.000;invoke=0.500", milliseconds, in
// this order)
// into one duration per phase of coldPhases, -1 for a phase it lacks.
func parseColdStart(h string) ([]time.Duration, error) {
	out := make([]time.Duration, len(coldPhases))
	for i := range out {
		out[i] = -1
	}
	next := 0 // the index in coldPhases the next field may have
	for _, f := range strings.Split(h, ";") {
		k, v, _ := strings.Cut(f, "=")
		for next < len(coldPhases) && coldPhases[next] != k && optionalPhase[coldPhases[next]] {
			next++
		}
		if next == len(coldPhases) || coldPhases[next] != k {
			return nil, fmt.Errorf("X-Kiln-Cold-Start %q: %q is not the next phase", h, f)
		}
		ms, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("X-Kiln-Cold-Start %q: phase %s is not milliseconds", h, k)
		}
		out[next] = time.Duration(math.Round(ms*1000)) * time.Microsecond // the header's resolution
		next++
	}
	for ; next < len(coldPhases); next++ {
		if !optionalPhase[coldPhases[next]] {
			return nil, fmt.Errorf("X-Kiln-Cold-Start %q: no %s phase", h, coldPhases[next])
		}
	}
	return out, nil
}
