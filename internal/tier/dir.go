package tier

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Dir stores blobs as files in a directory, DIR/ab/abcdef…: the default
// authoritative store. Files are written under a temporary name and renamed,
// so a reader never sees half a blob.
type Dir struct{ root string }

// OpenDir opens (creating) a Dir store at root.
func OpenDir(root string) (*Dir, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("tier: %w", err)
	}
	return &Dir{root: root}, nil
}

func (d *Dir) path(name string) string { return filepath.Join(d.root, name[:2], name) }

func (d *Dir) Get(_ context.Context, name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return b, err
}

func (d *Dir) Put(_ context.Context, name string, data []byte) error {
	_, err := d.put(name, data)
	return err
}

// put writes the blob unless present and says whether it wrote it.
func (d *Dir) put(name string, data []byte) (bool, error) {
	if err := validName(name); err != nil {
		return false, err
	}
	p := d.path(name)
	if _, err := os.Stat(p); err == nil {
		// Put again: a sweep's grace period counts from now, as for a
		// blob written now (an import under way reuses it).
		now := time.Now()
		if err := os.Chtimes(p, now, now); !errors.Is(err, fs.ErrNotExist) {
			return false, err
		} // swept meanwhile: written anew
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return false, err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return false, err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return false, fmt.Errorf("tier: put %s: %w", name, err)
	}
	return true, nil
}

func (d *Dir) Delete(_ context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := os.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// List walks the directory; a blob's write time is its file's
// modification time, which a Put again renews.
func (d *Dir) List(ctx context.Context) iter.Seq2[Blob, error] {
	return func(yield func(Blob, error) bool) {
		stop := errors.New("stopped")
		err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			if name, ok := strings.CutPrefix(e.Name(), sweepPrefix); ok && validName(name) == nil {
				// A Remove cut short by a crash: kept, in doubt, unless
				// written anew meanwhile (then listed on its own).
				if _, err := os.Stat(d.path(name)); err == nil {
					return os.Remove(p)
				}
				if err := os.Rename(p, d.path(name)); err != nil {
					return err
				}
				p = d.path(name)
			} else if validName(e.Name()) != nil {
				return nil
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			info, err := os.Stat(p)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if !yield(Blob{Name: filepath.Base(p), Size: info.Size(), Written: info.ModTime()}, nil) {
				return stop
			}
			return nil
		})
		if err != nil && err != stop {
			yield(Blob{}, fmt.Errorf("tier: list: %w", err))
		}
	}
}

// sweepPrefix names a blob Remove set aside (never a valid name).
const sweepPrefix = ".sweep-"

// Remove renames the blob aside, then looks at its time: a Put again
// before the rename renewed it (it goes back), and one after finds it gone
// and writes it anew; so a blob reused by an import is never lost.
func (d *Dir) Remove(_ context.Context, b Blob) (bool, error) {
	if err := validName(b.Name); err != nil {
		return false, err
	}
	p := d.path(b.Name)
	aside := filepath.Join(filepath.Dir(p), sweepPrefix+b.Name)
	if err := os.Rename(p, aside); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	info, err := os.Stat(aside)
	if err == nil && info.ModTime().Equal(b.Written) {
		return true, os.Remove(aside)
	}
	// Put again since it was listed: back, unless a Put wrote it anew.
	if _, serr := os.Stat(p); serr == nil {
		return false, os.Remove(aside)
	}
	return false, os.Rename(aside, p)
}

// Size returns the bytes of all blobs stored: what deduplication saves is
// measured here.
func (d *Dir) Size() (int64, error) {
	var n int64
	err := filepath.WalkDir(d.root, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		info, err := e.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}

// Disk is a worker-local LRU cache on disk holding at most MaxBytes of blobs.
// What it held before a restart is found again at open, oldest first.
type Disk struct {
	dir *Dir
	max int64

	mu    sync.Mutex
	lru   list.List // of diskEntry, most recent first
	byKey map[string]*list.Element
	size  int64
}

type diskEntry struct {
	name string
	size int64
}

// OpenDisk opens (creating) a disk cache at root bounded to maxBytes.
func OpenDisk(root string, maxBytes int64) (*Disk, error) {
	d, err := OpenDir(root)
	if err != nil {
		return nil, err
	}
	c := &Disk{dir: d, max: maxBytes, byKey: map[string]*list.Element{}}
	type found struct {
		diskEntry
		mod int64
	}
	var all []found
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if validName(e.Name()) != nil {
			return os.Remove(p) // a temporary file of an interrupted put
		}
		info, err := e.Info()
		if err == nil {
			all = append(all, found{diskEntry{e.Name(), info.Size()}, info.ModTime().UnixNano()})
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tier: %w", err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].mod > all[j].mod })
	for _, f := range all { // newest in front
		c.byKey[f.name] = c.lru.PushBack(f.diskEntry)
		c.size += f.size
	}
	c.mu.Lock()
	c.evict()
	c.mu.Unlock()
	return c, nil
}

func (c *Disk) Get(ctx context.Context, name string) ([]byte, error) {
	b, err := c.dir.Get(ctx, name)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[name]; ok {
		if err == nil {
			c.lru.MoveToFront(e)
		} else if errors.Is(err, ErrNotFound) { // removed behind the cache's back
			c.remove(e)
		}
	}
	return b, err
}

func (c *Disk) Put(_ context.Context, name string, data []byte) error {
	if int64(len(data)) > c.max {
		return validName(name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[name]; ok {
		c.lru.MoveToFront(e)
		return nil
	}
	if _, err := c.dir.put(name, data); err != nil {
		return err
	}
	c.byKey[name] = c.lru.PushFront(diskEntry{name, int64(len(data))})
	c.size += int64(len(data))
	c.evict()
	return nil
}

func (c *Disk) Delete(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[name]; ok {
		c.remove(e)
	}
	return c.dir.Delete(ctx, name)
}

// evict removes least recently used blobs until the cache fits; c.mu held.
func (c *Disk) evict() {
	for c.size > c.max {
		e := c.lru.Back()
		_ = c.dir.Delete(context.Background(), e.Value.(diskEntry).name)
		c.remove(e)
	}
}

func (c *Disk) remove(e *list.Element) {
	de := c.lru.Remove(e).(diskEntry)
	delete(c.byKey, de.name)
	c.size -= de.size
}

// Size returns the bytes held.
func (c *Disk) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
