// Package codestore is Kiln's authoritative store of function code: the
// deployment packages (zip files) uploaded through the control plane, kept
// content-addressed in a local directory, each next to its unpacked tree.
//
// Uploaded zips are untrusted. Put validates a zip completely before anything
// of it becomes visible: entry names must stay inside the tree, only regular
// files, directories and symbolic links that resolve inside the tree are
// allowed, and the unzipped size is counted from the bytes actually
// decompressed, so a zip bomb is refused however its headers lie. Stage
// does the checks of the zip's directory at once and leaves decompressing
// and unpacking to Dir (the control plane's Pending functions).
//
// Layout under Config.Dir:
//
//	zips/<hex sha256>.zip   the package as uploaded (what GetFunction's Code.Location serves)
//	trees/<hex sha256>/     the unpacked package: files 0444, or 0555 when executable
//	tmp/                    work in progress; emptied by Open
//	opt/                    functions' layers merged (see Layers); emptied by Open
//
// Open also removes trees without their zip (a Put cut short); packages no
// function references are deleted by Sweep.
//
// Every file and tree is written under tmp/ and renamed into place, so readers
// never see a partial package and concurrent Puts of the same zip are safe.
//
// In a cluster the directory is a cache of a Remote (JetStream's replicated
// object store): Put returns only once the Remote holds the zip, so metadata
// written after it never names code that a control plane's death could lose,
// and a package missing here is fetched from the Remote by its digest.
package codestore

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/tier"
)

// Lambda's limits for a deployment package.
const (
	DefaultMaxZipped   = 50 << 20  // 52428800 bytes, a direct upload
	DefaultMaxUnzipped = 262144000 // 250 MB, the unzipped package
	// DefaultMaxEntries bounds the entries (files, directories, links) of
	// a package, so that a 50 MB zip of empty entries cannot unpack into a
	// million inodes. Lambda documents no number; 65,535 is the most a zip
	// without ZIP64 records holds, well above large node_modules trees.
	DefaultMaxEntries = 65535
)

// ErrNotFound is returned (wrapped) for code that is not in the store.
var ErrNotFound = errors.New("codestore: code not found")

// Config configures a Store.
type Config struct {
	Dir         string
	MaxZipped   int64 // 0 means DefaultMaxZipped
	MaxUnzipped int64 // 0 means DefaultMaxUnzipped
	MaxEntries  int   // 0 means DefaultMaxEntries
	// Remote, when set, is the replicated store this directory caches.
	Remote Remote
}

// Remote keeps zips by hex digest beyond this process's disk.
type Remote interface {
	// Put stores zip under its digest; storing it again is cheap.
	Put(ctx context.Context, hexDigest string, zip []byte) error
	// Get returns the zip; ErrNotFound (wrapped) if it is not there.
	Get(ctx context.Context, hexDigest string) ([]byte, error)
}

// Code identifies a stored package the way Lambda reports it.
type Code struct {
	// Sha256 is the standard base64 of the SHA-256 of the zip: Lambda's CodeSha256.
	Sha256 string
	// Size is the zip's size in bytes: Lambda's CodeSize.
	Size int64
	// Unzipped is the size of its files once unpacked (set by Stage).
	Unzipped int64
}

// Store is a content-addressed code store in a local directory.
type Store struct {
	cfg              Config
	zips, trees, tmp string

	// maxName bounds an entry's name so that its unpacked path on the host,
	// trees/<hex sha256>/name, stays within PATH_MAX (a runtime under the
	// process backend opens it by that path).
	maxName int

	mu    sync.Mutex
	sizes map[string]int64 // hex digest → zip size, for TotalSize
	total int64

	fetching map[string]chan struct{} // hex digest → closed when its download ends
}

