package tier

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// partSize bounds one message: blobs (manifests of large images) may exceed
// what a NATS message carries.
const partSize = 1 << 20

// JetStream keeps blobs in a JetStream key-value bucket: the authoritative
// store in cluster mode, replicated by JetStream. A blob is its parts
// (NAME.0, NAME.1, ...) and then its head (NAME: the part count), each
// written with Create, which fails if the key exists: concurrent writers of
// one blob (imports sharing a layer) write the same bytes and never replace
// what a reader is reading, which JetStream's object store, whose puts
// replace, does not promise. The head is written last, so a reader that
// finds it finds every part.
type JetStream struct {
	kv     jetstream.KeyValue
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
	return &JetStream{kv: kv, nc: js.Conn(), bucket: bucket}, nil
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
	if _, err := j.kv.Get(ctx, name); err == nil {
		return nil // content-addressed: already there
	}
	n := 0
	for off := 0; off < len(data) || n == 0; off += partSize {
		if err := j.create(ctx, part(name, n), data[off:min(off+partSize, len(data))]); err != nil {
			return err
		}
		n++
	}
	return j.create(ctx, name, binary.BigEndian.AppendUint32(nil, uint32(n)))
}

// create writes key unless it exists (then with the same bytes).
func (j *JetStream) create(ctx context.Context, key string, v []byte) error {
	if _, err := j.kv.Create(ctx, key, v); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("tier: put %s: %w", key, err)
	}
	return nil
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
