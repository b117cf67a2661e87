package streams

import (
	"testing"
	"time"
)

// FuzzIterator: whatever a client sends as a shard iterator decodes only if
// this Kiln sealed it, and never panics; what decodes re-encodes to itself.
func FuzzIterator(f *testing.F) {
	key := []byte("fuzzing key, thirty-two bytes!!!")
	f.Add(iterator{Account: "123456789012", Name: "s", StreamID: "abcdefghijklmnopqrst-uvw", Shard: 2,
		cursor: cursor{Seq: 42}, Issued: time.UnixMilli(1_700_000_000_000)}.encode(key))
	f.Add(iterator{Account: "123456789012", Name: "s.t", StreamID: "x", cursor: cursor{At: time.Unix(1, 2)}}.encode(key))
	f.Add("AQ")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		it, err := decodeIterator(key, s)
		if err != nil {
			return
		}
		if it.Shard >= MaxShards {
			t.Fatalf("%q: shard %d", s, it.Shard)
		}
		if again := it.encode(key); again != s {
			t.Fatalf("%q decodes to %+v, which encodes to %q", s, it, again)
		}
	})
}