// Open opens (creating if needed) the store in cfg.Dir and clears leftovers
// of interrupted writes.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("codestore: no directory")
	}
	if cfg.MaxZipped <= 0 {
		cfg.MaxZipped = DefaultMaxZipped
	}
	if cfg.MaxUnzipped <= 0 {
		cfg.MaxUnzipped = DefaultMaxUnzipped
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	s := &Store{cfg: cfg, zips: filepath.Join(cfg.Dir, "zips"), trees: filepath.Join(cfg.Dir, "trees"),
		tmp: filepath.Join(cfg.Dir, "tmp"), sizes: map[string]int64{}, fetching: map[string]chan struct{}{}}
	if abs, err := filepath.Abs(s.trees); err == nil {
		s.maxName = min(maxNameLen, pathMax-1-len(abs)-1-sha256.Size*2-1)
	}
	for _, d := range []string{s.tmp, filepath.Join(cfg.Dir, optDirName)} { // work and caches of earlier runs
		if err := removeAll(d); err != nil {
			return nil, fmt.Errorf("codestore: clearing %s: %w", d, err)
		}
	}
	for _, d := range []string{s.zips, s.trees, s.tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("codestore: %w", err)
		}
	}
	ents, err := os.ReadDir(s.zips)
	if err != nil {
		return nil, fmt.Errorf("codestore: %w", err)
	}
	for _, e := range ents {
		h, ok := strings.CutSuffix(e.Name(), ".zip")
		if !ok || !isHexDigest(h) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		s.sizes[h] = fi.Size()
		s.total += fi.Size()
	}
	// A tree whose zip is missing was unpacked by a Put that did not
	// finish (the zip is written last); without its zip it is no package.
	trees, err := os.ReadDir(s.trees)
	if err != nil {
		return nil, fmt.Errorf("codestore: %w", err)
	}
	for _, e := range trees {
		if _, ok := s.sizes[e.Name()]; !ok {
			if err := removeAll(filepath.Join(s.trees, e.Name())); err != nil {
				return nil, fmt.Errorf("codestore: %w", err)
			}
		}
	}
	return s, nil
}

// Digest is Lambda's CodeSha256 of a zip.
func Digest(zip []byte) string {
	sum := sha256.Sum256(zip)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// HexOf converts a CodeSha256 (standard base64) to the hex digest the store
// names files by.
func HexOf(sha string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(sha)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("%w: malformed CodeSha256 %q", ErrNotFound, sha)
	}
	return hex.EncodeToString(b), nil
}

