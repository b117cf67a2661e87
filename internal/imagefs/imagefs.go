// Package imagefs presents an imported image as a read-only FUSE file system
// (go-fuse) that fetches a file's chunks on first read, not before: a
// function whose image is gigabytes starts after reading what its start
// touches. Each read fetches the chunks it covers and, while a file is read
// sequentially, starts fetching the chunks after it in the background (up to
// ReadAhead); decrypted chunks stay in a bounded in-memory LRU, and contents
// are immutable, so the kernel keeps them in its page cache across opens.
package imagefs

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/images"
)

// Source fetches and decrypts one chunk, checking it (images.Store).
type Source interface {
	Chunk(ctx context.Context, ref chunk.Ref) ([]byte, error)
}

// Config configures a mount; zero values work.
type Config struct {
	ReadAhead   int // most chunks fetched ahead of a sequential read; 4 when zero, -1 for none
	CacheChunks int // decrypted chunks kept in memory; 64 when zero
	// Cache, if set, is the decrypted-chunk cache the mount shares (a
	// worker's mounts: images sharing a base share its chunks), in place
	// of a cache of its own; CacheChunks is then its size.
	Cache *Cache
}

// Cache is a bounded LRU of decrypted chunks, keyed by chunk ID: a chunk's
// ID is the hash of its ciphertext, checked with its GCM tag when it came
// in, so any mount whose manifest names the ID reads the same plaintext
// (IDs of different scopes never meet: their keys differ).
type Cache struct{ c *chunks }

// NewCache returns a cache of n chunks (64 when zero) fetched from src.
func NewCache(src Source, n int) *Cache {
	if n <= 0 {
		n = 64
	}
	return &Cache{c: &chunks{src: src, max: n, byID: map[chunk.ID]*list.Element{}, inflight: map[chunk.ID]*fetch{}, stats: &Stats{}}}
}

// Stats counts what the cache fetched, for every mount sharing it.
func (c *Cache) Stats() *Stats { return c.c.stats }

// Stats counts what a mount (or the mounts sharing a cache) fetched.
type Stats struct {
	ChunksFetched, BytesFetched, Reads atomic.Int64
}

// FS is a mounted image.
type FS struct {
	server *fuse.Server
	dir    string
	m      *images.Manifest
	c      *chunks
	rec    *recorder
	pace   *pacer
	// ctx is the prefetch's; Unmount ends it with stopPrefetch.
	ctx          context.Context
	stopPrefetch context.CancelFunc
	Stats        *Stats
}

// maxRead is the most the kernel asks for in one read.
const maxRead = 1 << 20

// readAheadKB is a mount's read-ahead window. The kernel gives a FUSE mount
// the default 128 KiB (the init reply can only lower it), so a 1 MiB read()
// of pages not cached became eight 128 KiB requests, each sent once the one
// before it was answered: its chunks fetched one after another. With 2 MiB,
// a read of up to 2 MiB that misses with no sequential history before it is
// asked for exactly as read, in requests of up to maxRead sent together
// (async reads), so its chunks are fetched side by side; a sequential
// reader's windows ramp up to 2 MiB.
const readAheadKB = 2048

// widenReadAhead sets the read-ahead of the mount at dir (its backing
// device's, which the environments' clones of the mount share). Only root
// may: the mount works without it, slower.
func widenReadAhead(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(p, []byte(strconv.Itoa(readAheadKB)), 0)
}

