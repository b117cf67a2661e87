package images

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Archive URIs name an image in a file of Store.Archives (an operator's
// directory: a caller never names a host path):
//
//	docker-archive:FILE[:TAG]   a `docker save` tarball (TAG picks one of several)
//	oci-archive:FILE[:TAG]      a tar of an OCI image layout (TAG: its ref.name annotation)
const (
	dockerArchive = "docker-archive:"
	ociArchive    = "oci-archive:"
)

// archiveFile is a file name in the archives directory: no directories.
var archiveFile = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// IsArchive reports an archive URI (docker-archive:, oci-archive:).
func IsArchive(uri string) bool {
	return strings.HasPrefix(uri, dockerArchive) || strings.HasPrefix(uri, ociArchive)
}

// resolveArchive opens the image an archive URI names; the Resolved holds
// the archives directory (and an OCI layout unpacked) until it is closed.
func (s *Store) resolveArchive(uri, arch string) (*Resolved, error) {
	if s.Archives == "" {
		return nil, fmt.Errorf("%w: %s: this Kiln has no image archives directory", ErrBadURI, uri)
	}
	kind, rest, _ := strings.Cut(uri, ":")
	file, tag, _ := strings.Cut(rest, ":")
	if !archiveFile.MatchString(file) {
		return nil, fmt.Errorf("%w: %q is not a file name of the archives directory", ErrBadURI, file)
	}
	root, err := os.OpenRoot(s.Archives)
	if err != nil {
		return nil, fmt.Errorf("image archives: %w", err)
	}
	r := &Resolved{ResolvedURI: kind + ":" + file + "@", close: func() { root.Close() }}
	if _, err := root.Stat(file); err != nil {
		r.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, uri, err)
	}
	open := func() (io.ReadCloser, error) { return root.Open(file) }
	switch kind + ":" {
	case dockerArchive:
		var t *name.Tag
		if tag != "" {
			nt, err := name.NewTag(tag)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("%w: tag %q: %v", ErrBadURI, tag, err)
			}
			t = &nt
		}
		if r.Image, err = tarball.Image(open, t); err != nil {
			r.Close()
			return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, uri, err)
		}
	case ociArchive:
		dir, err := os.MkdirTemp(s.scratch(), "oci-")
		if err != nil {
			r.Close()
			return nil, err
		}
		r.close = func() { root.Close(); os.RemoveAll(dir) }
		if err := extractLayout(open, dir); err != nil {
			r.Close()
			return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, uri, err)
		}
		if r.Image, err = layoutImage(dir, tag, arch); err != nil {
			r.Close()
			return nil, fmt.Errorf("%s: %w", uri, err)
		}
	}
	return r, nil
}

func (s *Store) scratch() string {
	if s.Scratch != "" {
		return s.Scratch
	}
	return os.TempDir()
}

// layoutBlob is what an OCI layout holds; nothing else of the tar is
// written out, and nothing but regular files.
var layoutBlob = regexp.MustCompile(`^(oci-layout|index\.json|blobs/sha(256|512)/[0-9a-f]{64,128})$`)

// extractLayout writes the layout files of the tar into dir.
func extractLayout(open func() (io.ReadCloser, error), dir string) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if h.Typeflag != tar.TypeReg || !layoutBlob.MatchString(p) {
			continue
		}
		if err := root.MkdirAll(path.Dir(p), 0o700); err != nil {
			return err
		}
		f, err := root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// layoutImage picks the image of the layout in dir: the one whose
// org.opencontainers.image.ref.name is tag, or the only one; in an index of
// several platforms, the one for linux/arch.
func layoutImage(dir, tag, arch string) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: not an OCI layout: %v", ErrNotFound, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		if tag == "" || d.Annotations["org.opencontainers.image.ref.name"] == tag {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%w: %d images match tag %q in the layout", ErrNotFound, len(found), tag)
	}
	d := found[0]
	if !d.MediaType.IsIndex() {
		return idx.Image(d.Digest)
	}
	inner, err := idx.ImageIndex(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	m, err := inner.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	for _, d := range m.Manifests {
		if p := d.Platform; p != nil && p.OS == "linux" && p.Architecture == arch {
			return inner.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("%w: no linux/%s image in the index", ErrArchitecture, arch)
}
