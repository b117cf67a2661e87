package esm

import (
	"encoding/json"
	"hash/fnv"
	"strings"
	"sync"
	"time"
)

// Stream mappings read ordered shards (Kinesis) or partitions (Kafka). They
// differ from queue mappings: nothing is deleted, the poller checkpoints
// the last record processed per shard, and a failing batch blocks its shard
// until it succeeds, expires (MaximumRecordAgeInSeconds), or has used its
// retries (MaximumRetryAttempts) and goes to the failure destination. The
// decisions are pure functions here; streampollers.go does the I/O.

// StreamRecord is one record of a shard.
type StreamRecord struct {
	// Position is the record's sequence number (Kinesis) or offset
	// (Kafka); a checkpoint names the last one processed.
	Position string
	// Key is the partition key: records of one key keep their order under
	// ParallelizationFactor.
	Key string
	// Arrival is when the stream took the record.
	Arrival time.Time
	// ID is what batchItemFailures' itemIdentifier names.
	ID string
	// Data is the record as the function receives it.
	Data json.RawMessage
	// Filter is what FilterCriteria match (the record with its data
	// decoded from base64 and, when it is JSON, from JSON).
	Filter any
}

// streamPolicy is what the decisions read of a mapping.
type streamPolicy struct {
	bisect     bool
	maxRetries int           // -1: until the record expires
	maxAge     time.Duration // 0: no limit
}

// piece is records of a lane awaiting an invoke, with the retries spent on
// them.
type piece struct {
	recs    []StreamRecord
	retries int
}

// outcome is an invoke's result as the decisions see it: the function
// failed (an error, or an invalid batchItemFailures response), or it
// reported the items named in failed (ReportBatchItemFailures).
type outcome struct {
	functionError bool
	failed        map[string]bool
}

// Conditions of a failure destination's record.
const (
	conditionRetries = "RetryAttemptsExhausted"
	conditionAge     = "RecordAgeExceeded"
)

// afterInvoke decides what follows an invoke of p: the records processed
// (done), those whose retries are spent (failed, to the failure
// destination), and the pieces to invoke next, in order. A reported failure
// retries from the lowest failed record (those before it are done: Lambda
// checkpoints before the lowest failed sequence number). A function error
// with BisectBatchOnFunctionError splits the piece in two halves, which
// spends no retry (so a poison record is isolated even with no retries);
// a piece that cannot be split is retried until its retries are spent.
func afterInvoke(pol streamPolicy, p piece, o outcome) (done, failed []StreamRecord, next []piece) {
	rest := p.recs
	if !o.functionError {
		lowest := len(p.recs)
		for i, r := range p.recs {
			if o.failed[r.ID] {
				lowest = i
				break
			}
		}
		done, rest = p.recs[:lowest], p.recs[lowest:]
		if len(rest) == 0 {
			return done, nil, nil
		}
	} else if pol.bisect && len(rest) > 1 {
		half := len(rest) / 2
		return nil, nil, []piece{{recs: rest[:half], retries: p.retries}, {recs: rest[half:], retries: p.retries}}
	}
	if pol.maxRetries >= 0 && p.retries >= pol.maxRetries {
		return done, rest, nil
	}
	return done, nil, []piece{{recs: rest, retries: p.retries + 1}}
}

// expired splits records older than the mapping's maximum age at now from
// the rest, keeping their order.
func expired(pol streamPolicy, recs []StreamRecord, now time.Time) (old, rest []StreamRecord) {
	if pol.maxAge <= 0 {
		return nil, recs
	}
	for _, r := range recs {
		if now.Sub(r.Arrival) > pol.maxAge {
			old = append(old, r)
		} else {
			rest = append(rest, r)
		}
	}
	return old, rest
}

// lanes spreads records over n lanes by partition key, keeping each lane's
// records in shard order: records of one key are always in one lane, so
// lanes run concurrently (ParallelizationFactor) and each key keeps its
// order. Empty lanes are left out.
func lanes(recs []StreamRecord, n int) [][]StreamRecord {
	if n <= 1 {
		return [][]StreamRecord{recs}
	}
	out := make([][]StreamRecord, n)
	for _, r := range recs {
		h := fnv.New32a()
		h.Write([]byte(r.Key))
		i := int(h.Sum32() % uint32(n))
		out[i] = append(out[i], r)
	}
	kept := out[:0]
	for _, l := range out {
		if len(l) > 0 {
			kept = append(kept, l)
		}
	}
	return kept
}

// batches cuts a lane into invokes of at most size records and maxBytes
// of records (a record larger alone is an invoke of its own), each inside
// one tumbling window when window is set.
func batches(recs []StreamRecord, size, maxBytes int, window time.Duration) [][]StreamRecord {
	var out [][]StreamRecord
	for len(recs) > 0 {
		n, bytes := 1, len(recs[0].Data)
		for ; n < min(size, len(recs)); n++ {
			if bytes += len(recs[n].Data) + recordOverhead; bytes > maxBytes {
				break
			}
			if window > 0 && !recs[n].Arrival.Truncate(window).Equal(recs[0].Arrival.Truncate(window)) {
				break
			}
		}
		out = append(out, recs[:n])
		recs = recs[n:]
	}
	return out
}

// round tracks the records of one read of a shard while its lanes process
// them: the checkpoint is the last record of the longest prefix that is
// done (processed, filtered out, or sent to the failure destination).
type round struct {
	mu    sync.Mutex
	recs  []StreamRecord
	index map[string]int
	done  []bool
	next  int // the first record not done
}

func newRound(recs []StreamRecord) *round {
	r := &round{recs: recs, index: make(map[string]int, len(recs)), done: make([]bool, len(recs))}
	for i, rec := range recs {
		r.index[rec.Position] = i
	}
	return r
}

// mark records recs as done; it returns the new checkpoint when the done
// prefix grew.
func (r *round) mark(recs []StreamRecord) (checkpoint string, advanced bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range recs {
		if i, ok := r.index[rec.Position]; ok {
			r.done[i] = true
		}
	}
	from := r.next
	for r.next < len(r.done) && r.done[r.next] {
		r.next++
	}
	if r.next == from {
		return "", false
	}
	return r.recs[r.next-1].Position, true
}

// shardKey is a shard's part of a KV key: KV keys take letters, digits,
// '-', '_', '=' and '.' separated tokens, a topic name more.
func shardKey(shard string) string {
	var b strings.Builder
	for _, c := range []byte(shard) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		default:
			b.WriteString("_" + string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15]))
		}
	}
	return b.String()
}
