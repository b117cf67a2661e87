package logs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/nats-io/nats.go/jetstream"
)

// Ingest: Append queues, one goroutine publishes rounds of lines to the
// stream, and the index learns of new groups and streams.

var _ logline.Sink = (*Store)(nil)

// Append queues lines for account's log group and stream, creating both
// on first use. It never blocks: when the queue is full the lines are
// dropped and counted. The store keeps lines; the caller must not change it.
func (s *Store) Append(account, group, stream string, lines []logline.Line) {
	if len(lines) == 0 || s.closed.Load() {
		return
	}
	var size int64
	for i := range lines {
		size += eventSize(lines[i].Message)
	}
	if s.queued.Add(size) > s.cfg.QueueBytes {
		s.queued.Add(-size)
		s.drop(len(lines))
		return
	}
	select {
	case s.queue <- item{account: account, group: group, stream: stream, lines: lines, size: size}:
	default:
		s.queued.Add(-size)
		s.drop(len(lines))
	}
}

func (s *Store) drop(n int) {
	total := s.dropped.Add(uint64(n))
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last >= int64(10*time.Second) && s.lastWarn.CompareAndSwap(last, now) {
		s.log.Warn("logs: queue full, dropping log lines", "dropped_total", total)
	}
}

// Dropped is how many lines Append has dropped because the queue was full.
func (s *Store) Dropped() uint64 { return s.dropped.Load() }

// put queues lines for the API (PutLogEvents): it waits for room instead of
// dropping, then until the lines are stored.
func (s *Store) put(ctx context.Context, account, group, stream string, lines []logline.Line) error {
	var size int64
	for i := range lines {
		size += eventSize(lines[i].Message)
	}
	s.queued.Add(size)
	select {
	case s.queue <- item{account: account, group: group, stream: stream, lines: lines, size: size}:
	case <-ctx.Done():
		s.queued.Add(-size)
		return ctx.Err()
	}
	return s.Flush(ctx)
}

// Flush waits until everything queued before it is stored; it returns an
// error when some of what was stored with it failed.
func (s *Store) Flush(ctx context.Context) error {
	if s.closed.Load() {
		return errors.New("logs: store closed")
	}
	mark := make(chan error, 1)
	select {
	case s.queue <- item{mark: mark}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case s.flushNow <- struct{}{}:
	default: // a flush is already pending
	}
	select {
	case err := <-mark:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errors.New("logs: store closed")
	}
}

// run is the publishing goroutine; index writes have their own, so that
// the bucket's latency never holds back storing events.
func (s *Store) run() {
	indexDone := make(chan struct{})
	go func() {
		defer close(indexDone)
		ticker := time.NewTicker(s.cfg.IndexInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ticker.C:
				s.writeIndex()
			case <-s.stop:
				return
			}
		}
	}()
	expireDone := make(chan struct{})
	go func() {
		defer close(expireDone)
		s.expireLoop()
	}()
	defer close(s.done)
	defer func() { <-indexDone; <-expireDone }()
	var round []item
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case it := <-s.queue:
			round = append(round[:0], it)
			if it.mark == nil && s.cfg.Linger > 0 {
				// Appends meanwhile only fill the queue's buffer: nobody
				// is woken per invoke.
				linger.Reset(s.cfg.Linger)
				select {
				case <-linger.C:
				case <-s.flushNow:
				case <-s.stop:
				}
				linger.Stop()
			}
		case <-s.stop:
			for {
				round = s.take(round[:0])
				if len(round) == 0 {
					break
				}
				s.publish(round)
			}
			s.writeIndex()
			return
		}
		round = s.take(round)
		s.publish(round)
		clear(round) // let the lines go
	}
}

// take adds what is queued (without waiting) to round, up to maxRound bytes.
func (s *Store) take(round []item) []item {
	var size int64
	for _, it := range round {
		size += it.size
	}
	for size < maxRound {
		select {
		case it := <-s.queue:
			round = append(round, it)
			size += it.size
		default:
			return round
		}
	}
	return round
}

type streamID struct{ account, group, stream string }

// pending is one message being stored.
type pending struct {
	id          streamID
	subj        string
	data        []byte
	n           int // events; 0 once storing failed
	first, last int64
	skew        int64
	bytes       int64
	fut         jetstream.PubAckFuture
	err         error
}

// publishWindow bounds the messages in flight (nats.go's async publisher
// stalls past 4,000).
const publishWindow = 1024

