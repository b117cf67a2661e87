package streams

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"
)

// IteratorTTL is how long a shard iterator stays valid, as Kinesis's.
const IteratorTTL = 5 * time.Minute

// iterator is a shard iterator's content: where in which shard of which
// stream (an incarnation: its id changes when a stream is deleted and
// created again) the next GetRecords reads, and when it was issued.
type iterator struct {
	Account, Name, StreamID string
	Shard                   int
	cursor
	Issued time.Time
}

// cursor is a read position in a shard: the JetStream sequence the next
// read starts at (0: the oldest record kept), or, for AT_TIMESTAMP before
// a read has found a record, the arrival time the read starts at.
type cursor struct {
	Seq uint64
	At  time.Time
}

const (
	iteratorVersion = 1
	macSize         = 16
	// maxIterator is the model's limit of a ShardIterator's length.
	maxIterator = 512
)

// errBadIterator is any iterator that does not decode or whose MAC is
// wrong: altered, forged, or of another Kiln.
var errBadIterator = errors.New("invalid shard iterator")

// encode seals it with an HMAC-SHA-256 under key: an iterator is opaque to
// clients and cannot be altered (to read another account's stream, say).
func (it iterator) encode(key []byte) string {
	b := []byte{iteratorVersion}
	// Times as the bits of their int64, so that every field is a uvarint.
	b = binary.AppendUvarint(b, uint64(it.Issued.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(it.Shard))
	b = binary.AppendUvarint(b, it.Seq)
	var at int64
	if !it.At.IsZero() {
		at = it.At.UnixNano()
	}
	b = binary.AppendUvarint(b, uint64(at))
	for _, s := range []string{it.Account, it.Name, it.StreamID} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(m.Sum(b)[:len(b)+macSize])
}

// decodeIterator opens an iterator encode sealed under key. It does not
// check its age.
func decodeIterator(key []byte, s string) (iterator, error) {
	var it iterator
	if len(s) > maxIterator {
		return it, errBadIterator
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) < 1+macSize || b[0] != iteratorVersion {
		return it, errBadIterator
	}
	body, mac := b[:len(b)-macSize], b[len(b)-macSize:]
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil)[:macSize], mac) {
		return it, errBadIterator
	}
	// Sealed by us, so well formed; checked all the same.
	r := body[1:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(r)
		if n <= 0 {
			return 0, false
		}
		r = r[n:]
		return v, true
	}
	issued, ok1 := next()
	shard, ok2 := next()
	seq, ok3 := next()
	at, ok4 := next()
	if !ok1 || !ok2 || !ok3 || !ok4 || shard >= MaxShards {
		return it, errBadIterator
	}
	var strs [3]string
	for i := range strs {
		n, ok := next()
		if !ok || n > uint64(len(r)) {
			return it, errBadIterator
		}
		strs[i], r = string(r[:n]), r[n:]
	}
	if len(r) != 0 {
		return it, errBadIterator
	}
	it = iterator{Account: strs[0], Name: strs[1], StreamID: strs[2], Shard: int(shard),
		cursor: cursor{Seq: seq}, Issued: time.UnixMilli(int64(issued))}
	if at != 0 {
		it.At = time.Unix(0, int64(at))
	}
	return it, nil
}
