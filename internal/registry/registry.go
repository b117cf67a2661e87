// Package registry is Kiln's own container registry, in the role of ECR: the
// OCI distribution API (push and pull of blobs and manifests, tags) on
// Kiln's endpoint under /v2/, so `crane push`, `skopeo copy` or
// `podman push` to Kiln work without another registry, and ImageUri can name
// an image in it.
//
// Every request authenticates with HTTP basic authentication, the user name
// an access key id and the password its secret key; repositories belong to
// the key's account, as ECR's do, and no account sees another's (not even
// whether it holds a blob). Uploads are checked against their digest before
// they become visible; a manifest is accepted only when it parses and every
// blob or manifest it references is present.
//
// Layout in its Storage (a directory, or a cluster's object store):
//
//	ACCOUNT/blobs/sha256/HEX               blobs (layers, configs)
//	ACCOUNT/manifests/sha256/HEX[.type]     manifests and their media types
//	ACCOUNT/repos/REPO/tags/TAG             the digest a tag points to
//	ACCOUNT/repos/REPO/digests/HEX          the manifests pushed to REPO
//
// Uploads under way are files in a local directory of the process serving
// them (emptied at start): an upload session is one client's, on one host.
package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Limits, as ECR's: a layer of up to 10 GiB (Lambda's image limit), a
// manifest of up to 4 MiB.
const (
	MaxBlob     = 10 << 30
	MaxManifest = 4 << 20
)

// Authenticator checks basic-authentication credentials and returns the
// account (auth.Keyring).
type Authenticator interface {
	Password(user, password string) (account string, ok bool)
}

// Registry serves the repositories in its storage.
type Registry struct {
	store   Storage
	scratch string // uploads under way
	auth    Authenticator

	mu      sync.Mutex
	uploads map[string]*upload
}

type upload struct {
	account, repo string

	mu   sync.Mutex // one request appends at a time
	size int64
	hash hash.Hash // of the bytes so far
}

// Open opens (creating) a registry in dir, uploads under way in dir/uploads.
func Open(dir string, auth Authenticator) (*Registry, error) {
	return New(Dir(dir), filepath.Join(dir, "uploads"), auth)
}

// New returns a registry over store that keeps uploads under way in the
// local directory scratch (emptied first).
func New(store Storage, scratch string, auth Authenticator) (*Registry, error) {
	if err := os.RemoveAll(scratch); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Registry{store: store, scratch: scratch, auth: auth, uploads: map[string]*upload{}}, nil
}

var (
	repoRe   = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRe    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	digestRe = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	idRe     = regexp.MustCompile(`^[a-f0-9]{32}$`)
)

// regError is an error in the distribution API's shape.
type regError struct {
	status  int
	code    string
	message string
}

func (e *regError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, a ...any) *regError {
	return &regError{status, code, fmt.Sprintf(format, a...)}
}

func (e *regError) write(w http.ResponseWriter) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="kiln"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": e.code, "message": e.message}}})
}

// ServeHTTP serves /v2/.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if err := r.serve(w, req); err != nil {
		var re *regError
		if !errors.As(err, &re) {
			re = errorf(http.StatusInternalServerError, "UNKNOWN", "%v", err)
		}
		re.write(w)
	}
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) error {
	user, pass, ok := req.BasicAuth()
	account := ""
	if ok {
		account, ok = r.auth.Password(user, pass)
	}
	if !ok {
		return errorf(http.StatusUnauthorized, "UNAUTHORIZED", "authentication required: the user name is an access key id, the password its secret key")
	}
	p, ok := strings.CutPrefix(req.URL.Path, "/v2/")
	switch {
	case !ok && req.URL.Path != "/v2":
		return errorf(http.StatusNotFound, "NAME_UNKNOWN", "not a registry path")
	case p == "":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}")
		return nil
	}
	if i := strings.LastIndex(p, "/blobs/uploads"); i > 0 {
		id := strings.Trim(p[i+len("/blobs/uploads"):], "/")
		return r.upload(w, req, account, p[:i], id)
	}
	if i := strings.LastIndex(p, "/blobs/"); i > 0 {
		return r.blob(w, req, account, p[:i], p[i+len("/blobs/"):])
	}
	if i := strings.LastIndex(p, "/manifests/"); i > 0 {
		return r.manifest(w, req, account, p[:i], p[i+len("/manifests/"):])
	}
	if repo, ok := strings.CutSuffix(p, "/tags/list"); ok {
		return r.tags(w, req, account, repo)
	}
	return errorf(http.StatusNotFound, "NAME_UNKNOWN", "not a registry path")
}

func checkRepo(repo string) error {
	if len(repo) > 255 || !repoRe.MatchString(repo) {
		return errorf(http.StatusBadRequest, "NAME_INVALID", "invalid repository name %q", repo)
	}
	return nil
}

func key(account string, parts ...string) string {
	return path.Join(append([]string{account}, parts...)...)
}