// Mount presents m at dir (an existing empty directory) until Unmount.
func Mount(dir string, m *images.Manifest, src Source, cfg Config) (*FS, error) {
	if cfg.ReadAhead == 0 {
		cfg.ReadAhead = 4
	}
	if cfg.Cache == nil {
		cfg.Cache = NewCache(src, cfg.CacheChunks)
	}
	c, st := cfg.Cache.c, cfg.Cache.c.stats
	if len(m.Entries) == 0 || m.Entries[0].Path != "." {
		return nil, fmt.Errorf("imagefs: manifest has no root directory")
	}
	rec, pace := newRecorder(c.max/2), newPacer(prefetchAhead)
	r := &root{node: node{e: &m.Entries[0], c: c, rec: rec, pace: pace, readAhead: cfg.ReadAhead, nlink: 1}, m: m}
	forever := time.Hour // the image never changes under the kernel
	srv, err := fs.Mount(dir, r, &fs.Options{
		EntryTimeout:    &forever,
		AttrTimeout:     &forever,
		NegativeTimeout: &forever,
		MountOptions: fuse.MountOptions{
			FsName:            "kiln-image",
			Name:              "kilnimage",
			AllowOther:        true, // the environment's unprivileged user reads it
			Options:           []string{"ro", "default_permissions", "nosuid", "nodev"},
			DirectMountStrict: true, // no fusermount here: kiln runs as root
			// Requests of up to 1 MiB (go-fuse's default is 128 KiB): a page
			// fault or read that needs a chunk asks for more of it in one
			// round trip. The read-ahead window is widenReadAhead's.
			MaxWrite: maxRead,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("imagefs: mount %s: %w", dir, err)
	}
	if err := widenReadAhead(dir); err != nil {
		slog.Warn("imagefs: reads stay in the kernel's 128 KiB read-ahead window", "dir", dir, "err", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &FS{server: srv, dir: dir, m: m, c: c, rec: rec, pace: pace, ctx: ctx, stopPrefetch: stop, Stats: st}, nil
}

// WorkingSet ends the recording of the chunks reads needed since the
// mount, and returns them in the order first needed: the start's working
// set, at most half the chunk cache (a start that reads more, as a hostile
// one could, records no more than that).
func (f *FS) WorkingSet() []Touch { return f.rec.stop() }

// Prefetch starts fetching what a start is about to read, in the order it
// will read it, while the environment is being made rather than page fault
// by page fault once it runs: the chunks of the working set an earlier
// start recorded (WorkingSet), then those of the file at entrypoint
// (absolute in the image, or relative to dir; symbolic links followed),
// which every start executes. Up to half the chunk cache, two fetches at a
// time.
func (f *FS) Prefetch(set []Touch, dir, entrypoint string) {
	refs := refs(f.m.Entries, set)
	if entrypoint != "" {
		byPath := make(map[string]*flatten.Entry, len(f.m.Entries))
		for i := range f.m.Entries {
			byPath[f.m.Entries[i].Path] = &f.m.Entries[i]
		}
		if e := resolve(byPath, path.Join("/", dir, entrypoint)); e != nil && e.Type == flatten.File {
			refs = append(refs, e.Chunks...)
		}
	}
	seen := map[chunk.ID]bool{}
	var todo []chunk.Ref
	for _, r := range refs {
		if !seen[r.ID] && len(todo) < f.c.max/2 {
			seen[r.ID] = true
			todo = append(todo, r)
		}
	}
	f.c.prefetchInOrder(f.ctx, todo, prefetchWorkers, f.pace)
}

// A prefetch fetches prefetchWorkers chunks at a time, up to prefetchAhead
// chunks past the furthest of them a read has needed.
const prefetchWorkers, prefetchAhead = 2, 8

// resolve finds the entry at absolute path p, following symbolic links in
// every component (as the kernel would, in the image's root), or nil.
func resolve(byPath map[string]*flatten.Entry, p string) *flatten.Entry {
	rest := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	cur := "."
	for hops := 0; len(rest) > 0; {
		name := rest[0]
		rest = rest[1:]
		next := path.Join(cur, name)
		e := byPath[next]
		if e == nil {
			return nil
		}
		if e.Type != flatten.Symlink {
			if len(rest) == 0 {
				return e
			}
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return nil
		}
		target := e.Target
		if !path.IsAbs(target) {
			target = path.Join("/", cur, target)
		}
		rest = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), rest...)
		cur = "."
	}
	return byPath[cur]
}

// Unmount detaches the file system from dir at once. Environments that
// still have it (their own clones of the mount, in their mount namespaces,
// while they are being killed) keep it until they are gone; then the kernel
// ends the connection and the server with it. Waiting for that here could
// wait on an environment that is slow to die.
func (f *FS) Unmount() error {
	f.stopPrefetch()
	if err := syscall.Unmount(f.dir, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("imagefs: unmount %s: %w", f.dir, err)
	}
	return nil
}

type root struct {
	node
	m *images.Manifest
}

var _ fs.NodeOnAdder = (*root)(nil)

// OnAdd builds the whole tree at mount: entries are in the manifest already,
// so only file contents are lazy.
func (r *root) OnAdd(ctx context.Context) {
	dirs := map[string]*fs.Inode{".": &r.Inode}
	byIno := map[uint64]*fs.Inode{}
	for i := 1; i < len(r.m.Entries); i++ {
		e := &r.m.Entries[i]
		n := &node{e: e, idx: int32(i), c: r.c, rec: r.rec, pace: r.pace, readAhead: r.readAhead, nlink: 1}
		parent := dirs[path.Dir(e.Path)]
		if parent == nil {
			slog.Error("imagefs: entry without its directory", "path", e.Path)
			continue
		}
		in := byIno[e.Ino] // a hard link is the same inode
		if in == nil {
			in = parent.NewPersistentInode(ctx, n, fs.StableAttr{Mode: typeBits(e.Type), Ino: e.Ino})
			byIno[e.Ino] = in
		} else {
			in.Operations().(*node).nlink++ // before the mount serves anything
		}
		parent.AddChild(path.Base(e.Path), in, false)
		if e.Type == flatten.Dir {
			dirs[e.Path] = in
		}
	}
}

func typeBits(t flatten.Type) uint32 {
	switch t {
	case flatten.Dir:
		return syscall.S_IFDIR
	case flatten.Symlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}
