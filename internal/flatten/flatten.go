// Package flatten merges the layers of an OCI image into one file tree,
// deterministically, as a list of entries whose file contents are handed to
// a callback (which chunks and stores them): the same files always give the
// same tree, so the same chunks.
//
// Layers apply in order with OCI's rules: a whiteout (.wh.NAME) removes NAME
// from the layers below, an opaque marker (.wh..wh..opq) removes a
// directory's lower contents, a later entry replaces an earlier one, and a
// directory over a directory only updates its metadata. Hard links keep one
// inode number per link group.
//
// Layers are hostile. Nothing is ever written to or resolved against the
// host: the tree is built in memory. Names that climb out of the root, and
// entries below a symbolic link (the classic way to write through a link),
// are refused; device nodes and FIFOs are dropped (the environment has its
// own /dev), setuid/setgid bits and every extended attribute outside user.*
// (file capabilities, SELinux labels) are stripped; symbolic links are kept
// verbatim, since the image is mounted as the environment's root and an
// absolute target resolves inside it. Entry count, unpacked size and name
// lengths are bounded.
//
// Modification times are not kept (every entry is at the epoch): two builds
// of the same files differ in them, and a tree that differs only there must
// give the same chunks.
package flatten

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/kiln-dev/kiln/internal/chunk"
)

// ErrHostile is returned (wrapped) for layer content that is refused.
var ErrHostile = errors.New("image content refused")

// Lambda's limit on a container image.
const (
	DefaultMaxBytes   = 10 << 30
	DefaultMaxEntries = 500_000
)

// Type is an entry's file type.
type Type string

const (
	Dir     Type = "dir"
	File    Type = "file"
	Symlink Type = "symlink"
)

// Entry is one file in the flattened tree.
type Entry struct {
	Path   string            `json:"path"` // relative, cleaned; "." is the root
	Type   Type              `json:"type"`
	Mode   uint32            `json:"mode"` // permission bits and sticky
	UID    int               `json:"uid"`
	GID    int               `json:"gid"`
	Size   int64             `json:"size,omitempty"`
	Target string            `json:"target,omitempty"` // of a symlink
	Xattrs map[string]string `json:"xattrs,omitempty"` // user.* only
	Chunks []chunk.Ref       `json:"chunks,omitempty"`
	Ino    uint64            `json:"ino"` // shared by hard links
}

// Limits bounds what a tree may hold; zero values mean the defaults.
type Limits struct {
	MaxBytes   int64 // total size of regular files
	MaxEntries int
}

// Report says what was neutralised.
type Report struct {
	DroppedSpecial int // device nodes, FIFOs
	StrippedSetID  int // setuid/setgid bits removed
	DroppedXattrs  int
}

// Layer is an image layer (go-containerregistry's v1.Layer satisfies it).
type Layer interface {
	Uncompressed() (io.ReadCloser, error)
}

// Content stores a regular file's content and returns its chunks.
type Content func(r io.Reader) ([]chunk.Ref, error)

type node struct {
	e        Entry
	children map[string]*node // of a directory
	link     *int             // shared by the members of a hard-link group
	layer    int
}

type flattener struct {
	lim     Limits
	content Content
	report  Report
	root    *node
	bytes   int64
	headers int
}

func hostile(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrHostile}, a...)...)
}

// Flatten merges layers (lowest first) into a tree whose entries are sorted
// (a directory before its contents, names in byte order).
func Flatten(layers []Layer, lim Limits, content Content) ([]Entry, Report, error) {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	if lim.MaxEntries <= 0 {
		lim.MaxEntries = DefaultMaxEntries
	}
	f := &flattener{lim: lim, content: content, root: newDir(-1)}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, f.report, fmt.Errorf("layer %d: %w", i, err)
		}
		err = f.layer(i, rc)
		rc.Close()
		if err != nil {
			return nil, f.report, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	var out []Entry
	inos := map[*int]uint64{}
	var walk func(p string, n *node)
	walk = func(p string, n *node) {
		e := n.e
		e.Path = p
		e.Ino = uint64(len(out) + 1)
		if n.link != nil {
			if ino, ok := inos[n.link]; ok {
				e.Ino = ino
			} else {
				inos[n.link] = e.Ino
			}
		}
		out = append(out, e)
		names := make([]string, 0, len(n.children))
		for name := range n.children {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			walk(path.Join(p, name), n.children[name])
		}
	}
	walk(".", f.root)
	if len(out) > lim.MaxEntries {
		return nil, f.report, hostile("%d files, more than the limit of %d", len(out), lim.MaxEntries)
	}
	return out, f.report, nil
}

func newDir(layer int) *node {
	return &node{e: Entry{Type: Dir, Mode: 0o755}, children: map[string]*node{}, layer: layer}
}

type pending struct {
	path string
	n    *node
}