func blobKey(account, digest string) string {
	return key(account, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func (r *Registry) blob(w http.ResponseWriter, req *http.Request, account, repo, digest string) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if !digestRe.MatchString(digest) {
		return errorf(http.StatusBadRequest, "DIGEST_INVALID", "invalid digest %q", digest)
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "%s of a blob", req.Method)
	}
	f, size, err := r.store.Open(req.Context(), blobKey(account, digest))
	if errors.Is(err, fs.ErrNotExist) {
		return errorf(http.StatusNotFound, "BLOB_UNKNOWN", "blob %s is not in the registry", digest)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Docker-Content-Digest", digest)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	if req.Method == http.MethodGet {
		io.Copy(w, f)
	}
	return nil
}

// upload serves POST (start, or monolithic with ?digest=, or a mount of a
// blob the account has), PATCH (append) and PUT (finish) of blob uploads.
func (r *Registry) upload(w http.ResponseWriter, req *http.Request, account, repo, id string) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodPost && id == "":
		if d := q.Get("mount"); d != "" && digestRe.MatchString(d) {
			if r.store.Exists(req.Context(), blobKey(account, d)) {
				return created(w, repo, d)
			}
		}
		id = newID()
		r.mu.Lock()
		r.uploads[id] = &upload{account: account, repo: repo, hash: sha256.New()}
		r.mu.Unlock()
		if d := q.Get("digest"); d != "" {
			return r.finish(w, req, id, d)
		}
		w.Header().Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
		w.Header().Set("Docker-Upload-UUID", id)
		w.Header().Set("Range", "0-0")
		w.WriteHeader(http.StatusAccepted)
		return nil
	case req.Method == http.MethodPatch:
		u, err := r.session(account, repo, id)
		if err != nil {
			return err
		}
		if err := r.appendBody(id, u, req.Body); err != nil {
			return err
		}
		w.Header().Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
		w.Header().Set("Docker-Upload-UUID", id)
		w.Header().Set("Range", fmt.Sprintf("0-%d", max(u.size-1, 0)))
		w.WriteHeader(http.StatusAccepted)
		return nil
	case req.Method == http.MethodPut:
		if _, err := r.session(account, repo, id); err != nil {
			return err
		}
		return r.finish(w, req, id, q.Get("digest"))
	case req.Method == http.MethodDelete:
		if _, err := r.session(account, repo, id); err != nil {
			return err
		}
		r.drop(id)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "%s of an upload", req.Method)
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *Registry) session(account, repo, id string) (*upload, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.uploads[id]
	if !idRe.MatchString(id) || u == nil || u.account != account || u.repo != repo {
		return nil, errorf(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload %q", id)
	}
	return u, nil
}

func (r *Registry) uploadPath(id string) string { return filepath.Join(r.scratch, id) }

// appendBody adds body to the upload, within MaxBlob.
func (r *Registry) appendBody(id string, u *upload, body io.Reader) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	f, err := os.OpenFile(r.uploadPath(id), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.MultiWriter(f, u.hash), io.LimitReader(body, MaxBlob-u.size+1))
	u.size += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && u.size > MaxBlob {
		r.drop(id)
		return errorf(http.StatusRequestEntityTooLarge, "SIZE_INVALID", "a blob may not exceed %d bytes", int64(MaxBlob))
	}
	return err
}

func (r *Registry) drop(id string) {
	r.mu.Lock()
	delete(r.uploads, id)
	r.mu.Unlock()
	os.Remove(r.uploadPath(id))
}

// finish appends the request's body and moves the upload into the blobs if
// its bytes have the digest claimed.
func (r *Registry) finish(w http.ResponseWriter, req *http.Request, id, digest string) error {
	r.mu.Lock()
	u := r.uploads[id]
	r.mu.Unlock()
	if !digestRe.MatchString(digest) {
		r.drop(id)
		return errorf(http.StatusBadRequest, "DIGEST_INVALID", "invalid digest %q", digest)
	}
	if err := r.appendBody(id, u, req.Body); err != nil {
		return err
	}
	defer r.drop(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	if got := "sha256:" + hex.EncodeToString(u.hash.Sum(nil)); got != digest {
		return errorf(http.StatusBadRequest, "DIGEST_INVALID", "the upload's digest is %s, not %s", got, digest)
	}
	if err := r.store.Move(req.Context(), blobKey(u.account, digest), r.uploadPath(id)); err != nil {
		return err
	}
	return created(w, u.repo, digest)
}

func created(w http.ResponseWriter, repo, digest string) error {
	w.Header().Set("Location", "/v2/"+repo+"/blobs/"+digest)
	w.Header().Set("Docker-Content-Digest", digest)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// manifestTypes are the manifests the registry takes.
var manifestTypes = map[types.MediaType]bool{
	types.OCIManifestSchema1: true, types.DockerManifestSchema2: true,
	types.OCIImageIndex: true, types.DockerManifestList: true,
}

func (r *Registry) manifest(w http.ResponseWriter, req *http.Request, account, repo, ref string) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	if !digestRe.MatchString(ref) && !tagRe.MatchString(ref) {
		return errorf(http.StatusBadRequest, "MANIFEST_INVALID", "invalid reference %q", ref)
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		b, mt, digest, err := r.readManifest(req.Context(), account, repo, ref)
		if err != nil {
			return err
		}
		w.Header().Set("Docker-Content-Digest", digest)
		w.Header().Set("Content-Type", string(mt))
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if req.Method == http.MethodGet {
			w.Write(b)
		}
		return nil
	case http.MethodPut:
		return r.putManifest(w, req, account, repo, ref)
	}
	return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "%s of a manifest", req.Method)
}

