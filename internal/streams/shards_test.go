package streams

import (
	"math/big"
	"strings"
	"testing"
	"time"
)

// The expected values come from Python's hashlib, not from this package.
func TestHashKeyAndShard(t *testing.T) {
	for _, c := range []struct {
		key    string
		hash   string
		shards map[int]int // shard count → shard
	}{
		{"a", "16955237001963240173058271559858726497", map[int]int{1: 0, 2: 0, 3: 0, 7: 0, 500: 24}},
		{"partition-1", "198019941650871988756153596255032211816", map[int]int{1: 0, 2: 1, 3: 1, 7: 4, 500: 290}},
		{"ünïcode", "272617993107095573161805975375084130852", map[int]int{1: 0, 2: 1, 3: 2, 7: 5, 500: 400}},
		{"zzz", "323894026244718845197700026614482590816", map[int]int{1: 0, 2: 1, 3: 2, 7: 6, 500: 475}},
	} {
		h := HashKey(c.key)
		if h.String() != c.hash {
			t.Errorf("HashKey(%q) = %s, want %s", c.key, h, c.hash)
		}
		for n, want := range c.shards {
			if got := shardOf(h, n); got != want {
				t.Errorf("shardOf(%q, %d) = %d, want %d", c.key, n, got, want)
			}
			if got := (PutEntry{PartitionKey: c.key}).shardFor(n); got != want {
				t.Errorf("shardFor(%q, %d) = %d, want %d", c.key, n, got, want)
			}
		}
	}
}

// Ranges as Kinesis gives a new stream: contiguous, covering [0, 2^128),
// each the same width but the last, which takes the remainder.
func TestHashRanges(t *testing.T) {
	start, end := hashRange(1, 3)
	if start.String() != "113427455640312821154458202477256070485" || end.String() != "226854911280625642308916404954512140969" {
		t.Errorf("shard 1 of 3: %s–%s", start, end)
	}
	for _, n := range []int{1, 2, 3, 7, 64, 500} {
		next := big.NewInt(0)
		for i := range n {
			start, end := hashRange(i, n)
			if start.Cmp(next) != 0 || end.Cmp(start) < 0 {
				t.Fatalf("shard %d of %d: %s–%s, want from %s", i, n, start, end, next)
			}
			// Both ends hash to the shard.
			if shardOf(start, n) != i || shardOf(end, n) != i {
				t.Errorf("shard %d of %d: ends go to %d and %d", i, n, shardOf(start, n), shardOf(end, n))
			}
			next = new(big.Int).Add(end, big.NewInt(1))
		}
		if next.Cmp(hashSpace) != 0 {
			t.Errorf("%d shards end at %s, want 2^128", n, next)
		}
	}
}

func TestExplicitHashKey(t *testing.T) {
	for _, c := range []struct {
		key   string
		ok    bool
		shard int // of 4
	}{
		{"0", true, 0},
		{"340282366920938463463374607431768211455", true, 3},  // 2^128-1
		{"170141183460469231731687303715884105728", true, 2},  // 2^127
		{"340282366920938463463374607431768211456", false, 0}, // 2^128
		{"01", false, 0},
		{"-1", false, 0},
		{"1e3", false, 0},
		{"", false, 0},
		{strings.Repeat("9", 40), false, 0},
	} {
		h, ok := parseHashKey(c.key)
		if ok != c.ok {
			t.Errorf("parseHashKey(%q) ok = %v", c.key, ok)
			continue
		}
		if ok && shardOf(h, 4) != c.shard {
			t.Errorf("%s goes to shard %d of 4, want %d", c.key, shardOf(h, 4), c.shard)
		}
		if ok {
			// The explicit key wins over the partition key's hash.
			if got := (PutEntry{PartitionKey: "a", ExplicitHashKey: c.key}).shardFor(4); got != c.shard {
				t.Errorf("entry with ExplicitHashKey %s goes to %d", c.key, got)
			}
		}
	}
}

func TestShardIDs(t *testing.T) {
	if ShardID(7) != "shardId-000000000007" {
		t.Errorf("ShardID(7) = %s", ShardID(7))
	}
	for _, c := range []struct {
		id string
		n  int
		i  int
		ok bool
	}{
		{"shardId-000000000000", 1, 0, true},
		{"shardId-000000000003", 4, 3, true},
		{"shardId-000000000004", 4, 0, false},
		{"shardId-00000000003", 4, 0, false},
		{"shardId-+00000000003", 4, 0, false},
		{"shardId--00000000001", 4, 0, false},
		{"3", 4, 0, false},
		{"", 4, 0, false},
	} {
		i, ok := parseShardID(c.id, c.n)
		if ok != c.ok || ok && i != c.i {
			t.Errorf("parseShardID(%q, %d) = %d, %v", c.id, c.n, i, ok)
		}
	}
}

