package imagefs

import (
	"context"
	"log/slog"
	"sort"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kiln-dev/kiln/internal/flatten"
)

// node is one entry of the image.
type node struct {
	fs.Inode
	e         *flatten.Entry
	idx       int32 // e's index in the manifest
	c         *chunks
	rec       *recorder
	pace      *pacer
	readAhead int
	nlink     uint32
	// The sequential run of reads: where it started and where its last
	// read ended. Racing reads may mistake a run's length, not correctness.
	runStart, next atomic.Int64
}

var (
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeFlusher     = (*node)(nil)
	_ fs.NodeReader      = (*node)(nil)
	_ fs.NodeReadlinker  = (*node)(nil)
	_ fs.NodeGetxattrer  = (*node)(nil)
	_ fs.NodeListxattrer = (*node)(nil)
)

func (n *node) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e := n.e
	out.Mode = typeBits(e.Type) | e.Mode
	out.Size = uint64(e.Size)
	out.Blocks = (out.Size + 511) / 512
	out.Uid, out.Gid = uint32(e.UID), uint32(e.GID)
	out.Nlink = n.nlink
	out.Ino = e.Ino
	return 0
}

// Open answers ENOSYS to a read-only open: the kernel then opens every
// file of the mount without asking (FUSE's no_open), keeping its cached
// pages (contents never change), and an exec or open of a file costs no
// round trip to this process. Writes never get here (the mount is
// read-only); refused anyway.
func (n *node) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, 0, syscall.ENOSYS
}

// Flush answers ENOSYS: the kernel stops sending one at every close
// (no_flush); there is nothing to flush.
func (n *node) Flush(context.Context, fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

func (n *node) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	e := n.e
	if off >= e.Size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	n.c.stats.Reads.Add(1)
	end := min(off+int64(len(dest)), e.Size)
	// The answer is the chunks' own slices, written to the kernel as they
	// are (writev): a cached chunk is never changed, only dropped.
	out := make([][]byte, 0, 3)
	size := int64(0)
	if len(e.Chunks) > 0 {
		size = int64(e.Chunks[0].Len) // every chunk but the last is full
	}
	first, last := int(off/size), int((end-1)/size)
	n.rec.note(n.idx, first, last)
	for i := first; i <= last; i++ {
		n.pace.read(e.Chunks[i].ID)
	}
	for i := first + 1; i <= last; i++ { // fetched side by side, not one after another
		n.c.prefetch(e.Chunks[i])
	}
	for i := first; i <= last; i++ {
		p, err := n.c.get(ctx, e.Chunks[i])
		if err != nil {
			slog.Error("imagefs: chunk unavailable", "path", e.Path, "chunk", e.Chunks[i].ID, "err", err)
			return nil, syscall.EIO
		}
		lo, hi := int64(0), int64(len(p))
		if i == first {
			lo = off - int64(i)*size
		}
		if i == last {
			hi = end - int64(i)*size
		}
		out = append(out, p[lo:hi])
	}
	// Read ahead as a sequential run grows past one read, as the kernel
	// does: one chunk for every two the run has read beyond its first
	// maxRead bytes, up to ReadAhead. Scattered reads (a new run each, up
	// to maxRead long: a handler reading 1 MiB here and there) fetch
	// nothing they do not read.
	if n.next.Swap(end) != off {
		n.runStart.Store(off)
	}
	ahead := min(n.readAhead, int((end-n.runStart.Load()-maxRead)/(2*size)))
	for i := last + 1; i <= last+ahead && i < len(e.Chunks); i++ {
		n.c.prefetch(e.Chunks[i])
	}
	return fuse.ReadResultVector(out), 0
}

func (n *node) Readlink(context.Context) ([]byte, syscall.Errno) {
	if n.e.Type != flatten.Symlink {
		return nil, syscall.EINVAL
	}
	return []byte(n.e.Target), 0
}

func (n *node) Getxattr(_ context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.e.Xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	names := make([]string, 0, len(n.e.Xattrs))
	for k := range n.e.Xattrs {
		names = append(names, k)
	}
	sort.Strings(names)
	var b []byte
	for _, k := range names {
		b = append(append(b, k...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}
