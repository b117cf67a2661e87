package tier

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ObjectStore keeps blobs in a JetStream object store: the authoritative
// store in cluster mode, replicated by JetStream.
type ObjectStore struct{ obs jetstream.ObjectStore }

// OpenObjectStore opens (creating) the bucket with the given replicas.
func OpenObjectStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*ObjectStore, error) {
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "Kiln image chunks and manifests, named by the SHA-256 of their bytes",
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("tier: object store %s: %w", bucket, err)
	}
	return &ObjectStore{obs: obs}, nil
}

func (o *ObjectStore) Get(ctx context.Context, name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	b, err := o.obs.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return b, err
}

func (o *ObjectStore) Put(ctx context.Context, name string, data []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	if _, err := o.obs.GetInfo(ctx, name); err == nil {
		return nil // content-addressed: already there
	}
	_, err := o.obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data))
	return err
}

func (o *ObjectStore) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := o.obs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return err
	}
	return nil
}
