package tier

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// partSize bounds one message: blobs (manifests of large images) may exceed
// what a NATS message carries.
const partSize = 1 << 20

// JetStream keeps blobs in a JetStream key-value bucket: the authoritative
// store in cluster mode, replicated by JetStream. A blob is its parts
// (NAME.0, NAME.1, ...) and then its head (NAME: the part count), each one
// message: concurrent writers of one blob (imports sharing a layer) write
// the same bytes, and a reader gets one whole message or the other, which
// JetStream's object store, whose objects span messages, does not promise.
// The head is written last, so a reader that finds it finds every part.
//
// A Put of a blob present writes its head again (compare-and-set on its
// revision), and a collection removes a blob only at the revisions it
// listed: a blob an import reuses after the collection listed it is kept,
// and one removed under a Put is written whole again.
type JetStream struct {
	kv     jetstream.KeyValue
	js     jetstream.JetStream
	nc     *nats.Conn
	bucket string
}

// OpenJetStream opens (creating) the bucket with the given replicas.
func OpenJetStream(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*JetStream, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Kiln image chunks and manifests, named by the SHA-256 of their bytes",
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("tier: bucket %s: %w", bucket, err)
	}
	return &JetStream{kv: kv, js: js, nc: js.Conn(), bucket: bucket}, nil
}

func part(name string, i int) string { return name + "." + strconv.Itoa(i) }

func (j *JetStream) Get(ctx context.Context, name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	head, err := j.get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, err
	}
	if len(head) != 4 {
		return nil, fmt.Errorf("%w: %s: bad head", ErrCorrupt, name)
	}
	var out []byte
	for i := range int(binary.BigEndian.Uint32(head)) {
		p, err := j.get(ctx, part(name, i))
		if err != nil {
			return nil, fmt.Errorf("tier: %s part %d: %w", name, i, err)
		}
		out = append(out, p...)
	}
	return out, nil
}

// get reads key as the bucket's client does (a direct get, which any
// replica answers), and, when that finds nothing, from the stream's leader:
// a replica a moment behind misses a blob just written (a manifest an
// import stored, read by a worker right after), or the part of a blob
// whose head another replica served.
func (j *JetStream) get(ctx context.Context, key string) ([]byte, error) {
	e, err := j.kv.Get(ctx, key)
	if err == nil {
		return e.Value(), nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) || j.nc == nil {
		return nil, err
	}
	v, _, err := natsd.LeaderGet(ctx, j.nc, j.bucket, key)
	return v, err
}

func (j *JetStream) Put(ctx context.Context, name string, data []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	if e, err := j.kv.Get(ctx, name); err == nil {
		if _, err := j.kv.Update(ctx, name, e.Value(), e.Revision()); err == nil {
			return nil // renewed for a collection's grace
		}
		// Removed or renewed meanwhile: written whole below.
	}
	n := 0
	for off := 0; off < len(data) || n == 0; off += partSize {
		if err := j.put(ctx, part(name, n), data[off:min(off+partSize, len(data))]); err != nil {
			return err
		}
		n++
	}
	return j.put(ctx, name, binary.BigEndian.AppendUint32(nil, uint32(n)))
}

func (j *JetStream) put(ctx context.Context, key string, v []byte) error {
	if _, err := j.kv.Put(ctx, key, v); err != nil {
		return fmt.Errorf("tier: put %s: %w", key, err)
	}
	return nil
}

// List reads the bucket's last message per key, headers only: a blob's
// size is its parts', its write time its head's. Parts without a head (a
// Put cut short, or under way) are listed as a blob of their own, written
// when the last of them was.
func (j *JetStream) List(ctx context.Context) iter.Seq2[Blob, error] {
	return func(yield func(Blob, error) bool) {
		blobs, err := j.list(ctx)
		if err != nil {
			yield(Blob{}, fmt.Errorf("tier: list %s: %w", j.bucket, err))
			return
		}
		for _, b := range blobs {
			if !yield(*b, nil) {
				return
			}
		}
	}
}

func (j *JetStream) list(ctx context.Context) (map[string]*Blob, error) {
	prefix := "$KV." + j.bucket + "."
	// An ephemeral consumer of its own, deleted after: a stream's consumers
	// are limited, and an ordered consumer would stay until it expired.
	stream := "KV_" + j.bucket
	c, err := j.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{FilterSubject: prefix + ">",
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy, AckPolicy: jetstream.AckNonePolicy, HeadersOnly: true,
		MemoryStorage: true, InactiveThreshold: time.Minute})
	if err != nil {
		return nil, err
	}
	defer j.js.DeleteConsumer(context.WithoutCancel(ctx), stream, c.CachedInfo().Name)
	blobs := map[string]*Blob{}
	blob := func(name string) *Blob {
		if blobs[name] == nil {
			blobs[name] = &Blob{Name: name}
		}
		return blobs[name]
	}
	pending := c.CachedInfo().NumPending
	for pending > 0 {
		batch, err := c.Fetch(int(min(pending, 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			pending = meta.NumPending
			if op := m.Headers().Get("KV-Operation"); op != "" { // deleted or purged
				continue
			}
			key := strings.TrimPrefix(m.Subject(), prefix)
			size, _ := strconv.ParseInt(m.Headers().Get(nats.MsgSize), 10, 64)
			if name, _, ok := strings.Cut(key, "."); ok && validName(name) == nil {
				b := blob(name)
				b.Size += size
				b.parts = append(b.parts, partRev{key, meta.Sequence.Stream})
				if b.rev == 0 && meta.Timestamp.After(b.Written) {
					b.Written = meta.Timestamp // headless so far
				}
			} else if validName(key) == nil {
				b := blob(key)
				b.rev, b.Written = meta.Sequence.Stream, meta.Timestamp
			}
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if got == 0 {
			return nil, fmt.Errorf("listing stopped with %d keys to go", pending)
		}
	}
	return blobs, nil
}

// Remove purges the head at the revision listed, then each part at its
// own: a Put since (the head renewed, or parts written anew) fails the
// compare and keeps what it wrote.
func (j *JetStream) Remove(ctx context.Context, b Blob) (bool, error) {
	if err := validName(b.Name); err != nil {
		return false, err
	}
	if b.rev != 0 {
		if err := j.kv.Purge(ctx, b.Name, jetstream.LastRevision(b.rev)); err != nil {
			if changed(err) {
				return false, nil
			}
			return false, err
		}
	}
	for _, p := range b.parts {
		if err := j.kv.Purge(ctx, p.key, jetstream.LastRevision(p.rev)); err != nil && !changed(err) {
			return true, err
		}
	}
	return true, nil
}

// changed reports a compare-and-set that failed: the key was written since.
func changed(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Delete removes the head first, so no reader starts on a blob going away.
// (The authoritative store is never asked to delete while writers run.)
func (j *JetStream) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	head, err := j.get(ctx, name) // a lagging replica's miss would keep the blob
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := j.kv.Purge(ctx, name); err != nil {
		return err
	}
	if len(head) == 4 {
		for i := range int(binary.BigEndian.Uint32(head)) {
			if err := j.kv.Purge(ctx, part(name, i)); err != nil {
				return err
			}
		}
	}
	return nil
}
