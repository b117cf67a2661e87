// Package codebucket keeps deployment packages replicated over the cluster's
// NATS nodes: the codestore.Remote of every control plane and worker. A
// control plane's Put returns once a quorum of nodes holds the zip, so any
// control plane can serve it and any worker fetch it by digest, whichever
// process uploaded it and whether it still runs.
//
// The zips are blobs of tier's JetStream store (a key-value bucket written
// create-only in parts), not of JetStream's object store: two control planes
// uploading one zip at once write the same parts and never replace what a
// worker is reading, which the object store's replacing puts do not promise.
package codebucket

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/tier"
	"github.com/nats-io/nats.go/jetstream"
)

// Name is the key-value bucket.
const Name = "kiln-code"

// Bucket is the replicated store of zips, named by hex digest.
type Bucket struct{ blobs *tier.JetStream }

// Open creates the bucket if needed (file storage, replicas copies).
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Bucket, error) {
	blobs, err := tier.OpenJetStream(ctx, js, Name, max(replicas, 1))
	if err != nil {
		return nil, fmt.Errorf("codebucket: %w", err)
	}
	return &Bucket{blobs: blobs}, nil
}

// List and Remove let a collection sweep the bucket (tier.Lister).
func (b *Bucket) List(ctx context.Context) iter.Seq2[tier.Blob, error] { return b.blobs.List(ctx) }

func (b *Bucket) Remove(ctx context.Context, blob tier.Blob) (bool, error) {
	return b.blobs.Remove(ctx, blob)
}

// Put stores zip under hexDigest; storing it again is a lookup.
func (b *Bucket) Put(ctx context.Context, hexDigest string, zip []byte) error {
	if err := b.blobs.Put(ctx, hexDigest, zip); err != nil {
		return fmt.Errorf("codebucket: put %s: %w", hexDigest, err)
	}
	return nil
}

// Get reads a zip.
func (b *Bucket) Get(ctx context.Context, hexDigest string) ([]byte, error) {
	zip, err := b.blobs.Get(ctx, hexDigest)
	if errors.Is(err, tier.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", codestore.ErrNotFound, hexDigest)
	}
	if err != nil {
		return nil, fmt.Errorf("codebucket: get %s: %w", hexDigest, err)
	}
	return zip, nil
}
