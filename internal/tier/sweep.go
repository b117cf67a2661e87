package tier

import (
	"context"
	"iter"
	"time"
)

// Blob is a stored blob as a listing finds it.
type Blob struct {
	Name string
	Size int64
	// Written is its last Put, of its bytes or again (an import reusing
	// it): a collection's grace period counts from it.
	Written time.Time
	rev     uint64    // JetStream: the head's revision when listed (0: no head)
	parts   []partRev // JetStream: the parts and their revisions
}

type partRev struct {
	key string
	rev uint64
}

// Lister is an authoritative store a collection can sweep (Dir, JetStream,
// S3). Caches need none: they are bounded and evict.
type Lister interface {
	// List yields every blob the store holds, in no particular order.
	List(ctx context.Context) iter.Seq2[Blob, error]
	// Remove deletes b unless it was put again since it was listed (an
	// import reused it after the collection decided): false, it is kept.
	Remove(ctx context.Context, b Blob) (bool, error)
}

// Doomed is a sweep's decision, free of I/O: the blobs that keep rejects
// and that were last written before notAfter. A blob whose write time is
// unknown (zero) is kept: when in doubt, keep.
func Doomed(blobs []Blob, keep func(name string) bool, notAfter time.Time) []Blob {
	var out []Blob
	for _, b := range blobs {
		if validName(b.Name) != nil || keep(b.Name) || b.Written.IsZero() || !b.Written.Before(notAfter) {
			continue
		}
		out = append(out, b)
	}
	return out
}

// Swept is what a sweep deleted.
type Swept struct {
	Blobs int
	Bytes int64
}

// Sweep lists l, and removes the blobs plan chooses of them (Doomed, or a
// caller's decision built on it).
func Sweep(ctx context.Context, l Lister, plan func(all []Blob) []Blob) (Swept, error) {
	var all []Blob
	for b, err := range l.List(ctx) {
		if err != nil {
			return Swept{}, err
		}
		all = append(all, b)
	}
	var s Swept
	for _, b := range plan(all) {
		ok, err := l.Remove(ctx, b)
		if err != nil {
			return s, err
		}
		if ok {
			s.Blobs++
			s.Bytes += b.Size
		}
	}
	return s, nil
}