// ShaOf converts a hex digest back to a CodeSha256.
func ShaOf(hexDigest string) (string, error) {
	b, err := hex.DecodeString(hexDigest)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("%w: malformed digest %q", ErrNotFound, hexDigest)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func isHexDigest(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && hex.EncodeToString(b) == s
}

func (s *Store) zipPath(h string) string  { return filepath.Join(s.zips, h+".zip") }
func (s *Store) treePath(h string) string { return filepath.Join(s.trees, h) }

// Put validates zip, keeps it and unpacks it. Putting a zip that is already
// stored only refreshes its modification time (see Sweep). Validation
// failures are *api.Error InvalidParameterValueException with Lambda's messages.
func (s *Store) Put(ctx context.Context, zip []byte) (Code, error) {
	code, err := s.putLocal(ctx, zip)
	if err != nil || s.cfg.Remote == nil {
		return code, err
	}
	h, _ := HexOf(code.Sha256)
	if err := s.cfg.Remote.Put(ctx, h, zip); err != nil {
		return Code{}, fmt.Errorf("codestore: replicating %s: %w", code.Sha256, err)
	}
	return code, nil
}

func (s *Store) putLocal(ctx context.Context, zip []byte) (Code, error) {
	if int64(len(zip)) > s.cfg.MaxZipped {
		return Code{}, s.zippedTooLarge(len(zip))
	}
	sum := sha256.Sum256(zip)
	h := hex.EncodeToString(sum[:])
	code := Code{Sha256: base64.StdEncoding.EncodeToString(sum[:]), Size: int64(len(zip))}
	now := time.Now()
	if err := os.Chtimes(s.zipPath(h), now, now); err == nil {
		// Already stored (and so already validated); make sure the tree is there.
		_, err := s.dirLocal(ctx, h)
		return code, err
	}
	if err := s.unpack(ctx, zip, h); err != nil {
		return Code{}, err
	}
	if err := s.writeZip(zip, h); err != nil {
		return Code{}, err
	}
	return code, nil
}

// Stage checks zip as Put does from its directory (size, names, types,
// links, declared sizes: what a caller can get wrong, answered at once) and
// keeps it, in the Remote too, but leaves decompressing and unpacking it to
// Dir: a function is Pending meanwhile. Go's zip reader holds every entry to
// its declared size, so what Stage counts is what Dir unpacks; a package
// whose data does not match its directory is found there (badZip).
func (s *Store) Stage(ctx context.Context, zip []byte) (Code, error) {
	if int64(len(zip)) > s.cfg.MaxZipped {
		return Code{}, s.zippedTooLarge(len(zip))
	}
	_, ents, err := s.validate(ctx, zip)
	if err != nil {
		return Code{}, err
	}
	sum := sha256.Sum256(zip)
	h := hex.EncodeToString(sum[:])
	code := Code{Sha256: base64.StdEncoding.EncodeToString(sum[:]), Size: int64(len(zip)), Unzipped: unzipped(ents)}
	now := time.Now()
	if err := os.Chtimes(s.zipPath(h), now, now); err != nil {
		if err := s.writeZip(zip, h); err != nil {
			return Code{}, err
		}
	}
	if s.cfg.Remote != nil {
		if err := s.cfg.Remote.Put(ctx, h, zip); err != nil {
			return Code{}, fmt.Errorf("codestore: replicating %s: %w", code.Sha256, err)
		}
	}
	return code, nil
}

// Unpack unpacks a staged zip from its bytes, as Dir would from the copy
// it reads back (the control plane's import of a zip it just staged).
func (s *Store) Unpack(ctx context.Context, zip []byte) error {
	sum := sha256.Sum256(zip)
	h := hex.EncodeToString(sum[:])
	if fi, err := os.Lstat(s.treePath(h)); err == nil && fi.IsDir() {
		return nil
	}
	return s.unpack(ctx, zip, h)
}

// Check validates zip exactly as Put does, decompressing every entry, but
// keeps nothing (UpdateFunctionCode's DryRun).
func (s *Store) Check(ctx context.Context, zip []byte) (Code, error) {
	if int64(len(zip)) > s.cfg.MaxZipped {
		return Code{}, s.zippedTooLarge(len(zip))
	}
	zr, ents, err := s.validate(ctx, zip)
	if err != nil {
		return Code{}, err
	}
	if err := s.extract(ctx, zr, ents, nil); err != nil {
		return Code{}, err
	}
	return Code{Sha256: Digest(zip), Size: int64(len(zip)), Unzipped: unzipped(ents)}, nil
}

// unzipped is the size of the files of a validated package.
func unzipped(ents []*entry) int64 {
	var n int64
	for _, e := range ents {
		if e.kind == regular {
			n += int64(e.f.UncompressedSize64)
		}
	}
	return n
}

// Has reports whether the package is stored in this directory.
func (s *Store) Has(sha string) bool {
	h, err := HexOf(sha)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sizes[h]
	return ok
}

// Open opens the stored zip for reading (downloads).
func (s *Store) Open(ctx context.Context, sha string) (*os.File, error) {
	h, err := HexOf(sha)
	if err != nil {
		return nil, err
	}
	if err := s.fetch(ctx, h); err != nil {
		return nil, err
	}
	f, err := os.Open(s.zipPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, sha)
	}
	return f, err
}