func TestSequenceNumbers(t *testing.T) {
	// Increasing with the JetStream sequence in a shard, as numbers and as
	// strings (all 37 digits), and naming their shard.
	prev := ""
	for _, seq := range []uint64{0, 1, 2, 9, 10, 1 << 20, 1<<63 - 1, 1 << 63, 1<<64 - 1} {
		for _, shard := range []int{0, 1, 499} {
			s := seqNumber(shard, seq)
			if len(s) != 37 {
				t.Errorf("seqNumber(%d, %d) = %s: %d digits", shard, seq, s, len(s))
			}
			i, got, ok := parseSeqNumber(s)
			if !ok || i != shard || got != seq {
				t.Errorf("parseSeqNumber(%s) = %d, %d, %v; want %d, %d", s, i, got, ok, shard, seq)
			}
		}
		s := seqNumber(3, seq)
		if prev != "" && s <= prev {
			t.Errorf("seqNumber(3, %d) = %s, not after %s", seq, s, prev)
		}
		prev = s
	}
	for _, bad := range []string{"", "0", "1", "12", "01329227995784915872903807060280344576", "-1",
		"1329227995784915872903807060280344575", // 2^120 - 1
		strings.Repeat("9", 60), "1.5", "0x10"} {
		if _, _, ok := parseSeqNumber(bad); ok {
			t.Errorf("parseSeqNumber(%q) accepted", bad)
		}
	}
}

func TestIterators(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	issued := time.UnixMilli(1_700_000_000_123)
	for _, it := range []iterator{
		{Account: "123456789012", Name: "s", StreamID: "abcdefghijklmnopqrst-uvw", Shard: 0, Issued: issued},
		{Account: "123456789012", Name: strings.Repeat("n.", 64), StreamID: "abcdefghijklmnopqrst-uvw", Shard: 499,
			cursor: cursor{Seq: 1<<64 - 1}, Issued: issued},
		{Account: "123456789012", Name: "t", StreamID: "x", Shard: 3, cursor: cursor{At: time.Unix(1_600_000_000, 5)}, Issued: issued},
	} {
		s := it.encode(key)
		if len(s) > maxIterator {
			t.Errorf("iterator of %d characters, over the model's %d", len(s), maxIterator)
		}
		got, err := decodeIterator(key, s)
		if err != nil || got.Account != it.Account || got.Name != it.Name || got.StreamID != it.StreamID ||
			got.Shard != it.Shard || got.Seq != it.Seq || !got.At.Equal(it.At) || !got.Issued.Equal(it.Issued) {
			t.Errorf("round trip of %+v: %+v, %v", it, got, err)
		}
		// Any change of any byte, a truncation or another key is refused.
		raw := []byte(s)
		for i := range raw {
			for _, c := range []byte{'A', 'b', '-', '_', '0'} {
				if raw[i] == c {
					continue
				}
				forged := append([]byte{}, raw...)
				forged[i] = c
				if _, err := decodeIterator(key, string(forged)); err == nil {
					t.Fatalf("iterator with byte %d changed to %c accepted", i, c)
				}
			}
		}
		if _, err := decodeIterator(key, s[:len(s)-1]); err == nil {
			t.Error("truncated iterator accepted")
		}
		if _, err := decodeIterator([]byte("another key of thirty-two bytes!"), s); err == nil {
			t.Error("iterator of another key accepted")
		}
	}
}

func TestIteratorExpiry(t *testing.T) {
	it := iterator{Issued: time.Unix(1_700_000_000, 0)}
	if err := checkAge(it, it.Issued.Add(IteratorTTL)); err != nil {
		t.Errorf("at its TTL: %v", err)
	}
	if err := checkAge(it, it.Issued.Add(IteratorTTL+time.Millisecond)); err == nil || !strings.Contains(err.Error(), "ExpiredIteratorException") {
		t.Errorf("past its TTL: %v", err)
	}
}

func TestParseARN(t *testing.T) {
	region, account, name, err := ParseARN("arn:aws:kinesis:eu-west-1:123456789012:stream/my.stream-1")
	if err != nil || region != "eu-west-1" || account != "123456789012" || name != "my.stream-1" {
		t.Errorf("ParseARN: %s %s %s %v", region, account, name, err)
	}
	if ARN(region, account, name) != "arn:aws:kinesis:eu-west-1:123456789012:stream/my.stream-1" {
		t.Error("ARN does not round-trip")
	}
	for _, bad := range []string{"", "arn:aws:kinesis:us-east-1:123456789012:my", "arn:aws:sqs:us-east-1:123456789012:stream/x",
		"arn:aws:kinesis::123456789012:stream/x", "arn:aws:kinesis:us-east-1:12345:stream/x", "arn:aws:kinesis:us-east-1:123456789012:stream/",
		"arn:aws:kinesis:us-east-1:123456789012:stream/a/b", "arn:aws:kinesis:us-east-1:123456789012:stream/x:y"} {
		if _, _, _, err := ParseARN(bad); err == nil {
			t.Errorf("ParseARN(%q) accepted", bad)
		}
	}
}

func TestRecordEncoding(t *testing.T) {
	for _, e := range []PutEntry{{PartitionKey: "k", Data: []byte{}}, {PartitionKey: strings.Repeat("ü", 256), Data: []byte("\x00\xff data")}} {
		k, data, ok := decodeRecord(encodeRecord(e))
		if !ok || k != e.PartitionKey || string(data) != string(e.Data) {
			t.Errorf("round trip of %q: %q %q %v", e.PartitionKey, k, data, ok)
		}
	}
	for _, bad := range [][]byte{nil, {0x80}, {5, 'a'}} {
		if _, _, ok := decodeRecord(bad); ok {
			t.Errorf("decodeRecord(%q) accepted", bad)
		}
	}
}
