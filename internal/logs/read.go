package logs

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-dev/kiln/internal/natsd"
)

// pos is an event's position: the stream sequence of its message and its
// index in that message. A boundary is the position of the first event
// after it.
type pos struct {
	seq uint64
	idx int
}

func (a pos) less(b pos) bool { return a.seq < b.seq || a.seq == b.seq && a.idx < b.idx }
func (a pos) next() pos       { return pos{a.seq, a.idx + 1} }

// String is a 26-digit decimal, the event id and the body of tokens.
func (a pos) String() string { return fmt.Sprintf("%020d%06d", a.seq, a.idx) }

func parsePos(s string) (pos, bool) {
	if len(s) != 26 {
		return pos{}, false
	}
	seq, err1 := strconv.ParseUint(s[:20], 10, 64)
	idx, err2 := strconv.ParseUint(s[20:], 10, 32)
	if err1 != nil || err2 != nil {
		return pos{}, false
	}
	return pos{seq, int(idx)}, true
}

// clockSlack covers the difference between the publisher's clock (event
// timestamps) and the NATS server's (where time-started scans begin).
const clockSlack = 2 * time.Second

// scanBudget bounds the bytes one FilterLogEvents call reads; past it the
// call returns what it found with a nextToken, as CloudWatch Logs does.
const scanBudget = 32 << 20

// maxResponse bounds the events' bytes in one response (CloudWatch: 1 MB).
const maxResponse = 1 << 20

type scanFrom struct {
	seq  uint64 // start at this sequence when > 0
	time int64  // else at this time (ms) when > 0, else at the beginning
}

