package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ErrNotFound is returned (wrapped) by Image for what the account's
// repository does not hold.
var ErrNotFound = errors.New("registry: image not found")

// Image returns repo:ref (a tag or digest) of account, for linux/arch when
// it is an index: what CreateFunction imports when ImageUri names this
// registry. It reads the files, not the HTTP API: the caller is the account.
func (r *Registry) Image(ctx context.Context, account, repo, ref, arch string) (v1.Image, error) {
	if checkRepo(repo) != nil || (!digestRe.MatchString(ref) && !tagRe.MatchString(ref)) {
		return nil, fmt.Errorf("%w: %s:%s", ErrNotFound, repo, ref)
	}
	b, mt, _, err := r.readManifest(ctx, account, repo, ref)
	if err != nil {
		return nil, fmt.Errorf("%w: %s:%s: %v", ErrNotFound, repo, ref, err)
	}
	if mt.IsIndex() {
		im, err := v1.ParseIndexManifest(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		for _, d := range im.Manifests {
			if p := d.Platform; p != nil && p.OS == "linux" && p.Architecture == arch {
				return r.Image(ctx, account, repo, d.Digest.String(), arch)
			}
		}
		return nil, fmt.Errorf("%w: no linux/%s image in %s:%s", ErrNotFound, arch, repo, ref)
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&localImage{ctx: ctx, r: r, account: account, raw: b, mt: mt, m: m})
}

type localImage struct {
	ctx     context.Context
	r       *Registry
	account string
	raw     []byte
	mt      types.MediaType
	m       *v1.Manifest
}

func (li *localImage) RawManifest() ([]byte, error)        { return li.raw, nil }
func (li *localImage) MediaType() (types.MediaType, error) { return li.mt, nil }

func (li *localImage) RawConfigFile() ([]byte, error) {
	return li.r.store.ReadFile(li.ctx, blobKey(li.account, li.m.Config.Digest.String()))
}

func (li *localImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range li.m.Layers {
		if l.Digest == h {
			return &localBlob{li: li, d: l}, nil
		}
	}
	if li.m.Config.Digest == h {
		return &localBlob{li: li, d: li.m.Config}, nil
	}
	return nil, fmt.Errorf("%w: blob %s", ErrNotFound, h)
}

type localBlob struct {
	li *localImage
	d  v1.Descriptor
}

func (b *localBlob) Digest() (v1.Hash, error)            { return b.d.Digest, nil }
func (b *localBlob) Size() (int64, error)                { return b.d.Size, nil }
func (b *localBlob) MediaType() (types.MediaType, error) { return b.d.MediaType, nil }
func (b *localBlob) Compressed() (io.ReadCloser, error) {
	f, _, err := b.li.r.store.Open(b.li.ctx, blobKey(b.li.account, b.d.Digest.String()))
	return f, err
}
