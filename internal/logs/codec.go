package logs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// escape makes s one NATS subject token and one KV key token: letters,
// digits and '-' stay as they are, every other byte becomes _XX (hex), so
// '/', '.', '*', '>', '[', '$', ']', spaces and '_' itself are all safe and
// the mapping is reversible. Lambda's names stay readable:
// "/aws/lambda/f" is "_2Faws_2Flambda_2Ff".
func escape(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !plain(s[i]) {
			n++
		}
	}
	if n == 0 && s != "" {
		return s
	}
	if s == "" {
		return "_" // an empty token is not allowed; names are never empty
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '_', hex[c>>4], hex[c&15])
	}
	return string(b)
}

func plain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}

// unescape reverses escape.
func unescape(t string) (string, error) {
	if t == "_" {
		return "", nil
	}
	if !strings.Contains(t, "_") {
		return t, nil
	}
	b := make([]byte, 0, len(t))
	for i := 0; i < len(t); i++ {
		if t[i] != '_' {
			b = append(b, t[i])
			continue
		}
		if i+2 >= len(t) {
			return "", fmt.Errorf("bad escape in %q", t)
		}
		v, err := strconv.ParseUint(t[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", t)
		}
		b = append(b, byte(v))
		i += 2
	}
	return string(b), nil
}

// subjectPrefix is the first token of every log subject:
// logs.<account>.<group>.<stream>, each token escaped.
const subjectPrefix = "logs"

func streamSubject(account, group, stream string) string {
	return subjectPrefix + "." + escape(account) + "." + escape(group) + "." + escape(stream)
}

func groupSubjects(account, group string) string {
	return subjectPrefix + "." + escape(account) + "." + escape(group) + ".*"
}

// streamOfSubject returns the (unescaped) stream name of a log subject.
func streamOfSubject(subject string) (string, error) {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 {
		return "", fmt.Errorf("bad log subject %q", subject)
	}
	return unescape(subject[i+1:])
}

// A stored message is a batch of events of one log stream:
//
//	version byte (1), uvarint ingestion time (ms since epoch),
//	varint first and varint last event timestamp (the batch's time span, so
//	readers skip batches outside a time range without decoding them),
//	uvarint count, count × (varint timestamp ms, uvarint length, message)
//
// Events keep their order; an event's position is (stream sequence, index).
const codecVersion = 1

func appendBatchHeader(b []byte, ingestion, minTs, maxTs int64, count int) []byte {
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(ingestion))
	b = binary.AppendVarint(b, minTs)
	b = binary.AppendVarint(b, maxTs)
	return binary.AppendUvarint(b, uint64(count))
}

func appendEvent(b []byte, ts int64, msg string) []byte {
	b = binary.AppendVarint(b, ts)
	b = binary.AppendUvarint(b, uint64(len(msg)))
	return append(b, msg...)
}

var errCorrupt = errors.New("logs: corrupt batch")

// batch is a stored message, parsed lazily.
type batch struct {
	ingestion    int64
	minTs, maxTs int64
	count        int
	body         []byte
}

func parseBatch(data []byte) (batch, error) {
	var b batch
	if len(data) < 1 || data[0] != codecVersion {
		return b, errCorrupt
	}
	p := data[1:]
	ing, n := binary.Uvarint(p)
	if n <= 0 {
		return b, errCorrupt
	}
	p = p[n:]
	if b.minTs, n = binary.Varint(p); n <= 0 {
		return b, errCorrupt
	}
	p = p[n:]
	if b.maxTs, n = binary.Varint(p); n <= 0 {
		return b, errCorrupt
	}
	p = p[n:]
	count, n := binary.Uvarint(p)
	if n <= 0 || count > uint64(len(p)) {
		return b, errCorrupt
	}
	b.ingestion, b.count, b.body = int64(ing), int(count), p[n:]
	return b, nil
}

// each calls fn for every event in order until fn returns false. msg is
// only valid during the call.
func (b *batch) each(fn func(i int, ts int64, msg []byte) bool) error {
	p := b.body
	for i := 0; i < b.count; i++ {
		ts, n := binary.Varint(p)
		if n <= 0 {
			return errCorrupt
		}
		p = p[n:]
		l, n := binary.Uvarint(p)
		if n <= 0 || l > uint64(len(p)-n) {
			return errCorrupt
		}
		p = p[n:]
		if !fn(i, ts, p[:l]) {
			return nil
		}
		p = p[l:]
	}
	return nil
}

// eventSize is how CloudWatch Logs sizes an event: its UTF-8 bytes plus 26.
func eventSize[S string | []byte](msg S) int64 { return int64(len(msg)) + 26 }
