package cluster

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/controlplane"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/keys"
	"github.com/kiln-dev/kiln/internal/registry"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/kiln-dev/kiln/internal/tier"
	"github.com/kiln-dev/kiln/internal/worker"
)

// The replicated buckets of container images: chunks and sealed manifests
// (tier's JetStream store), and Kiln's own registry (an object store).
const (
	chunkBucket    = "kiln-chunks"
	registryBucket = "kiln-registry"
)

func openChunks(ctx context.Context, js jetstream.JetStream, replicas int) (*tier.JetStream, error) {
	return tier.OpenJetStream(ctx, js, chunkBucket, replicas)
}

func openRegistryStore(ctx context.Context, js jetstream.JetStream, replicas int) (*registry.ObjectStore, error) {
	return registry.OpenObjectStore(ctx, js, registryBucket, replicas)
}

// images opens the image stack of a control plane (mountDir empty: it
// imports) or a worker (it runs images, reading through its disk cache,
// then its peers', then the bucket). A process without keys
// (keyService) has no image stack.
func (c roleConfig) images(ctx context.Context, nc *nats.Conn, sb worker.Sandbox, mountDir string) (*roles.Images, error) {
	ks, err := c.keyService(nc, mountDir != "")
	if err != nil {
		return nil, err
	}
	if ks == nil {
		c.Logger.Warn("no image key service: this process imports and runs no container images")
		return nil, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cfg := roles.ImagesConfig{Keys: ks, MountDir: mountDir, Sandbox: sb}
	if c.ImageS3 != "" {
		if cfg.Store, err = roles.S3Tier(ctx, c.ImageS3); err != nil {
			return nil, err
		}
	} else {
		var chunks *tier.JetStream
		if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
			chunks, err = openChunks(ctx, js, c.Replicas)
			return err
		}); err != nil {
			return nil, err
		}
		cfg.Store = roles.Tier{Name: "jetstream", Store: chunks}
	}
	if mountDir != "" {
		disk, err := tier.OpenDisk(filepath.Join(c.DataDir, "chunk-cache"), roles.DiskCacheBytes)
		if err != nil {
			return nil, err
		}
		// No memory tier: the mounts' decrypted-chunk cache is the one in
		// memory; peers are served from the disk cache, which holds
		// everything a memory tier would.
		peer, err := tier.NewPeer(nc, c.Name, disk)
		if err != nil {
			return nil, err
		}
		cfg.Caches = []roles.Tier{{Name: "disk", Store: disk}, {Name: "peer", Store: peer}}
	}
	return roles.NewImages(cfg), nil
}

// keyService is what a process's image stack asks for keys. A control
// plane holds the master secret (the image key of its identity) and
// answers the workers' unwraps over NATS; a worker holds no key and asks,
// signing with its certificate. Nil: the process has neither.
func (c roleConfig) keyService(nc *nats.Conn, worker bool) (images.KeyService, error) {
	if worker {
		if c.TLS == nil {
			return nil, nil
		}
		return keys.NewClient(nc, c.TLS), nil
	}
	if c.Identity.ImageKey == nil {
		return nil, nil
	}
	ks, err := keys.New(c.Identity.ImageKey)
	if err != nil {
		return nil, err
	}
	if c.TLS != nil {
		if _, err := keys.Serve(nc, keys.ServeConfig{Keys: ks, Verifier: c.TLS, Roles: []string{"worker"}, Logger: c.Logger}); err != nil {
			return nil, err
		}
	}
	return ks, nil
}

// registry opens Kiln's own registry over the replicated bucket, uploads
// under way in DATA/registry-uploads: every frontend serves it at /v2/,
// and control planes import from it.
func (c roleConfig) registry(ctx context.Context, js jetstream.JetStream, keyring *auth.Keyring) (*registry.Registry, error) {
	var store *registry.ObjectStore
	if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		store, err = openRegistryStore(ctx, js, c.Replicas)
		return err
	}); err != nil {
		return nil, err
	}
	return registry.New(store, filepath.Join(c.DataDir, "registry-uploads"), keyring)
}

// importer is a control plane's image importer: chunks and manifests into
// the replicated buckets, images from any registry or Kiln's own (archives
// are refused: an operator's directory is on one host).
func (c roleConfig) importer(ctx context.Context, nc *nats.Conn, keyring *auth.Keyring) (controlplane.ImageImporter, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	imgs, err := c.images(ctx, nc, nil, "")
	if imgs == nil || err != nil {
		return nil, err
	}
	reg, err := c.registry(ctx, js, keyring)
	if err != nil {
		return nil, err
	}
	scratch := filepath.Join(c.DataDir, "images-scratch")
	os.RemoveAll(scratch) // what an interrupted import left
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return nil, err
	}
	imgs.Store.Scratch, imgs.Store.Local, imgs.Store.LocalHosts = scratch, reg, c.RegistryHosts
	return imgs.Store, nil
}
