// Package images imports container images into Kiln's chunk store and reads
// them back: an image is pulled from any OCI registry, its layers flattened
// (package flatten), its files cut into convergently encrypted chunks
// (package chunk) stored through the tiers (package tier), and its manifest
// (the tree with every chunk's ID and key, plus the image's config) sealed
// for the function's account by the key service (package keys). The manifest
// is stored like a chunk, under the hash of its sealed bytes; that name is
// all a function's metadata keeps.
package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-dev/kiln/internal/chunk"
	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/keys"
	"github.com/kiln-dev/kiln/internal/tier"
)

// Errors of an import, wrapped; the control plane maps them to Lambda's.
// Resolve's: the URI, the image, its architecture. Save's, once the image
// was found: its layers went away (ErrDeleted) or the registry refused them
// (ErrAccessDenied); flatten.ErrHostile for content refused.
var (
	ErrBadURI       = errors.New("invalid image URI")
	ErrNotFound     = errors.New("image not found")
	ErrArchitecture = errors.New("image architecture not supported")
	ErrDeleted      = errors.New("image deleted")
	ErrAccessDenied = errors.New("image access denied")
)

// Config is the part of the image's config Lambda applies.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	Env        []string `json:"env,omitempty"`
}

// Manifest is what a function's image is, once imported.
type Manifest struct {
	Digest       string          `json:"digest"` // the image manifest's, sha256:…
	Architecture string          `json:"architecture"`
	Config       Config          `json:"config"`
	ChunkSize    int             `json:"chunkSize"`
	Entries      []flatten.Entry `json:"entries"`
}

// MountPoints are the directories an environment attaches its own file
// systems at inside an image (made empty when the image lacks them).
var MountPoints = []struct {
	Name string
	Mode uint32
}{{"dev", 0o755}, {"proc", 0o555}, {"tmp", 0o1777}}

// checkMountPoints refuses an image with something else than a directory at
// a mount point: the environment could not run it.
func checkMountPoints(entries []flatten.Entry) error {
	for _, e := range entries {
		for _, mp := range MountPoints {
			if e.Path == mp.Name && e.Type != flatten.Dir {
				return fmt.Errorf("%w: /%s in the image is a %s, not a directory: the environment attaches its own there", flatten.ErrHostile, mp.Name, e.Type)
			}
		}
	}
	return nil
}

// KeyService is what images needs of the key service.
type KeyService interface {
	keys.KeyService
	Salt(ctx context.Context, scope string) ([]byte, error)
}

// Store imports images and opens their manifests.
type Store struct {
	Keys  KeyService
	Tiers *tier.Tiers
	// ChunkSize is chunk.DefaultSize when zero.
	ChunkSize int
	Limits    flatten.Limits
	// Scope names the chunk scope of an account's images: chunks of equal
	// content deduplicate within a scope. Nil means one scope per account.
	Scope func(account string) string
	// Remote are extra options for registry requests (a transport in tests).
	Remote []remote.Option
	// Local is Kiln's own registry, at LocalHosts (host:port: kiln up's
	// endpoint, a cluster's frontends): an ImageUri naming one of them is
	// read from it directly, as the calling account.
	Local      LocalRegistry
	LocalHosts []string
	// Archives is the directory of image archives that docker-archive: and
	// oci-archive: URIs name; empty refuses them. Scratch is where an OCI
	// layout is unpacked while it is imported (the system's temporary
	// directory when empty).
	Archives, Scratch string
}

func (s *Store) scope(account string) string {
	if s.Scope != nil {
		return s.Scope(account)
	}
	return "account/" + account
}

// LocalRegistry reads an account's images from Kiln's own registry
// (registry.Registry).
type LocalRegistry interface {
	Image(ctx context.Context, account, repo, ref, arch string) (v1.Image, error)
}

// Import is the result of importing an image.
type Import struct {
	ManifestName string // the sealed manifest's name in the store
	ResolvedURI  string // the URI imported, by digest
	Manifest     *Manifest
	Report       flatten.Report
}

// Arch maps Lambda's architecture names to OCI's.
var Arch = map[string]string{"x86_64": "amd64", "arm64": "arm64"}

// Resolved is an image found and checked (its manifest and config read),
// not stored yet: what CreateFunction answers from before the import runs.
type Resolved struct {
	Image v1.Image
	// reopen reads the image again for Save's context, when reading it
	// from a registry binds the context it was opened with.
	reopen       func(ctx context.Context) (v1.Image, error)
	Digest       string // the image manifest's, sha256:...
	ResolvedURI  string // the URI, by digest
	Architecture string // OCI's
	close        func()
}

// Close releases what reading the image holds (an unpacked archive).
func (r *Resolved) Close() {
	if r.close != nil {
		r.close()
	}
}

// Import resolves uri and saves the image: Resolve then Save.
func (s *Store) Import(ctx context.Context, account, uri, architecture string) (*Import, error) {
	r, err := s.Resolve(ctx, account, uri, architecture)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return s.Save(ctx, account, r, nil)
}

// Resolve finds uri (an image reference, by tag or digest, or an archive
// URI) for a function of account with the given Lambda architecture, and
// checks its architecture; the layers are read by Save.
func (s *Store) Resolve(ctx context.Context, account, uri, architecture string) (*Resolved, error) {
	arch, ok := Arch[architecture]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrArchitecture, architecture)
	}
	var r *Resolved
	if IsArchive(uri) {
		var err error
		if r, err = s.resolveArchive(uri, arch); err != nil {
			return nil, err
		}
	} else {
		ref, err := name.ParseReference(uri, name.StrictValidation)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadURI, err)
		}
		img, err := s.fetch(ctx, account, ref, arch)
		if err != nil {
			return nil, err
		}
		r = &Resolved{Image: img, ResolvedURI: ref.Context().String() + "@"}
		r.reopen = func(ctx context.Context) (v1.Image, error) {
			return s.fetch(ctx, account, ref.Context().Digest(r.Digest), arch)
		}
	}
	if err := r.check(arch); err != nil {
		r.Close()
		return nil, err
	}
	r.ResolvedURI += r.Digest
	return r, nil
}

