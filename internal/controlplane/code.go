package controlplane

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/tier"
)

// CodeURLLifetime is how long a GetFunction Code.Location stays valid, as in Lambda.
const CodeURLLifetime = 10 * time.Minute

const codePath = "/kiln/code/"

// codeURL is a download URL for a package on the host the request came to
// (a proxying frontend's, which keeps Host and says its scheme),
// authorized like an S3 presigned URL: an expiry and an HMAC over it.
func (s *Service) codeURL(r *http.Request, sha string) string {
	h, err := codestore.HexOf(sha)
	if err != nil {
		return ""
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p // behind a cluster frontend, whose scheme the client sees
	}
	expires := s.cfg.Now().Add(CodeURLLifetime).Unix()
	q := url.Values{"Expires": {strconv.FormatInt(expires, 10)}, "Signature": {s.codeSignature(h, expires)}}
	return fmt.Sprintf("%s://%s%s%s?%s", scheme, r.Host, codePath, h, q.Encode())
}

func (s *Service) codeSignature(hexDigest string, expires int64) string {
	m := hmac.New(sha256.New, s.cfg.URLSecret)
	fmt.Fprintf(m, "kiln-code-v1\n%s\n%d", hexDigest, expires)
	return hex.EncodeToString(m.Sum(nil))
}

// CodeHandler serves the downloads GetFunction's Code.Location points to
// (GET /kiln/code/{sha}?Expires=...&Signature=...). It is mounted outside
// the SigV4 middleware: the URL itself is the authorization.
func (s *Service) CodeHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+codePath+"{sha}", s.serveCode)
	return mux
}

func (s *Service) serveCode(w http.ResponseWriter, r *http.Request) {
	h := r.PathValue("sha")
	q := r.URL.Query()
	expires, err := strconv.ParseInt(q.Get("Expires"), 10, 64)
	sig, _ := hex.DecodeString(q.Get("Signature"))
	want, _ := hex.DecodeString(s.codeSignature(h, expires))
	switch {
	case err != nil || len(sig) == 0:
		s3Error(w, http.StatusForbidden, "AccessDenied", "Query-string authentication requires the Signature and Expires parameters")
		return
	case !hmac.Equal(sig, want):
		s3Error(w, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	case s.cfg.Now().Unix() > expires:
		s3Error(w, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	}
	sha, err := codestore.ShaOf(h)
	if err != nil {
		s3Error(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	f, err := s.code.Open(r.Context(), sha)
	if err != nil {
		if errors.Is(err, codestore.ErrNotFound) {
			s3Error(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
			return
		}
		s.log.Error("control plane: opening code", "sha", sha, "err", err)
		s3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("ETag", `"`+h+`"`)
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// s3Error answers as S3 does for a presigned URL.
func s3Error(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n<Error><Code>%s</Code><Message>%s</Message></Error>\n", code, message)
}

// Collection is what a code collection deleted.
type Collection struct {
	Code   tier.Swept // deployment packages
	Images tier.Swept // image chunks and manifests
	// ImagesDeferred: an image import was under way, so images were left
	// for the next collection (its chunks are named by no manifest yet,
	// and an import may outlast any grace).
	ImagesDeferred bool
}

// CollectCode deletes stored packages that no function version or layer
// version of any account references and that were last uploaded more than
// grace ago (the grace covers an upload whose function is not written
// yet), and likewise image chunks and manifests when the image importer
// can collect. Live are every version of every function ($LATEST and the
// published ones), the layers' versions, the zips imports name, and the
// manifests of those versions' images with every chunk they name. Run it
// now and then, in one process at a time.
func (s *Service) CollectCode(ctx context.Context, grace time.Duration) (Collection, error) {
	// Before anything is read: what is written after is younger than now.
	now := s.cfg.Now()
	fns, err := s.store.All(ctx)
	if err != nil {
		return Collection{}, err
	}
	used := map[string]bool{}
	ls, err := s.store.Layers(ctx)
	if err != nil {
		return Collection{}, err
	}
	layers, err := ls.List(ctx, "")
	if err != nil {
		return Collection{}, err
	}
	for _, l := range layers {
		for _, v := range l.Versions {
			used[v.CodeSha256] = true
		}
	}
	var manifests []images.ManifestRef
	var col Collection
	for _, f := range fns {
		if imp := f.Import; imp != nil && imp.Zip {
			used[imp.Digest] = true // staged for an import under way, or to be resumed
		} else if imp != nil {
			col.ImagesDeferred = true
		}
		for _, cfg := range append([]*api.FunctionConfiguration{&f.Latest}, slices.Collect(maps.Values(f.Versions))...) {
			used[cfg.CodeSha256] = true
			for _, l := range cfg.Layers { // kept after their version is deleted
				used[l.KilnCodeSha256] = true
			}
			if cfg.KilnImage != nil && cfg.KilnImage.Manifest != "" { // "": its import is under way, or failed
				manifests = append(manifests, images.ManifestRef{Account: f.Account, Name: cfg.KilnImage.Manifest})
			}
		}
	}
	if col.Code, err = s.code.Sweep(ctx, func(sha string) bool { return used[sha] }, now.Add(-grace)); err != nil {
		return col, err
	}
	if c, ok := s.cfg.Images.(imageCollector); ok && !col.ImagesDeferred {
		col.Images, err = c.Collect(ctx, manifests, now, grace)
	}
	return col, err
}

// imageCollector is an ImageImporter that also deletes what no function
// uses (images.Store).
type imageCollector interface {
	Collect(ctx context.Context, keep []images.ManifestRef, now time.Time, grace time.Duration) (tier.Swept, error)
}
