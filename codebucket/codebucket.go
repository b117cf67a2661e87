// Package codebucket keeps deployment packages in a JetStream object store
// replicated over the cluster's NATS nodes: the codestore.Remote of every
// control plane and worker. A control plane's Put returns once a quorum of
// nodes holds the zip, so any control plane can serve it and any worker
// fetch it by digest, whichever process uploaded it and whether it still runs.
package codebucket

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/kiln-dev/kiln/codestore"
	"github.com/nats-io/nats.go/jetstream"
)

// Name is the object store bucket.
const Name = "kiln-code"

// Bucket is the replicated object store of zips, named by hex digest.
type Bucket struct{ obs jetstream.ObjectStore }

// Open creates the bucket if needed (file storage, replicas copies).
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Bucket, error) {
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: Name,
		Description: "Kiln deployment packages by SHA-256", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("codebucket: %w", err)
	}
	return &Bucket{obs: obs}, nil
}

// Put stores zip under hexDigest unless an object with its digest is there.
func (b *Bucket) Put(ctx context.Context, hexDigest string, zip []byte) error {
	sum := sha256.Sum256(zip)
	digest := "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])
	if info, err := b.obs.GetInfo(ctx, hexDigest); err == nil && !info.Deleted && info.Digest == digest {
		return nil
	}
	if _, err := b.obs.PutBytes(ctx, hexDigest, zip); err != nil {
		return fmt.Errorf("codebucket: put %s: %w", hexDigest, err)
	}
	return nil
}

// Get reads a zip; the object store checks it against the digest it recorded.
func (b *Bucket) Get(ctx context.Context, hexDigest string) ([]byte, error) {
	zip, err := b.obs.GetBytes(ctx, hexDigest)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: %s", codestore.ErrNotFound, hexDigest)
	}
	if err != nil {
		return nil, fmt.Errorf("codebucket: get %s: %w", hexDigest, err)
	}
	return zip, nil
}
