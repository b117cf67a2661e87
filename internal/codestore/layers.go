package codestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Layers: a function's layers are extracted in order into one directory,
// its /opt, later layers' files replacing earlier ones' as Lambda does.
// The directory is made of hard links to the layers' unpacked trees (no
// file is copied) and is shared by every function with the same layers in
// the same order:
//
//	opt/<hex sha256 of the ordered digests>/tree     the merged tree
//	opt/<...>/digests                                 its layers' digests, one a line
//
// It is a cache: Open empties it, Sweep removes the trees of deleted layers.

const optDirName = "opt"

func (s *Store) optPath(key string) string { return filepath.Join(s.cfg.Dir, optDirName, key) }

// Layers returns the directory holding the layers (CodeSha256 digests, in
// order) merged, building it if needed.
func (s *Store) Layers(ctx context.Context, shas []string) (string, error) {
	hexes := make([]string, len(shas))
	for i, sha := range shas {
		h, err := HexOf(sha)
		if err != nil {
			return "", err
		}
		hexes[i] = h
	}
	list := strings.Join(hexes, "\n") + "\n"
	sum := sha256.Sum256([]byte(list))
	dst := s.optPath(hex.EncodeToString(sum[:]))
	tree := filepath.Join(dst, "tree")
	if fi, err := os.Lstat(tree); err == nil && fi.IsDir() {
		return tree, nil
	}
	trees := make([]string, len(hexes))
	for i, h := range hexes {
		d, err := s.dir(ctx, h)
		if err != nil {
			return "", err
		}
		trees[i] = d
	}
	work, err := os.MkdirTemp(s.tmp, "layers-")
	if err != nil {
		return "", fmt.Errorf("codestore: %w", err)
	}
	defer removeAll(work)
	merged := filepath.Join(work, "tree")
	if err := os.Mkdir(merged, 0o755); err != nil {
		return "", fmt.Errorf("codestore: %w", err)
	}
	for _, t := range trees {
		if err := overlay(ctx, t, merged); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(work, "digests"), []byte(list), 0o444); err != nil {
		return "", fmt.Errorf("codestore: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("codestore: %w", err)
	}
	if err := os.Rename(work, dst); err != nil {
		if fi, serr := os.Lstat(tree); serr == nil && fi.IsDir() {
			return tree, nil // built concurrently
		}
		return "", fmt.Errorf("codestore: %w", err)
	}
	return tree, nil
}

// overlay adds the tree src to dst: directories are merged, files and
// symbolic links replace what dst has at their path. Files are hard links
// to src's (read-only) files. A path is only written once its parent is
// known to resolve inside dst: a layer's symbolic links stay inside its
// own tree, but two layers' links together could lead elsewhere.
func overlay(ctx context.Context, src, dst string) error {
	root, err := filepath.EvalSymlinks(dst)
	if err != nil {
		return fmt.Errorf("codestore: %w", err)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("codestore: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			return nil
		}
		parent, err := filepath.EvalSymlinks(filepath.Join(root, filepath.Dir(rel)))
		if err != nil {
			return fmt.Errorf("codestore: layer path %s: %w", rel, err)
		}
		if parent != root && !strings.HasPrefix(parent, root+string(filepath.Separator)) {
			return fmt.Errorf("codestore: layer path %s leads out of the merged layers", rel)
		}
		target := filepath.Join(parent, filepath.Base(rel))
		fi, lerr := os.Lstat(target)
		if d.IsDir() {
			if lerr == nil && fi.IsDir() {
				return nil
			}
			if lerr == nil {
				if err := removeAll(target); err != nil {
					return err
				}
			}
			return os.Mkdir(target, 0o755)
		}
		if lerr == nil {
			if err := removeAll(target); err != nil {
				return err
			}
		}
		if d.Type()&fs.ModeSymlink != 0 {
			link, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("codestore: %w", err)
			}
			return os.Symlink(link, target)
		}
		return os.Link(p, target)
	})
}

// Unzipped is the unpacked size of a stored package: the bytes of its
// files, what Lambda's 250 MB limit on a function and its layers counts.
func (s *Store) Unzipped(ctx context.Context, sha string) (int64, error) {
	tree, err := s.Dir(ctx, sha)
	if err != nil {
		return 0, err
	}
	var n int64
	err = filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("codestore: %w", err)
	}
	return n, nil
}

// MaxUnzipped is the limit on a package's unpacked size, and on a
// function's with its layers.
func (s *Store) MaxUnzipped() int64 { return s.cfg.MaxUnzipped }

// sweepLayers removes the merged trees that contain a package keep rejects.
func (s *Store) sweepLayers(keep func(sha string) bool) error {
	ents, err := os.ReadDir(filepath.Join(s.cfg.Dir, optDirName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("codestore: %w", err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(s.optPath(e.Name()), "digests"))
		stale := err != nil
		for _, h := range strings.Fields(string(b)) {
			if sha, err := ShaOf(h); err != nil || !keep(sha) {
				stale = true
			}
		}
		if stale {
			if err := removeAll(s.optPath(e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