// scan calls fn for each message matching filters that was stored when the
// scan began, in stream order, from the given start; fn returns false to
// stop. complete is true when every such message was seen. last is the
// last sequence seen (0 if none).
func (s *Store) scan(ctx context.Context, filters []string, from scanFrom,
	fn func(seq uint64, subject string, data []byte) bool) (complete bool, last uint64, err error) {
	cfg := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
		Replicas:          1,
	}
	if len(filters) == 1 {
		cfg.FilterSubject = filters[0]
	} else {
		cfg.FilterSubjects = filters
	}
	switch {
	case from.seq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from.seq
	case from.time > 0:
		t := time.UnixMilli(from.time)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	// In a cluster the stream, and then the consumer just made on one of its
	// servers, can be briefly without a leader (an election under load):
	// the read waits rather than fails.
	var c jetstream.Consumer
	err = natsd.Retry(ctx, func(ctx context.Context) (err error) {
		c, err = s.stream.CreateConsumer(ctx, cfg)
		return err
	})
	if err != nil {
		return false, 0, fmt.Errorf("logs: reading: %w", err)
	}
	info := c.CachedInfo()
	defer func() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s.stream.DeleteConsumer(ctx, info.Name)
		}()
	}()
	remaining := info.NumPending
	empty := 0
	for remaining > 0 {
		got, stopped := 0, false
		// A batch that delivered nothing can be asked again: a fetch can
		// find the consumer's server between leaders as creating it can.
		err := natsd.Retry(ctx, func(context.Context) error {
			b, err := c.FetchNoWait(int(min(remaining, 256)))
			if err != nil {
				return err
			}
			for m := range b.Messages() {
				got++
				md, err := m.Metadata()
				if err != nil {
					continue
				}
				last = md.Sequence.Stream
				remaining--
				if !fn(last, m.Subject(), m.Data()) {
					stopped = true
					return nil
				}
				if remaining == 0 {
					break
				}
			}
			if got == 0 {
				return b.Error()
			}
			return nil
		})
		if err != nil {
			return false, last, fmt.Errorf("logs: reading: %w", err)
		}
		if stopped {
			return false, last, nil
		}
		if got == 0 {
			if empty++; empty > 3 {
				// Messages counted at the start are gone (purged, or the
				// stream's limits removed them).
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := ctx.Err(); err != nil {
			return false, last, err
		}
	}
	return true, last, nil
}

// lastSeq is the stream's last sequence now.
func (s *Store) lastSeq(ctx context.Context) (uint64, error) {
	var info *jetstream.StreamInfo
	err := natsd.Retry(ctx, func(ctx context.Context) (err error) {
		info, err = s.stream.Info(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// outEvent is one event read back.
type outEvent struct {
	pos       pos
	stream    string
	timestamp int64
	ingestion int64
	message   string
}

// getQuery is a GetLogEvents request, checked.
type getQuery struct {
	account, group, stream string
	start, end             *int64 // [start, end)
	limit                  int
	startFromHead          bool
	token                  string
}

// getResult is what GetLogEvents answers.
type getResult struct {
	events            []outEvent
	forward, backward string
}

// window is which events of the messages a read scans it takes: from a
// boundary on (after) and before one (before), with timestamps in [lo, hi],
// matching a pattern (nil: all).
type window struct {
	after, before *pos
	lo, hi        int64
	pattern       *pattern
}

// timeWindow is the window of timestamps [start, end] (nil: unbounded).
func timeWindow(start, end *int64) window {
	w := window{lo: math.MinInt64, hi: math.MaxInt64}
	if start != nil {
		w.lo = *start
	}
	if end != nil {
		w.hi = *end
	}
	return w
}

// events calls take for each event of the stored message (seq, data) in
// the window, in order, until take returns false. It returns whether the
// scan goes on: not when take stopped, nor once the events reach before.
// A corrupt message is skipped and reported in corrupt.
func (w *window) events(seq uint64, data []byte, corrupt *error, take func(outEvent) bool) bool {
	if w.before != nil && seq > w.before.seq {
		return false
	}
	b, err := parseBatch(data)
	if err != nil {
		*corrupt = err
		return true
	}
	if b.maxTs < w.lo || b.minTs > w.hi {
		return true
	}
	more := true
	if err := b.each(func(i int, ts int64, msg []byte) bool {
		p := pos{seq, i}
		switch {
		case w.before != nil && !p.less(*w.before):
			more = false
			return false
		case w.after != nil && p.less(*w.after) || ts < w.lo || ts > w.hi || !w.pattern.match(msg):
			return true
		}
		more = take(outEvent{pos: p, timestamp: ts, ingestion: b.ingestion, message: string(msg)})
		return more
	}); err != nil {
		*corrupt = err
	}
	return more
}

// getEvents reads one log stream, forward or backward, as GetLogEvents.
func (s *Store) getEvents(ctx context.Context, q getQuery) (*getResult, error) {
	skew, err := s.streamSkew(q.account, q.group, q.stream)
	if err != nil {
		return nil, err
	}
	var (
		haveTok  bool
		dir      byte
		boundary pos
	)
	if q.token != "" {
		if len(q.token) < 3 || (q.token[0] != 'f' && q.token[0] != 'b') || q.token[1] != '/' {
			return nil, errf(invalidParameter, "The specified nextToken is invalid.")
		}
		p, ok := parsePos(q.token[2:])
		if !ok {
			return nil, errf(invalidParameter, "The specified nextToken is invalid.")
		}
		haveTok, dir, boundary = true, q.token[0], p
	}
	forward := dir == 'f' || (!haveTok && q.startFromHead)
	var end *int64 // GetLogEvents' end is exclusive
	if q.end != nil {
		e := *q.end - 1
		end = &e
	}
	w := timeWindow(q.start, end)
	var from scanFrom
	switch {
	case haveTok && forward:
		from.seq = max(boundary.seq, 1)
		w.after = &boundary
	case haveTok:
		w.before = &boundary
	}
	if from.seq == 0 && q.start != nil {
		from.time = *q.start - skew - clockSlack.Milliseconds()
	}
	subj := []string{streamSubject(q.account, q.group, q.stream)}
	var evs []outEvent
	var corrupt error
	var last uint64
	if forward {
		var bytes int64
		_, last, err = s.scan(ctx, subj, from, func(seq uint64, _ string, data []byte) bool {
			return w.events(seq, data, &corrupt, func(ev outEvent) bool {
				if len(evs) == q.limit || bytes+eventSize(ev.message) > maxResponse {
					return false
				}
				bytes += eventSize(ev.message)
				evs = append(evs, ev)
				return true
			})
		})
	} else {
		// Backward: the last limit events before the boundary (or the end).
		ring := make([]outEvent, 0, min(q.limit, 1024))
		head := 0 // index of the oldest kept event once the ring is full
		_, last, err = s.scan(ctx, subj, from, func(seq uint64, _ string, data []byte) bool {
			return w.events(seq, data, &corrupt, func(ev outEvent) bool {
				if len(ring) < q.limit {
					ring = append(ring, ev)
				} else {
					ring[head] = ev
					head = (head + 1) % len(ring)
				}
				return true
			})
		})
		evs = append(ring[head:len(ring):len(ring)], ring[:head]...)
		// Keep the newest events that fit in a response.
		var bytes int64
		cut := len(evs)
		for cut > 0 && bytes+eventSize(evs[cut-1].message) <= maxResponse {
			bytes += eventSize(evs[cut-1].message)
			cut--
		}
		evs = evs[cut:]
	}
	if err != nil {
		return nil, err
	}
	if corrupt != nil {
		s.log.Error("logs: skipping a corrupt message", "group", q.group, "stream", q.stream, "err", corrupt)
	}
	res := &getResult{events: evs}
	switch {
	case len(evs) > 0:
		res.forward = "f/" + evs[len(evs)-1].pos.next().String()
		res.backward = "b/" + evs[0].pos.String()
	case haveTok:
		res.forward, res.backward = "f/"+boundary.String(), "b/"+boundary.String()
	default:
		end, err := s.endBoundary(ctx, last)
		if err != nil {
			return nil, err
		}
		res.forward, res.backward = "f/"+end.String(), "b/"+end.String()
	}
	return res, nil
}

// endBoundary is the boundary after everything stored: after last when the
// scan saw a message, else after the stream's last message.
func (s *Store) endBoundary(ctx context.Context, last uint64) (pos, error) {
	if last > 0 {
		return pos{last + 1, 0}, nil
	}
	seq, err := s.lastSeq(ctx)
	if err != nil {
		return pos{}, err
	}
	return pos{seq + 1, 0}, nil
}

// filterQuery is a FilterLogEvents request, checked.
type filterQuery struct {
	account, group string
	streams        []string // or
	prefix         string
	start, end     *int64 // [start, end]
	pattern        *pattern
	limit          int
	token          string
}

type filterResult struct {
	events []outEvent
	next   string
}

const filterTokenPrefix = "n/"

// maxFilterSubjects is the most streams a search names to the server one
// by one (logStreamNames takes at most 100); more are matched here.
const maxFilterSubjects = 256

// filterEvents searches a log group, as FilterLogEvents.
func (s *Store) filterEvents(ctx context.Context, q filterQuery) (*filterResult, error) {
	skew, err := s.groupSkew(q.account, q.group)
	if err != nil {
		return nil, err
	}
	var boundary pos
	haveTok := false
	if q.token != "" {
		p, ok := parsePos(strings.TrimPrefix(q.token, filterTokenPrefix))
		if !ok || !strings.HasPrefix(q.token, filterTokenPrefix) {
			return nil, errf(invalidParameter, "The specified nextToken is invalid.")
		}
		boundary, haveTok = p, true
	}
	names := q.streams
	if q.prefix != "" {
		// The index knows which streams have the prefix: the server then
		// filters by subject, unless there are very many of them.
		streams, err := s.streams(q.account, q.group)
		if err != nil {
			return nil, err
		}
		names = names[:0]
		for _, st := range streams {
			if strings.HasPrefix(st.Name, q.prefix) {
				names = append(names, st.Name)
			}
		}
		if len(names) == 0 {
			return &filterResult{}, nil
		}
		if len(names) > maxFilterSubjects {
			names = nil
		}
	}
	var subjects []string
	for _, n := range names {
		subjects = append(subjects, streamSubject(q.account, q.group, n))
	}
	slices.Sort(subjects)
	subjects = slices.Compact(subjects)
	if len(subjects) == 0 {
		subjects = []string{groupSubjects(q.account, q.group)}
	}
	w := timeWindow(q.start, q.end)
	w.pattern = q.pattern
	var from scanFrom
	switch {
	case haveTok:
		from.seq = max(boundary.seq, 1)
		w.after = &boundary
	case q.start != nil:
		from.time = *q.start - skew - clockSlack.Milliseconds()
	}
	res := &filterResult{}
	streamNames := map[string]string{} // subject → stream name
	var bytes, scanned int64
	var next pos
	more := false
	var corrupt error
	_, _, err = s.scan(ctx, subjects, from, func(seq uint64, subject string, data []byte) bool {
		if scanned >= scanBudget {
			next, more = pos{seq, 0}, true
			if haveTok && next.less(boundary) {
				next = boundary
			}
			return false
		}
		scanned += int64(len(data))
		name, ok := streamNames[subject]
		if !ok {
			n, err := streamOfSubject(subject)
			if err != nil {
				return true
			}
			name, streamNames[subject] = n, n
		}
		if q.prefix != "" && !strings.HasPrefix(name, q.prefix) {
			return true
		}
		return w.events(seq, data, &corrupt, func(ev outEvent) bool {
			if len(res.events) == q.limit || bytes+eventSize(ev.message) > maxResponse {
				next, more = ev.pos, true
				return false
			}
			bytes += eventSize(ev.message)
			ev.stream = name
			res.events = append(res.events, ev)
			return true
		})
	})
	if err != nil {
		return nil, err
	}
	if corrupt != nil {
		s.log.Error("logs: skipping a corrupt message", "group", q.group, "err", corrupt)
	}
	if more {
		res.next = filterTokenPrefix + next.String()
	}
	return res, nil
}
