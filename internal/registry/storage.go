package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Storage is where a registry keeps what it holds, by slash-separated key
// (the layout in the package comment): a directory in kiln up, a JetStream
// object store shared by a cluster's frontends and control planes. A key
// that is not there is an error wrapping fs.ErrNotExist.
type Storage interface {
	// Open reads key and returns its size.
	Open(ctx context.Context, key string) (io.ReadCloser, int64, error)
	ReadFile(ctx context.Context, key string) ([]byte, error)
	Exists(ctx context.Context, key string) bool
	// WriteFile replaces key with data.
	WriteFile(ctx context.Context, key string, data []byte) error
	// Move stores the local file at path (a finished upload) under key and
	// removes the file.
	Move(ctx context.Context, key, path string) error
	// List names the keys directly under dir.
	List(ctx context.Context, dir string) ([]string, error)
}

// Dir keeps a registry's files in a directory.
type Dir string

func (d Dir) path(key string) string { return filepath.Join(string(d), filepath.FromSlash(key)) }

func (d Dir) Open(_ context.Context, key string) (io.ReadCloser, int64, error) {
	f, err := os.Open(d.path(key))
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

func (d Dir) ReadFile(_ context.Context, key string) ([]byte, error) { return os.ReadFile(d.path(key)) }

func (d Dir) Exists(_ context.Context, key string) bool {
	_, err := os.Stat(d.path(key))
	return err == nil
}

// WriteFile writes through a temporary file and a rename.
func (d Dir) WriteFile(_ context.Context, key string, data []byte) error {
	p := d.path(key)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(p), ".tmp-"+newID()) // never a valid tag
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func (d Dir) Move(_ context.Context, key, path string) error {
	p := d.path(key)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return os.Rename(path, p)
}

func (d Dir) List(_ context.Context, dir string) ([]string, error) {
	ents, err := os.ReadDir(d.path(dir))
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

// ObjectStore keeps a registry's files in a JetStream object store,
// replicated over a cluster's NATS nodes. Blobs and manifests are named by
// digest and written only when absent (a put replaces an object, which a
// reader of it would see cut short); tags are replaced as they move.
type ObjectStore struct{ os jetstream.ObjectStore }

// OpenObjectStore opens (creating) the bucket with the given replicas. Its
// reads go to the stream's leader, not to any replica (JetStream's direct
// get, which the object store turns on): a client pushes a layer and then
// the manifest naming it, and a replica behind the leader would answer
// that the layer is not there.
func OpenObjectStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*ObjectStore, error) {
	st, err := js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      bucket,
			Description: "Kiln's container registry: blobs, manifests and tags per account",
			Replicas:    max(replicas, 1),
			Storage:     jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			err = nil // another process made it first
		}
	}
	if err != nil {
		return nil, fmt.Errorf("registry: bucket %s: %w", bucket, err)
	}
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("registry: bucket %s: %w", bucket, err)
	}
	if cfg := stream.CachedInfo().Config; cfg.AllowDirect {
		cfg.AllowDirect = false
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("registry: bucket %s: %w", bucket, err)
		}
	}
	if st, err = js.ObjectStore(ctx, bucket); err != nil { // with the stream's config as it is now
		return nil, fmt.Errorf("registry: bucket %s: %w", bucket, err)
	}
	return &ObjectStore{os: st}, nil
}

// notExist makes the object store's not-found an fs.ErrNotExist.
func notExist(key string, err error) error {
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	return err
}

func (o *ObjectStore) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	r, err := o.os.Get(ctx, key)
	if err != nil {
		return nil, 0, notExist(key, err)
	}
	info, err := r.Info()
	if err != nil {
		r.Close()
		return nil, 0, err
	}
	return r, int64(info.Size), nil
}

func (o *ObjectStore) ReadFile(ctx context.Context, key string) ([]byte, error) {
	b, err := o.os.GetBytes(ctx, key)
	return b, notExist(key, err)
}

func (o *ObjectStore) Exists(ctx context.Context, key string) bool {
	_, err := o.os.GetInfo(ctx, key)
	return err == nil
}

// immutable reports the keys named by digest: written once.
func immutable(key string) bool { return !strings.Contains(key, "/tags/") }

func (o *ObjectStore) WriteFile(ctx context.Context, key string, data []byte) error {
	if immutable(key) && o.Exists(ctx, key) {
		return nil
	}
	_, err := o.os.PutBytes(ctx, key, data)
	return err
}

func (o *ObjectStore) Move(ctx context.Context, key, path string) error {
	defer os.Remove(path)
	if o.Exists(ctx, key) {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = o.os.Put(ctx, jetstream.ObjectMeta{Name: key}, f)
	return err
}

// List reads the names of every object: the bucket holds a few per image,
// and only a tag listing asks.
func (o *ObjectStore) List(ctx context.Context, dir string) ([]string, error) {
	infos, err := o.os.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, fmt.Errorf("%s: %w", dir, fs.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	var names []string
	for _, info := range infos {
		if rest, ok := strings.CutPrefix(info.Name, prefix); ok && !strings.Contains(rest, "/") {
			names = append(names, rest)
		}
	}
	if names == nil {
		return nil, fmt.Errorf("%s: %w", dir, fs.ErrNotExist)
	}
	return names, nil
}
