package imagefs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/images"
)

// Mounter mounts each image a worker runs once, under Dir, shared by its
// environments (the file system is read-only), and unmounts it when no
// environment has used it for Grace. Its mounts share one decrypted-chunk
// cache (Config.CacheChunks, 256 when zero): a chunk is hashed and
// decrypted once per worker while it stays cached, whichever image and
// mount read it.
//
// Each mount records the chunks read in its first RecordFor (the start of
// the environment that mounted it: its runtime's init and first invokes)
// into Sets, under the account and the image's digest; the image's next
// fresh mount on this worker prefetches them, with its entrypoint.
type Mounter struct {
	Store  *images.Store
	Dir    string
	Config Config
	// Grace is how long an image nobody uses stays mounted (its manifest
	// in memory, its chunks cached) for the next environment; 0 means a
	// minute.
	Grace time.Duration
	// Sets keeps the recorded working sets (one of its own when nil, as
	// long as the Mounter lives); RecordFor is how long after a mount its
	// reads are recorded, 10 s when zero.
	Sets      *WorkingSets
	RecordFor time.Duration

	mu     sync.Mutex
	mounts map[string]*mounted
	seq    int
	cache  *Cache
}

type mounted struct {
	once  sync.Once
	fs    *FS
	dir   string
	cfg   images.Config
	err   error
	users int         // environments holding it; guarded by Mounter.mu
	idle  *time.Timer // unmounts it once unused for Grace
	// record keeps the mount's working set (at RecordFor, or at unmount
	// if sooner).
	record func()
}

// Mount returns the root of account's image whose manifest is named
// manifest, mounting it on first use, and the release the environment
// calls when it no longer runs on it.
func (mt *Mounter) Mount(ctx context.Context, account, manifest string) (string, images.Config, func(), error) {
	key := account + "/" + manifest
	mt.mu.Lock()
	if mt.mounts == nil {
		mt.mounts = map[string]*mounted{}
	}
	m := mt.mounts[key]
	if m == nil {
		mt.seq++
		m = &mounted{dir: filepath.Join(mt.Dir, strconv.Itoa(mt.seq))}
		mt.mounts[key] = m
	}
	m.users++
	if m.idle != nil {
		m.idle.Stop() // an unmount that already began finds users and leaves it
		m.idle = nil
	}
	mt.mu.Unlock()
	m.once.Do(func() { m.err = mt.mount(ctx, account, manifest, m) })
	if m.err != nil {
		mt.mu.Lock()
		m.users--
		if mt.mounts[key] == m {
			delete(mt.mounts, key) // the next environment tries again
		}
		mt.mu.Unlock()
		return "", images.Config{}, nil, m.err
	}
	var once sync.Once
	return m.dir, m.cfg, func() { once.Do(func() { mt.release(key, m) }) }, nil
}

func (mt *Mounter) release(key string, m *mounted) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if m.users--; m.users > 0 {
		return
	}
	grace := mt.Grace
	if grace <= 0 {
		grace = time.Minute
	}
	m.idle = time.AfterFunc(grace, func() {
		mt.mu.Lock()
		if m.users > 0 || mt.mounts[key] != m {
			mt.mu.Unlock()
			return
		}
		delete(mt.mounts, key)
		mt.mu.Unlock()
		unmount(m)
	})
}

func unmount(m *mounted) error {
	m.record()
	err := m.fs.Unmount()
	os.Remove(m.dir)
	return err
}

func (mt *Mounter) mount(ctx context.Context, account, manifest string, m *mounted) error {
	man, err := mt.Store.Manifest(ctx, account, manifest)
	if err != nil {
		return err
	}
	if err := withMountPoints(man); err != nil {
		return err
	}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return fmt.Errorf("imagefs: %w", err)
	}
	mt.mu.Lock()
	if mt.cache == nil {
		mt.cache = NewCache(mt.Store, cmp.Or(mt.Config.CacheChunks, 256))
	}
	if mt.Sets == nil {
		mt.Sets = &WorkingSets{}
	}
	cfg, sets := mt.Config, mt.Sets
	cfg.Cache = mt.cache
	mt.mu.Unlock()
	fs, err := Mount(m.dir, man, mt.Store, cfg)
	if err != nil {
		return err
	}
	// Per account and digest: the same image imported again (another
	// manifest, the same entries) starts the same way, and no account's
	// set is ever applied to another's mount.
	key := account + "/" + man.Digest
	ep := ""
	if len(man.Config.Entrypoint) > 0 {
		ep = man.Config.Entrypoint[0]
	}
	fs.Prefetch(sets.get(key), man.Config.WorkingDir, ep)
	var once sync.Once
	m.record = func() { once.Do(func() { sets.put(key, fs.WorkingSet()) }) }
	time.AfterFunc(cmp.Or(mt.RecordFor, 10*time.Second), m.record)
	m.fs, m.cfg = fs, man.Config
	return nil
}

// BytesFetched returns the bytes of chunks the mounts fetched so far.
func (mt *Mounter) BytesFetched() int64 {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if mt.cache == nil {
		return 0
	}
	return mt.cache.Stats().BytesFetched.Load()
}

// Mounted returns how many images are mounted.
func (mt *Mounter) Mounted() int {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	return len(mt.mounts)
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
	var gone []*mounted
	for key, m := range mt.mounts {
		if m.idle != nil {
			m.idle.Stop()
		}
		if m.fs != nil {
			gone = append(gone, m)
		}
		delete(mt.mounts, key)
	}
	mt.mu.Unlock()
	var errs []error
	for _, m := range gone {
		errs = append(errs, unmount(m))
	}
	return errors.Join(errs...)
}