// send publishes msgs asynchronously, in order, and waits for their acks.
// A message whose publish failed is retried (synchronously, in order) a few
// times: across a JetStream leader change a retried message may be stored
// twice or after the next one. It returns how many events were lost.
func (s *Store) send(msgs []pending) (lost int) {
	ctx, cancel := context.WithTimeout(s.ending, 30*time.Second)
	defer cancel()
	for i := range msgs {
		p := &msgs[i]
		if p.fut, p.err = s.js.PublishAsync(p.subj, p.data); p.err != nil {
			_, p.err = s.js.Publish(ctx, p.subj, p.data) // in order: later ones are not sent yet
		}
	}
	for i := range msgs {
		p := &msgs[i]
		if p.err == nil && p.fut != nil {
			select {
			case <-p.fut.Ok():
			case p.err = <-p.fut.Err():
			case <-ctx.Done():
				p.err = ctx.Err()
			}
		}
	}
	for i := range msgs {
		p := &msgs[i]
		for try := 0; p.err != nil && try < 3 && ctx.Err() == nil; try++ {
			time.Sleep(time.Duration(100<<try) * time.Millisecond)
			_, p.err = s.js.Publish(ctx, p.subj, p.data)
		}
		if p.err != nil {
			lost += p.n
			s.log.Error("logs: storing log events failed", "group", p.id.group, "stream", p.id.stream, "events", p.n, "err", p.err)
			p.n = 0
		}
		p.data = nil
	}
	return lost
}

// publish stores one round: one message (or more, when large) per log
// stream, published asynchronously; then it waits for every ack.
func (s *Store) publish(round []item) {
	var order []streamID
	byStream := map[streamID][]*item{}
	var marks []chan error
	var size int64
	for i := range round {
		it := &round[i]
		if it.mark != nil {
			marks = append(marks, it.mark)
			continue
		}
		size += it.size
		id := streamID{it.account, it.group, it.stream}
		if _, ok := byStream[id]; !ok {
			order = append(order, id)
		}
		byStream[id] = append(byStream[id], it)
	}
	now := time.Now().UnixMilli()
	// A new group or stream goes into the index before its first events, so
	// that a crash never leaves events that no index record leads to.
	s.mu.Lock()
	fresh := false
	for _, id := range order {
		g, isNew := s.ensureGroupNew(id.account, id.group, now)
		if isNew {
			s.markGroup(id.account, g)
		}
		if g.streams[id.stream] == nil {
			st := &stream{Name: id.stream, Created: now, dirty: true}
			g.streams[id.stream] = st
			s.dirty[dirtyKey{id.account, id.group, id.stream}] = struct{}{}
			fresh = true
		}
	}
	s.mu.Unlock()
	if fresh {
		s.writeIndex()
	}
	var pubs []pending
	for _, id := range order {
		subj := streamSubject(id.account, id.group, id.stream)
		var evs []logline.Line
		for _, it := range byStream[id] {
			evs = append(evs, it.lines...)
		}
		for len(evs) > 0 {
			p := pending{id: id, subj: subj}
			n, size := 0, 0
			for n < len(evs) {
				l := len(evs[n].Message) + 2*binary.MaxVarintLen64
				if n > 0 && size+l > maxMessage {
					break
				}
				ts := evs[n].Time.UnixMilli()
				if n == 0 {
					p.first, p.last = ts, ts
				}
				p.first, p.last = min(p.first, ts), max(p.last, ts)
				p.skew = max(p.skew, ts-now)
				p.bytes += eventSize(evs[n].Message)
				size += l
				n++
			}
			p.n = n
			p.data = appendBatchHeader(make([]byte, 0, size+4*binary.MaxVarintLen64), now, p.first, p.last, n)
			for _, e := range evs[:n] {
				p.data = appendEvent(p.data, e.Time.UnixMilli(), e.Message)
			}
			evs = evs[n:]
			pubs = append(pubs, p)
		}
	}
	var failed int
	for w := 0; w < len(pubs); w += publishWindow {
		failed += s.send(pubs[w:min(w+publishWindow, len(pubs))])
	}
	if failed > 0 {
		s.dropped.Add(uint64(failed))
	}
	s.queued.Add(-size)

	s.mu.Lock()
	for _, p := range pubs {
		if p.n == 0 {
			continue
		}
		g, isNew := s.ensureGroupNew(p.id.account, p.id.group, now)
		if isNew {
			s.markGroup(p.id.account, g)
		}
		if p.skew > g.Skew {
			g.Skew = p.skew
			s.markGroup(p.id.account, g)
		}
		st := g.streams[p.id.stream]
		if st == nil {
			st = &stream{Name: p.id.stream, Created: now}
			g.streams[p.id.stream] = st
		}
		st.First = minNonZero(st.First, p.first)
		st.Last = max(st.Last, p.last)
		st.LastIngestion = max(st.LastIngestion, now)
		st.Bytes += p.bytes
		if !st.dirty {
			st.dirty = true
			s.dirty[dirtyKey{p.id.account, p.id.group, p.id.stream}] = struct{}{}
		}
	}
	s.mu.Unlock()
	var err error
	if failed > 0 {
		err = fmt.Errorf("logs: %d events could not be stored", failed)
	}
	for _, m := range marks {
		m <- err
	}
}