// readManifest resolves ref (a tag or digest) in repo.
func (r *Registry) readManifest(ctx context.Context, account, repo, ref string) ([]byte, types.MediaType, string, error) {
	digest := ref
	if !digestRe.MatchString(ref) {
		b, err := r.store.ReadFile(ctx, key(account, "repos", repo, "tags", ref))
		if err != nil {
			return nil, "", "", errorf(http.StatusNotFound, "MANIFEST_UNKNOWN", "no tag %q in %s", ref, repo)
		}
		digest = string(b)
	}
	h := strings.TrimPrefix(digest, "sha256:")
	if !r.store.Exists(ctx, key(account, "repos", repo, "digests", h)) {
		return nil, "", "", errorf(http.StatusNotFound, "MANIFEST_UNKNOWN", "no manifest %s in %s", digest, repo)
	}
	b, err := r.store.ReadFile(ctx, key(account, "manifests", "sha256", h))
	if err != nil {
		return nil, "", "", err
	}
	mt, err := r.store.ReadFile(ctx, key(account, "manifests", "sha256", h+".type"))
	return b, types.MediaType(mt), digest, err
}

func (r *Registry) putManifest(w http.ResponseWriter, req *http.Request, account, repo, ref string) error {
	b, err := io.ReadAll(io.LimitReader(req.Body, MaxManifest+1))
	if err != nil {
		return err
	}
	if len(b) > MaxManifest {
		return errorf(http.StatusRequestEntityTooLarge, "MANIFEST_INVALID", "a manifest may not exceed %d bytes", MaxManifest)
	}
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	digest := "sha256:" + h
	if digestRe.MatchString(ref) && ref != digest {
		return errorf(http.StatusBadRequest, "DIGEST_INVALID", "the manifest's digest is %s, not %s", digest, ref)
	}
	mt := types.MediaType(req.Header.Get("Content-Type"))
	if !manifestTypes[mt] {
		return errorf(http.StatusBadRequest, "MANIFEST_INVALID", "unsupported manifest media type %q", mt)
	}
	ctx := req.Context()
	if err := r.checkReferences(ctx, account, repo, mt, b); err != nil {
		return err
	}
	for _, f := range []struct {
		key  string
		data []byte
	}{
		{key(account, "manifests", "sha256", h), b},
		{key(account, "manifests", "sha256", h+".type"), []byte(mt)},
		{key(account, "repos", repo, "digests", h), nil},
	} {
		if err := r.store.WriteFile(ctx, f.key, f.data); err != nil {
			return err
		}
	}
	if !digestRe.MatchString(ref) {
		if err := r.store.WriteFile(ctx, key(account, "repos", repo, "tags", ref), []byte(digest)); err != nil {
			return err
		}
	}
	w.Header().Set("Location", "/v2/"+repo+"/manifests/"+digest)
	w.Header().Set("Docker-Content-Digest", digest)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// checkReferences requires what a manifest names to be in the registry: an
// image's config and layers (blobs of the account), an index's manifests
// (in the same repository).
func (r *Registry) checkReferences(ctx context.Context, account, repo string, mt types.MediaType, b []byte) error {
	var refs []string
	if mt.IsIndex() {
		var im v1.IndexManifest
		if err := json.Unmarshal(b, &im); err != nil {
			return errorf(http.StatusBadRequest, "MANIFEST_INVALID", "%v", err)
		}
		for _, d := range im.Manifests {
			if _, _, _, err := r.readManifest(ctx, account, repo, d.Digest.String()); err != nil {
				return errorf(http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "the index names %s, which is not in %s", d.Digest, repo)
			}
		}
		return nil
	}
	var m v1.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return errorf(http.StatusBadRequest, "MANIFEST_INVALID", "%v", err)
	}
	refs = append(refs, m.Config.Digest.String())
	for _, l := range m.Layers {
		refs = append(refs, l.Digest.String())
	}
	for _, d := range refs {
		if !digestRe.MatchString(d) {
			return errorf(http.StatusBadRequest, "MANIFEST_INVALID", "invalid digest %q", d)
		}
		if !r.store.Exists(ctx, blobKey(account, d)) {
			return errorf(http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "blob %s is not in the registry", d)
		}
	}
	return nil
}

func (r *Registry) tags(w http.ResponseWriter, req *http.Request, account, repo string) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	names, err := r.store.List(req.Context(), key(account, "repos", repo, "tags"))
	if errors.Is(err, fs.ErrNotExist) {
		return errorf(http.StatusNotFound, "NAME_UNKNOWN", "no repository %s", repo)
	}
	if err != nil {
		return err
	}
	tags := []string{}
	for _, n := range names {
		if tagRe.MatchString(n) {
			tags = append(tags, n)
		}
	}
	sort.Strings(tags)
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": tags})
}
