package codestore_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/codestore"
)

// FuzzPut hands the store any bytes as a deployment package. A package is
// either refused with InvalidParameterValueException, by Check as by Put,
// leaving nothing behind; or kept, unpacked into a tree of read-only regular
// files, directories and symlinks that resolve inside it, no larger than
// the limit.
func FuzzPut(f *testing.F) {
	const maxUnzipped = 64 << 10
	f.Fuzz(func(t *testing.T, zip []byte) {
		dir := t.TempDir()
		s := open(t, codestore.Config{Dir: dir, MaxUnzipped: maxUnzipped})
		ctx := context.Background()
		_, checkErr := s.Check(ctx, zip)
		code, err := s.Put(ctx, zip)
		if (err == nil) != (checkErr == nil) {
			t.Fatalf("Put: %v, but Check: %v", err, checkErr)
		}
		if err != nil {
			var e *api.Error
			if !errors.As(err, &e) || e.Type != api.InvalidParameterValue {
				t.Fatalf("refused with %v, want InvalidParameterValueException", err)
			}
			assertNothingStored(t, dir)
			return
		}
		tree, err := s.Dir(ctx, code.Sha256)
		if err != nil {
			t.Fatal(err)
		}
		var size int64
		err = filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
			case fi.Mode().Type() == fs.ModeSymlink:
				resolved, err := filepath.EvalSymlinks(p)
				if err == nil && resolved != tree && !strings.HasPrefix(resolved, tree+"/") {
					t.Fatalf("symlink %s resolves outside the tree, to %s", p, resolved)
				}
			case fi.Mode().IsRegular():
				if perm := fi.Mode().Perm(); perm != 0o444 && perm != 0o555 {
					t.Fatalf("%s has mode %v", p, perm)
				}
				size += fi.Size()
			default:
				t.Fatalf("%s is a %v", p, fi.Mode().Type())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if size > maxUnzipped {
			t.Fatalf("unpacked %d bytes, over the limit of %d", size, maxUnzipped)
		}
		if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err != nil || len(ents) != 0 {
			t.Fatalf("tmp holds %d entries after Put (%v)", len(ents), err)
		}
	})
}
