// Package audit replays an assignment partition's journal (a JetStream
// stream of partition.Record batches) into a fresh partition.State and
// reports every record a correct, fenced leader could not have appended:
// an epoch written by two leaders, a record from a deposed epoch, an
// illegal transition such as acquiring a busy environment.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/nats-io/nats.go/jetstream"
)

// Journal tails one journal from its first stored message.
type Journal struct {
	tb      testing.TB
	js      jetstream.JetStream
	stream  string
	verbose bool // KILN_TEST_LOG: log every message

	mu      sync.Mutex
	stopped bool
	cc      jetstream.ConsumeContext
	st      *partition.State
	epochs  map[uint64]string    // epoch → the leader that wrote it
	wrote   map[string]time.Time // leader → when its last message was stored
	last    uint64               // stream sequence last read
	msgs    int
	recs    int
	errs    []string
}

// Tail starts reading stream. A leader purges the journal behind its
// oldest live environment, so a journal tailed while members run must be
// read as it is written: a message purged unread is reported as a gap.
func Tail(tb testing.TB, js jetstream.JetStream, stream string) *Journal {
	tb.Helper()
	j := &Journal{tb: tb, js: js, stream: stream, verbose: os.Getenv("KILN_TEST_LOG") != "",
		st: partition.New(), epochs: map[uint64]string{}, wrote: map[string]time.Time{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatalf("audit %s: %v", stream, err)
	}
	cc, err := c.Consume(j.read)
	if err != nil {
		tb.Fatalf("audit %s: %v", stream, err)
	}
	j.cc = cc
	tb.Cleanup(j.stop)
	return j
}

func (j *Journal) read(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	seq := meta.Sequence.Stream
	var rs []partition.Record
	jerr := json.Unmarshal(m.Data(), &rs)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stopped || seq <= j.last {
		return
	}
	if j.last != 0 && seq != j.last+1 {
		j.errf("journal messages %d to %d were purged before the audit read them", j.last+1, seq-1)
	}
	j.last = seq
	if jerr != nil {
		j.errf("journal message %d: %v", seq, jerr)
		return
	}
	if j.verbose {
		var ops []string
		for _, r := range rs {
			id, tok := "", r.Token
			if r.Env != nil {
				id, tok = r.Env.ID, r.Env.Token+"/"+r.Token
			}
			ops = append(ops, fmt.Sprintf("%s@%d %s %s", r.Op, r.Epoch, id, tok))
		}
		j.tb.Logf("%s %d: %v", j.stream, seq, ops)
	}
	for _, r := range rs {
		if l, ok := j.epochs[r.Epoch]; ok && l != r.Leader {
			j.errf("epoch %d written by %s and %s: split brain", r.Epoch, l, r.Leader)
		}
		j.epochs[r.Epoch] = r.Leader
		j.wrote[r.Leader] = meta.Timestamp
	}
	if err := j.st.Apply(seq, rs...); err != nil {
		if errors.Is(err, partition.ErrFenced) {
			j.errf("journal message %d from a deposed leader: %v", seq, err)
		} else {
			j.errf("journal message %d: %v", seq, err)
		}
	}
	j.msgs++
	j.recs += len(rs)
}

func (j *Journal) errf(format string, args ...any) {
	j.errs = append(j.errs, fmt.Sprintf("%s: ", j.stream)+fmt.Sprintf(format, args...))
}

// stop ends the tail; read ignores whatever is still delivered.
func (j *Journal) stop() {
	j.mu.Lock()
	was := j.stopped
	j.stopped = true
	j.mu.Unlock()
	if !was {
		j.cc.Stop()
	}
}

// Summary is what a journal says about its leaders.
type Summary struct {
	Epochs    map[uint64]string    // epoch → the leader that wrote it
	LastWrite map[string]time.Time // leader → when its last message was stored
}

// Check reads up to the journal's last message, stops, and fails the test
// for every record found wrong.
func (j *Journal) Check() Summary {
	j.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := j.js.Stream(ctx, j.stream)
	var info *jetstream.StreamInfo
	if err == nil {
		info, err = s.Info(ctx)
	}
	if err != nil {
		j.tb.Fatalf("audit %s: %v", j.stream, err)
	}
	// The tail may be thousands of records behind a load just stopped.
	for end := time.Now().Add(wait.Deadline); ; time.Sleep(10 * time.Millisecond) {
		j.mu.Lock()
		last := j.last
		j.mu.Unlock()
		if last >= info.State.LastSeq {
			break
		}
		if time.Now().After(end) {
			j.tb.Errorf("audit %s: read up to %d of %d", j.stream, last, info.State.LastSeq)
			break
		}
	}
	j.stop()
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, e := range j.errs {
		j.tb.Error(e)
	}
	var epochs []string
	keys := make([]uint64, 0, len(j.epochs))
	for e := range j.epochs {
		keys = append(keys, e)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a] < keys[b] })
	for _, e := range keys {
		epochs = append(epochs, fmt.Sprintf("%d:%s", e, j.epochs[e]))
	}
	j.tb.Logf("journal audit %s: messages %d to %d (%d records), epochs %v: %d problems",
		j.stream, j.st.Base, j.last, j.recs, epochs, len(j.errs))
	return Summary{Epochs: j.epochs, LastWrite: j.wrote}
}