// check reads the image's digest and config and checks its platform.
func (r *Resolved) check(arch string) error {
	digest, err := r.Image.Digest()
	if err != nil {
		return fmt.Errorf("%w: image digest: %v", ErrNotFound, err)
	}
	cf, err := r.Image.ConfigFile()
	if err != nil {
		return fmt.Errorf("%w: image config: %v", ErrNotFound, err)
	}
	if cf.OS != "" && cf.OS != "linux" || cf.Architecture != arch {
		return fmt.Errorf("%w: the image is %s/%s, the function %s", ErrArchitecture, cf.OS, cf.Architecture, arch)
	}
	r.Digest, r.Architecture = digest.String(), arch
	return nil
}

// fetch opens the image ref names: from Kiln's own registry when it names
// that, else over the network.
func (s *Store) fetch(ctx context.Context, account string, ref name.Reference, arch string) (v1.Image, error) {
	if s.Local != nil && slices.Contains(s.LocalHosts, ref.Context().RegistryStr()) {
		img, err := s.Local.Image(ctx, account, ref.Context().RepositoryStr(), ref.Identifier(), arch)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, ref, err)
		}
		return img, nil
	}
	opts := append([]remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}),
	}, s.Remote...)
	img, err := remote.Image(ref, opts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == 404 || te.StatusCode == 401 || te.StatusCode == 403) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, ref, err)
	}
	return img, nil
}

// ImportImage stores img (already fetched, or built) for account.
func (s *Store) ImportImage(ctx context.Context, account string, img v1.Image, arch string) (*Import, error) {
	r := &Resolved{Image: img}
	if err := r.check(arch); err != nil {
		return nil, err
	}
	return s.Save(ctx, account, r, nil)
}

// Save stores a resolved image for account: its layers flattened, its
// files chunked, its manifest sealed. progress, if set, is told the bytes
// of file content stored so far, every chunk.
func (s *Store) Save(ctx context.Context, account string, r *Resolved, progress func(bytes int64)) (*Import, error) {
	img := r.Image
	if r.reopen != nil {
		var err error
		if img, err = r.reopen(ctx); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDeleted, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%w: image config: %v", ErrDeleted, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image layers: %w", classify(err))
	}
	fl := make([]flatten.Layer, len(layers))
	for i, l := range layers {
		fl[i] = l
	}
	size := s.ChunkSize
	if size <= 0 {
		size = chunk.DefaultSize
	}
	salt, err := s.Keys.Salt(ctx, s.scope(account))
	if err != nil {
		return nil, err
	}
	var stored int64
	entries, report, err := flatten.Flatten(fl, s.Limits, func(rd io.Reader) ([]chunk.Ref, error) {
		return chunk.Split(rd, size, salt, func(ref chunk.Ref, ct []byte) error {
			if err := s.Tiers.Store.Put(ctx, ref.ID.String(), ct); err != nil {
				return err
			}
			if stored += int64(ref.Len); progress != nil {
				progress(stored)
			}
			return nil
		})
	})
	if err != nil {
		return nil, classify(err)
	}
	if err := checkMountPoints(entries); err != nil {
		return nil, err
	}
	if report != (flatten.Report{}) {
		slog.Info("images: hostile content neutralised", "image", r.Digest, "report", report)
	}
	m := &Manifest{
		Digest:       r.Digest,
		Architecture: cf.Architecture,
		Config:       Config{Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, WorkingDir: cf.Config.WorkingDir, Env: cf.Config.Env},
		ChunkSize:    size,
		Entries:      entries,
	}
	plain, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	env, err := keys.Seal(ctx, s.Keys, account, plain)
	if err != nil {
		return nil, err
	}
	sealed, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	mname, err := s.Tiers.Put(ctx, sealed)
	if err != nil {
		return nil, err
	}
	return &Import{ManifestName: mname, ResolvedURI: r.ResolvedURI, Manifest: m, Report: report}, nil
}

// classify marks a registry's refusal of a layer it listed: gone
// (ErrDeleted) or forbidden (ErrAccessDenied).
func classify(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	switch te.StatusCode {
	case 404:
		return fmt.Errorf("%w: %v", ErrDeleted, err)
	case 401, 403:
		return fmt.Errorf("%w: %v", ErrAccessDenied, err)
	}
	return err
}

// Manifest fetches and opens the manifest stored under name for account;
// another account's manifest is keys.ErrDenied.
func (s *Store) Manifest(ctx context.Context, account, name string) (*Manifest, error) {
	sealed, err := s.Tiers.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	var env keys.Envelope
	if err := json.Unmarshal(sealed, &env); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	plain, err := keys.OpenEnvelope(ctx, s.Keys, account, env)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	var m Manifest
	if err := json.Unmarshal(plain, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", name, err)
	}
	return &m, nil
}

// Chunk fetches one chunk through the tiers and decrypts it. A copy that
// fails either check is never returned: the tiers check it against its ID
// (dropping a corrupt cached copy and fetching it again); a copy that passes
// that but not the key's GCM tag is refused. The plaintext is decrypted in
// the buffer the tiers read (theirs to give: tier.Store).
func (s *Store) Chunk(ctx context.Context, ref chunk.Ref) ([]byte, error) {
	ct, err := s.Tiers.Get(ctx, ref.ID.String())
	if err != nil {
		return nil, err
	}
	return chunk.Decrypt(ref, ct)
}
