package partition

import (
	"hash/fnv"
	"sort"
	"strconv"
)

// Ring maps functions to partitions by consistent hashing: each partition
// owns many points on a 64-bit circle, and a function belongs to the owner
// of the first point at or after its hash. Growing the ring from n to n+1
// partitions moves about 1/(n+1) of the functions.
type Ring struct {
	n      int
	points []uint64
	owner  []int
}

// VirtualNodes is how many points each partition owns.
const VirtualNodes = 128

// NewRing returns a ring of n partitions (n ≥ 1), numbered 0..n-1.
func NewRing(n int) *Ring {
	if n < 1 {
		n = 1
	}
	r := &Ring{n: n}
	type pt struct {
		h uint64
		p int
	}
	pts := make([]pt, 0, n*VirtualNodes)
	for p := 0; p < n; p++ {
		for v := 0; v < VirtualNodes; v++ {
			pts = append(pts, pt{hash("partition-" + strconv.Itoa(p) + "-" + strconv.Itoa(v)), p})
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].h < pts[j].h })
	for _, x := range pts {
		r.points = append(r.points, x.h)
		r.owner = append(r.owner, x.p)
	}
	return r
}

// Partitions is the number of partitions.
func (r *Ring) Partitions() int { return r.n }

// Of returns the partition of an account's function.
func (r *Ring) Of(account, function string) int {
	h := hash(account + "/" + function)
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i] >= h })
	if i == len(r.points) {
		i = 0
	}
	return r.owner[i]
}

func hash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := h.Sum64()
	// fnv's low bits mix poorly for short similar keys: finalize (splitmix64).
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