// fetch brings a package the directory lacks from the Remote, once however
// many ask for it at a time.
func (s *Store) fetch(ctx context.Context, h string) error {
	if s.cfg.Remote == nil {
		return nil
	}
	for {
		if _, err := os.Stat(s.zipPath(h)); err == nil {
			return nil
		}
		s.mu.Lock()
		busy, ok := s.fetching[h]
		if !ok {
			s.fetching[h] = make(chan struct{})
		}
		s.mu.Unlock()
		if !ok {
			break
		}
		select { // then look again: the download may have failed
		case <-busy:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() {
		s.mu.Lock()
		close(s.fetching[h])
		delete(s.fetching, h)
		s.mu.Unlock()
	}()
	return s.download(ctx, h)
}

// download gets a package from the Remote and validates it as an upload
// (the Remote is shared, so trusted no more than a client).
func (s *Store) download(ctx context.Context, h string) error {
	zip, err := s.cfg.Remote.Get(ctx, h)
	if err != nil {
		return fmt.Errorf("codestore: fetching %s: %w", h, err)
	}
	if sum := sha256.Sum256(zip); hex.EncodeToString(sum[:]) != h {
		return fmt.Errorf("codestore: fetched %s does not match its digest", h)
	}
	_, err = s.putLocal(ctx, zip)
	return err
}

// Dir returns the directory holding the unpacked package, unpacking it
// again from the zip if the tree is missing. Its files are read-only.
func (s *Store) Dir(ctx context.Context, sha string) (string, error) {
	h, err := HexOf(sha)
	if err != nil {
		return "", err
	}
	return s.dir(ctx, h)
}

func (s *Store) dir(ctx context.Context, h string) (string, error) {
	if err := s.fetch(ctx, h); err != nil {
		return "", err
	}
	return s.dirLocal(ctx, h)
}

func (s *Store) dirLocal(ctx context.Context, h string) (string, error) {
	tree := s.treePath(h)
	if _, err := os.Stat(s.zipPath(h)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: %s", ErrNotFound, h)
		}
		return "", fmt.Errorf("codestore: %w", err)
	}
	if fi, err := os.Lstat(tree); err == nil && fi.IsDir() {
		return tree, nil
	}
	zip, err := os.ReadFile(s.zipPath(h))
	if err != nil {
		return "", fmt.Errorf("codestore: %w", err)
	}
	if sum := sha256.Sum256(zip); hex.EncodeToString(sum[:]) != h {
		return "", fmt.Errorf("codestore: %s is corrupt (digest mismatch)", s.zipPath(h))
	}
	if err := s.unpack(ctx, zip, h); err != nil {
		return "", err
	}
	return tree, nil
}

// Delete removes a package and its tree. Deleting what is not stored is not an error.
func (s *Store) Delete(ctx context.Context, sha string) error {
	h, err := HexOf(sha)
	if err != nil {
		return err
	}
	return s.delete(h)
}

func (s *Store) delete(h string) error {
	// The zip goes first: without it the package does not exist (see dir).
	if err := os.Remove(s.zipPath(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("codestore: %w", err)
	}
	s.mu.Lock()
	if size, ok := s.sizes[h]; ok {
		s.total -= size
		delete(s.sizes, h)
	}
	s.mu.Unlock()
	// Move the tree out of sight atomically, then remove it.
	trash, err := os.MkdirTemp(s.tmp, "delete-")
	if err != nil {
		return fmt.Errorf("codestore: %w", err)
	}
	if err := os.Rename(s.treePath(h), filepath.Join(trash, "tree")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("codestore: %w", err)
	}
	return removeAll(trash)
}

// Sweep deletes every stored package that keep rejects and that was last
// Put before notAfter (the grace period protects a package that was just
// uploaded for a function whose metadata is not written yet), here and
// from a Remote that can be swept (tier.Lister: the cluster's bucket). It
// returns what it deleted from the authoritative store: the Remote when
// there is one, else this directory.
func (s *Store) Sweep(ctx context.Context, keep func(sha string) bool, notAfter time.Time) (tier.Swept, error) {
	keepHex := func(h string) bool {
		sha, _ := ShaOf(h)
		return keep(sha)
	}
	var remote tier.Swept
	if l, ok := s.cfg.Remote.(tier.Lister); ok {
		var err error
		if remote, err = tier.Sweep(ctx, l, func(all []tier.Blob) []tier.Blob { return tier.Doomed(all, keepHex, notAfter) }); err != nil {
			return remote, fmt.Errorf("codestore: sweeping the remote: %w", err)
		}
	}
	s.mu.Lock()
	hexes := make([]string, 0, len(s.sizes))
	for h := range s.sizes {
		hexes = append(hexes, h)
	}
	s.mu.Unlock()
	var local tier.Swept
	for _, h := range hexes {
		if err := ctx.Err(); err != nil {
			return local, err
		}
		if keepHex(h) {
			continue
		}
		fi, err := os.Stat(s.zipPath(h))
		if err != nil || fi.ModTime().After(notAfter) {
			continue
		}
		if err := s.delete(h); err != nil {
			return local, err
		}
		local.Blobs++
		local.Bytes += fi.Size()
	}
	if local.Blobs > 0 {
		if err := s.sweepLayers(func(sha string) bool { return s.Has(sha) }); err != nil {
			return local, err
		}
	}
	if s.cfg.Remote != nil {
		return remote, nil
	}
	return local, nil
}

// TotalSize is the size of all stored zips, what counts against an
// account's code storage.
func (s *Store) TotalSize() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// writeZip stores zip as zips/<h>.zip through a temporary file.
func (s *Store) writeZip(zip []byte, h string) error {
	f, err := os.CreateTemp(s.tmp, "zip-")
	if err != nil {
		return fmt.Errorf("codestore: %w", err)
	}
	_, werr := f.Write(zip)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(f.Name(), 0o444)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("codestore: writing zip: %w", err)
	}
	if err := os.Rename(f.Name(), s.zipPath(h)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("codestore: %w", err)
	}
	s.mu.Lock()
	if _, ok := s.sizes[h]; !ok {
		s.sizes[h] = int64(len(zip))
		s.total += int64(len(zip))
	}
	s.mu.Unlock()
	return nil
}

// unpack validates zip and unpacks it into trees/<h> through a temporary
// directory. If another Put got there first, its tree is kept.
func (s *Store) unpack(ctx context.Context, zip []byte, h string) error {
	zr, ents, err := s.validate(ctx, zip)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(s.tmp, "unpack-")
	if err != nil {
		return fmt.Errorf("codestore: %w", err)
	}
	defer removeAll(work)
	dst := filepath.Join(work, "tree")
	if err := os.Mkdir(dst, 0o755); err != nil {
		return fmt.Errorf("codestore: %w", err)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("codestore: %w", err)
	}
	err = s.extract(ctx, zr, ents, root)
	root.Close()
	if err != nil {
		return err
	}
	if err := os.Rename(dst, s.treePath(h)); err != nil {
		if fi, serr := os.Lstat(s.treePath(h)); serr == nil && fi.IsDir() {
			return nil // a concurrent Put of the same zip won
		}
		return fmt.Errorf("codestore: %w", err)
	}
	return nil
}

// Lambda's answers for bad packages.
func badZip() *api.Error {
	return api.Errorf(api.InvalidParameterValue, "Could not unzip uploaded file. Please check your file, then try to upload again.")
}

func (s *Store) unzippedTooLarge() *api.Error {
	return api.Errorf(api.InvalidParameterValue, "Unzipped size must be smaller than %d bytes", s.cfg.MaxUnzipped)
}

func (s *Store) zippedTooLarge(n int) *api.Error {
	return api.Errorf(api.RequestEntityTooLarge, "Zipped size %d bytes exceeds the maximum of %d bytes for a deployment package uploaded directly.", n, s.cfg.MaxZipped)
}

type kind int

const (
	regular kind = iota
	directory
	symlink
)

// entry is one validated zip entry.
type entry struct {
	f      *zip.File
	name   string // cleaned, slash-separated, relative
	kind   kind
	perm   fs.FileMode // 0444 or 0555 for files
	target string      // symlinks
}

const (
	pathMax      = 4096 // Linux's PATH_MAX, with its terminating NUL
	maxNameLen   = 4096
	maxLinkLen   = 4095
	maxLinkHops  = 40
	maxComponent = 255
)

// validate reads the zip's directory and checks every entry without
// writing anything: names, types, modes, duplicates, symlink targets, and the
// declared unzipped size (extract then enforces the actual size).
func (s *Store) validate(ctx context.Context, data []byte) (*zip.Reader, []*entry, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, nil, badZip()
	}
	if len(zr.File) > s.cfg.MaxEntries {
		return nil, nil, api.Errorf(api.InvalidParameterValue, "Deployment package has %d entries, more than the maximum of %d.", len(zr.File), s.cfg.MaxEntries)
	}
	var declared uint64
	for _, f := range zr.File {
		declared += f.UncompressedSize64
		if f.UncompressedSize64 > uint64(s.cfg.MaxUnzipped) || declared > uint64(s.cfg.MaxUnzipped) {
			return nil, nil, s.unzippedTooLarge()
		}
	}
	byName := make(map[string]*entry, len(zr.File))
	ents := make([]*entry, 0, len(zr.File))
	for _, f := range zr.File {
		e, err := classify(f)
		if err != nil {
			return nil, nil, err
		}
		if e == nil {
			continue // the root directory itself ("./")
		}
		if len(e.name) > s.maxName {
			return nil, nil, badZip()
		}
		if byName[e.name] != nil {
			return nil, nil, badZip() // duplicate entry
		}
		byName[e.name] = e
		ents = append(ents, e)
	}
	// No entry may live under a file or a symlink (that would write through it).
	for _, e := range ents {
		for p := path.Dir(e.name); p != "."; p = path.Dir(p) {
			if a := byName[p]; a != nil && a.kind != directory {
				return nil, nil, badZip()
			}
		}
	}
	for _, e := range ents {
		if e.kind != symlink {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		target, err := readSmall(e.f, maxLinkLen)
		if err != nil {
			return nil, nil, badZip()
		}
		e.target = string(target)
		if e.target == "" || strings.ContainsRune(e.target, 0) || strings.HasPrefix(e.target, "/") || strings.Contains(e.target, `\`) {
			return nil, nil, badZip()
		}
	}
	for _, e := range ents {
		if e.kind == symlink && !staysInside(byName, e) {
			return nil, nil, badZip()
		}
	}
	return zr, ents, nil
}

// classify checks one entry's name and type. It returns nil, nil for an
// entry naming the root directory.
func classify(f *zip.File) (*entry, error) {
	name := f.Name
	if name == "" || len(name) > maxNameLen || strings.ContainsAny(name, "\x00\\") ||
		strings.HasPrefix(name, "/") || len(name) >= 2 && name[1] == ':' {
		return nil, badZip()
	}
	if f.Flags&0x1 != 0 { // encrypted
		return nil, badZip()
	}
	mode := f.Mode()
	isDir := strings.HasSuffix(name, "/") || mode.IsDir()
	var parts []string
	for _, c := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		switch {
		case c == ".":
			continue
		case c == "" || c == ".." || len(c) > maxComponent:
			return nil, badZip()
		}
		parts = append(parts, c)
	}
	if len(parts) == 0 {
		if !isDir {
			return nil, badZip()
		}
		return nil, nil
	}
	e := &entry{f: f, name: strings.Join(parts, "/")}
	switch {
	case isDir:
		if mode.Type()&^fs.ModeDir != 0 || f.UncompressedSize64 != 0 {
			return nil, badZip()
		}
		e.kind = directory
	case mode.Type() == fs.ModeSymlink:
		e.kind = symlink
	case mode.Type() == 0:
		e.kind = regular
		exec := mode.Perm()&0o111 != 0
		if !hasUnixMode(f) && e.name == "bootstrap" {
			exec = true // zipped on Windows: nothing says bootstrap is executable, but it must be
		}
		e.perm = 0o444
		if exec {
			e.perm = 0o555
		}
	default: // devices, pipes, sockets, irregular files
		return nil, badZip()
	}
	return e, nil
}

// hasUnixMode reports whether the zip recorded Unix permissions for f.
func hasUnixMode(f *zip.File) bool {
	const creatorUnix, creatorMacOSX = 3, 19
	creator := f.CreatorVersion >> 8
	return (creator == creatorUnix || creator == creatorMacOSX) && f.ExternalAttrs>>16 != 0
}

// staysInside resolves the symlink e the way the kernel would inside the
// unpacked tree, following other symlinks of the zip, and reports whether it
// never leaves the tree. Missing targets are fine (a dangling link inside).
func staysInside(byName map[string]*entry, e *entry) bool {
	stack := strings.Split(path.Dir(e.name), "/")
	if path.Dir(e.name) == "." {
		stack = nil
	}
	pending := strings.Split(e.target, "/")
	for hops := 0; len(pending) > 0; {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return false
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		if l := byName[strings.Join(stack, "/")]; l != nil && l.kind == symlink {
			if hops++; hops > maxLinkHops {
				return false
			}
			stack = stack[:len(stack)-1]
			pending = append(strings.Split(l.target, "/"), pending...)
		}
	}
	return true
}

func readSmall(f *zip.File, max int) ([]byte, error) {
	if f.UncompressedSize64 > uint64(max) {
		return nil, errors.New("too long")
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, int64(max)+1))
}

// extract decompresses every entry into root (or, when root is nil, into
// nothing, only checking), counting the bytes actually produced against
// MaxUnzipped. Symlinks are made last.
func (s *Store) extract(ctx context.Context, zr *zip.Reader, ents []*entry, root *os.Root) error {
	budget := s.cfg.MaxUnzipped
	buf := make([]byte, 256<<10)
	sorted := append([]*entry(nil), ents...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].kind == directory && sorted[j].kind != directory })
	var links []*entry
	for _, e := range sorted {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch e.kind {
		case symlink:
			links = append(links, e)
		case directory:
			if root != nil {
				if err := root.MkdirAll(e.name, 0o755); err != nil {
					return fmt.Errorf("codestore: %w", err)
				}
			}
		case regular:
			n, err := s.extractFile(ctx, root, e, budget, buf)
			if err != nil {
				return err
			}
			budget -= n
		}
	}
	if root == nil {
		return nil
	}
	for _, e := range links {
		if dir := path.Dir(e.name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("codestore: %w", err)
			}
		}
		if err := root.Symlink(e.target, e.name); err != nil {
			return fmt.Errorf("codestore: %w", err)
		}
	}
	return nil
}

// extractFile writes one regular file and returns its size.
func (s *Store) extractFile(ctx context.Context, root *os.Root, e *entry, budget int64, buf []byte) (int64, error) {
	rc, err := e.f.Open()
	if err != nil {
		return 0, badZip()
	}
	defer rc.Close()
	var w io.Writer = io.Discard
	var out *os.File
	if root != nil {
		if dir := path.Dir(e.name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return 0, fmt.Errorf("codestore: %w", err)
			}
		}
		out, err = root.OpenFile(e.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return 0, fmt.Errorf("codestore: %w", err)
		}
		defer out.Close()
		w = out
	}
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, rerr := rc.Read(buf)
		n += int64(k)
		if n > budget {
			return n, s.unzippedTooLarge()
		}
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				return n, fmt.Errorf("codestore: %w", err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, badZip() // corrupt data, CRC mismatch, or more data than declared
		}
	}
	if out != nil {
		if err := out.Close(); err != nil {
			return n, fmt.Errorf("codestore: %w", err)
		}
		if err := root.Chmod(e.name, e.perm); err != nil {
			return n, fmt.Errorf("codestore: %w", err)
		}
	}
	return n, nil
}

// removeAll removes a tree even where its directories were made read-only.
func removeAll(p string) error {
	err := os.RemoveAll(p)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o755)
		}
		return nil
	})
	return os.RemoveAll(p)
}
