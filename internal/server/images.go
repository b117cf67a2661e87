package server

import (
	"context"
	"os"
	"path/filepath"

	"github.com/kiln-dev/kiln/internal/keys"
	"github.com/kiln-dev/kiln/internal/registry"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/kiln-dev/kiln/internal/tier"
	"github.com/kiln-dev/kiln/internal/worker"
)

// imageStack is what image functions need in `kiln up`: the key service,
// the chunk store (memory LRU in front of the directory DATA/chunks, where
// a disk cache would only copy the same local disk; or memory and disk
// LRUs in front of an S3 bucket), the FUSE mounts of the images
// environments run, and Kiln's own registry.
type imageStack struct {
	*roles.Images
	registry *registry.Registry // Kiln's own, at /v2/ on the endpoint
}

// openImages opens the stack in dir. Environments run images only with a
// backend that gives them a root of their own (not the process backend) and
// with /dev/fuse.
func openImages(ctx context.Context, dir, archives, s3config string, sb worker.Sandbox, users registry.Authenticator, host string) (*imageStack, error) {
	ks, err := keys.Open(filepath.Join(dir, "keys", "master.key"))
	if err != nil {
		return nil, err
	}
	// No memory tier: the mounts' decrypted-chunk cache is the one in
	// memory (a second one of ciphertext held the same chunks again).
	var caches []roles.Tier
	var chunks roles.Tier
	if s3config == "" {
		d, err := tier.OpenDir(filepath.Join(dir, "chunks"))
		if err != nil {
			return nil, err
		}
		chunks = roles.Tier{Name: "store", Store: d}
	} else {
		if chunks, err = roles.S3Tier(ctx, s3config); err != nil {
			return nil, err
		}
		disk, err := tier.OpenDisk(filepath.Join(dir, "chunk-cache"), roles.DiskCacheBytes)
		if err != nil {
			return nil, err
		}
		caches = append(caches, roles.Tier{Name: "disk", Store: disk})
	}
	if archives == "" {
		archives = filepath.Join(dir, "image-archives")
	}
	scratch := filepath.Join(dir, "images-scratch")
	os.RemoveAll(scratch) // what an interrupted import left
	for _, d := range []string{archives, scratch} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	reg, err := registry.Open(filepath.Join(dir, "registry"), users)
	if err != nil {
		return nil, err
	}
	st := &imageStack{registry: reg, Images: roles.NewImages(roles.ImagesConfig{Keys: ks, Caches: caches, Store: chunks,
		MountDir: filepath.Join(dir, "images"), Sandbox: sb})}
	st.Store.Archives, st.Store.Scratch, st.Store.Local, st.Store.LocalHosts = archives, scratch, reg, []string{host}
	return st, nil
}
