package imagefs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/kiln-dev/kiln/flatten"
	"github.com/kiln-dev/kiln/images"
)

// Mounter mounts each image a worker runs once, under Dir, shared by all its
// environments (the file system is read-only), until Close.
type Mounter struct {
	Store  *images.Store
	Dir    string
	Config Config

	mu     sync.Mutex
	mounts map[string]*mounted
}

type mounted struct {
	once sync.Once
	fs   *FS
	dir  string
	cfg  images.Config
	err  error
}

// Mount returns the root of account's image whose manifest is named
// manifest, mounting it on first use.
func (mt *Mounter) Mount(ctx context.Context, account, manifest string) (string, images.Config, error) {
	key := account + "/" + manifest
	mt.mu.Lock()
	if mt.mounts == nil {
		mt.mounts = map[string]*mounted{}
	}
	m := mt.mounts[key]
	if m == nil {
		m = &mounted{}
		mt.mounts[key] = m
	}
	mt.mu.Unlock()
	m.once.Do(func() { m.err = mt.mount(ctx, account, manifest, m) })
	if m.err != nil {
		mt.mu.Lock()
		delete(mt.mounts, key) // the next environment tries again
		mt.mu.Unlock()
	}
	return m.dir, m.cfg, m.err
}

func (mt *Mounter) mount(ctx context.Context, account, manifest string, m *mounted) error {
	man, err := mt.Store.Manifest(ctx, account, manifest)
	if err != nil {
		return err
	}
	if err := withMountPoints(man); err != nil {
		return err
	}
	h := sha256.Sum256([]byte(account + "/" + manifest))
	dir := filepath.Join(mt.Dir, hex.EncodeToString(h[:12]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("imagefs: %w", err)
	}
	fs, err := Mount(dir, man, mt.Store, mt.Config)
	if err != nil {
		return err
	}
	m.fs, m.dir, m.cfg = fs, dir, man.Config
	return nil
}

// withMountPoints adds the missing mount points to the manifest's root (an
// image with something else there was refused at import; checked again).
func withMountPoints(m *images.Manifest) error {
	if len(m.Entries) == 0 {
		return errors.New("imagefs: empty image")
	}
	present := map[string]flatten.Type{}
	var maxIno uint64
	for _, e := range m.Entries {
		present[e.Path] = e.Type
		maxIno = max(maxIno, e.Ino)
	}
	for _, mp := range images.MountPoints {
		switch t, ok := present[mp.Name]; {
		case !ok:
			maxIno++
			m.Entries = append(m.Entries, flatten.Entry{Path: mp.Name, Type: flatten.Dir, Mode: mp.Mode, Ino: maxIno})
		case t != flatten.Dir:
			return fmt.Errorf("imagefs: /%s in the image is a %s, not a directory", mp.Name, t)
		}
	}
	return nil
}

// Close unmounts every image.
func (mt *Mounter) Close() error {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	var errs []error
	for key, m := range mt.mounts {
		if m.fs != nil {
			errs = append(errs, m.fs.Unmount())
			os.Remove(m.dir)
		}
		delete(mt.mounts, key)
	}
	return errors.Join(errs...)
}
