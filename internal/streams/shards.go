package streams

import (
	"crypto/md5"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
)

// MaxShards is the most shards a stream may have (Kinesis's default shard
// quota of an account in most regions).
const MaxShards = 500

// hashSpace is 2^128: partition keys hash to [0, 2^128).
var hashSpace = new(big.Int).Lsh(big.NewInt(1), 128)

// hashKeyRe is the model's pattern of a hash key (ExplicitHashKey,
// HashKeyRange): a decimal integer without leading zeros.
var hashKeyRe = regexp.MustCompile(`^(0|[1-9][0-9]{0,38})$`)

// HashKey is the hash of a partition key, as Kinesis computes it: the MD5
// of its UTF-8 bytes read as a 128-bit unsigned big-endian integer.
func HashKey(partitionKey string) *big.Int {
	sum := md5.Sum([]byte(partitionKey))
	return new(big.Int).SetBytes(sum[:])
}

// parseHashKey parses an ExplicitHashKey: a decimal in [0, 2^128).
func parseHashKey(s string) (*big.Int, bool) {
	if !hashKeyRe.MatchString(s) {
		return nil, false
	}
	h, ok := new(big.Int).SetString(s, 10)
	if !ok || h.Cmp(hashSpace) >= 0 {
		return nil, false
	}
	return h, true
}

// step is the width of each of n shards' hash key ranges; the last shard
// also takes the remainder, as Kinesis splits a new stream's key space.
func step(n int) *big.Int { return new(big.Int).Quo(hashSpace, big.NewInt(int64(n))) }

// hashRange is shard i's of n: [start, end], both inclusive.
func hashRange(i, n int) (start, end *big.Int) {
	w := step(n)
	start = new(big.Int).Mul(w, big.NewInt(int64(i)))
	if i == n-1 {
		return start, new(big.Int).Sub(hashSpace, big.NewInt(1))
	}
	return start, new(big.Int).Sub(new(big.Int).Add(start, w), big.NewInt(1))
}

// shardOf is the shard of n whose range holds hash key h.
func shardOf(h *big.Int, n int) int {
	q := new(big.Int).Quo(h, step(n))
	if !q.IsInt64() || q.Int64() >= int64(n) {
		return n - 1
	}
	return int(q.Int64())
}

// ShardID is the id of a stream's shard i, as Kinesis names a new
// stream's shards.
func ShardID(i int) string { return fmt.Sprintf("shardId-%012d", i) }

// parseShardID returns the index of a shard id of a stream of n shards.
func parseShardID(id string, n int) (int, bool) {
	digits, ok := strings.CutPrefix(id, "shardId-")
	if !ok || len(digits) != 12 || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	i, err := strconv.Atoi(digits)
	if err != nil || i >= n {
		return 0, false
	}
	return i, true
}

// Sequence numbers are decimal strings, as Kinesis's, of 2^120 + the
// shard's index·2^64 + the record's JetStream stream sequence: they
// increase with the sequence, so with time in each shard, name their
// shard (a number from another shard is refused), and all have 37 digits
// (below 2^16 shards), so that they also sort as strings.
var seqBase = new(big.Int).Lsh(big.NewInt(1), 120)

// seqNumber is the sequence number of the record at JetStream sequence
// seq in shard i; seq 0 is the shard's start (StartingSequenceNumber).
func seqNumber(i int, seq uint64) string {
	n := new(big.Int).Lsh(big.NewInt(int64(i)), 64)
	n.Or(n, new(big.Int).SetUint64(seq))
	return n.Add(n, seqBase).String()
}

var seqNumberRe = regexp.MustCompile(`^(0|[1-9][0-9]{0,128})$`)

// parseSeqNumber returns the shard and JetStream sequence of a sequence
// number this service issued.
func parseSeqNumber(s string) (shard int, seq uint64, ok bool) {
	if !seqNumberRe.MatchString(s) {
		return 0, 0, false
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Cmp(seqBase) < 0 {
		return 0, 0, false
	}
	n.Sub(n, seqBase)
	if n.BitLen() > 64+16 {
		return 0, 0, false
	}
	lo := new(big.Int).And(n, new(big.Int).SetUint64(^uint64(0)))
	return int(new(big.Int).Rsh(n, 64).Int64()), lo.Uint64(), true
}