func (f *flattener) layer(li int, r io.Reader) error {
	tr := tar.NewReader(r)
	var adds []pending
	var whiteouts, opaques []string
	byPath := map[string]*node{} // this layer's entries, for its hard links
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: bad tar: %v", ErrHostile, err)
		}
		if f.headers++; f.headers > 4*f.lim.MaxEntries {
			return hostile("more than %d entries in the layers", 4*f.lim.MaxEntries)
		}
		p, err := cleanPath(h.Name)
		if err != nil {
			return err
		}
		dir, base := path.Split(p)
		dir = path.Clean(dir)
		if base == ".wh..wh..opq" {
			opaques = append(opaques, dir)
			continue
		}
		if name, ok := strings.CutPrefix(base, ".wh."); ok {
			if name == "" || name == "." || name == ".." {
				return hostile("bad whiteout %q", h.Name)
			}
			whiteouts = append(whiteouts, path.Join(dir, name))
			continue
		}
		n, err := f.entry(li, h, tr, byPath)
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if n == nil {
			continue
		}
		byPath[p] = n
		adds = append(adds, pending{p, n})
	}
	for _, d := range opaques {
		if n, _ := f.lookup(d); n != nil && n.children != nil {
			n.children = map[string]*node{}
		}
	}
	for _, w := range whiteouts {
		if parent, _ := f.lookup(path.Dir(w)); parent != nil && parent.children != nil {
			delete(parent.children, path.Base(w))
		}
	}
	for _, a := range adds {
		if err := f.add(li, a.path, a.n); err != nil {
			return err
		}
	}
	return nil
}

// cleanPath turns a tar name into a clean relative path, refusing one that
// climbs out of the root.
func cleanPath(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", hostile("NUL in name %q", name)
	}
	if len(name) > 4096 {
		return "", hostile("name longer than 4096 bytes")
	}
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", hostile("%q climbs out of the image root", name)
	}
	for _, c := range strings.Split(p, "/") {
		if len(c) > 255 {
			return "", hostile("name component longer than 255 bytes in %q", name)
		}
	}
	return p, nil
}

// entry turns one tar header into a node, or nil for what is dropped.
func (f *flattener) entry(li int, h *tar.Header, r io.Reader, byPath map[string]*node) (*node, error) {
	if h.Uid < 0 || h.Gid < 0 {
		return nil, hostile("negative owner")
	}
	mode := uint32(h.Mode) & 0o7777
	if mode&0o6000 != 0 {
		f.report.StrippedSetID++
		mode &^= 0o6000
	}
	n := &node{layer: li, e: Entry{Mode: mode, UID: h.Uid, GID: h.Gid}}
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if !strings.HasPrefix(name, "user.") {
			f.report.DroppedXattrs++
			continue
		}
		if n.e.Xattrs == nil {
			n.e.Xattrs = map[string]string{}
		}
		n.e.Xattrs[name] = v
	}
	switch h.Typeflag {
	case tar.TypeDir:
		n.e.Type, n.children = Dir, map[string]*node{}
	case tar.TypeReg, tar.TypeRegA:
		if h.Size < 0 || f.bytes+h.Size > f.lim.MaxBytes {
			return nil, hostile("files larger than the limit of %d bytes", f.lim.MaxBytes)
		}
		f.bytes += h.Size
		refs, err := f.content(io.LimitReader(r, h.Size))
		if err != nil {
			return nil, err
		}
		n.e.Type, n.e.Size, n.e.Chunks = File, h.Size, refs
	case tar.TypeSymlink:
		if h.Linkname == "" || len(h.Linkname) > 4096 || strings.ContainsRune(h.Linkname, 0) {
			return nil, hostile("bad symlink target")
		}
		n.e.Type, n.e.Target, n.e.Size = Symlink, h.Linkname, int64(len(h.Linkname))
	case tar.TypeLink:
		target, err := cleanPath(h.Linkname)
		if err != nil {
			return nil, err
		}
		t := byPath[target]
		if t == nil {
			t, _ = f.lookup(target)
		}
		if t == nil || t.e.Type != File {
			return nil, hostile("hard link to %q, which is not a regular file", h.Linkname)
		}
		if t.link == nil {
			t.link = new(int)
		}
		// A hard link is the same inode: its metadata is the target's.
		n.e, n.link = t.e, t.link
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		f.report.DroppedSpecial++
		return nil, nil
	default:
		return nil, hostile("unsupported entry type %q", h.Typeflag)
	}
	return n, nil
}

// lookup walks p from the root without following symlinks; it returns nil
// for a missing path, and also the first symlink met on the way, if any.
func (f *flattener) lookup(p string) (*node, *node) {
	n := f.root
	if p == "." {
		return n, nil
	}
	for _, c := range strings.Split(p, "/") {
		if n.e.Type == Symlink {
			return nil, n
		}
		if n = n.children[c]; n == nil {
			return nil, nil
		}
	}
	return n, nil
}

// add puts n at p, making missing parents and replacing what was there.
func (f *flattener) add(li int, p string, n *node) error {
	if p == "." {
		if n.e.Type != Dir {
			return hostile("the root is not a directory")
		}
		n.children = f.root.children
		f.root = n
		return nil
	}
	parent := f.root
	comps := strings.Split(p, "/")
	for i, c := range comps[:len(comps)-1] {
		next := parent.children[c]
		switch {
		case next == nil:
			next = newDir(li)
			parent.children[c] = next
		case next.e.Type == Symlink:
			return hostile("%q is below the symbolic link %q", p, strings.Join(comps[:i+1], "/"))
		case next.e.Type != Dir:
			if next.layer == li {
				return hostile("%q is below the file %q", p, strings.Join(comps[:i+1], "/"))
			}
			next = newDir(li) // a lower layer's file replaced by a directory
			parent.children[c] = next
		}
		parent = next
	}
	name := comps[len(comps)-1]
	if old := parent.children[name]; old != nil && old.e.Type == Dir && n.e.Type == Dir {
		n.children = old.children // a directory over a directory keeps its contents
	}
	parent.children[name] = n
	return nil
}
