package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// ImageImporter imports container images (images.Store): Resolve finds and
// checks an image while the caller waits; Save stores it afterwards.
type ImageImporter interface {
	Resolve(ctx context.Context, account, uri, architecture string) (*images.Resolved, error)
	Save(ctx context.Context, account string, r *images.Resolved, progress func(bytes int64)) (*images.Import, error)
}

// ImportStats reports the image imports running here and the bytes of file
// content they stored.
func (s *Service) ImportStats() (running int, bytes int64) {
	return int(s.running.Load()), s.bytes.Load()
}

// imageSource checks that code names an image, the only source of an image
// function.
func imageSource(code *functionCode) error {
	switch {
	case len(code.ZipFile) > 0 || code.S3Bucket != "" || code.S3Key != "":
		return api.Errorf(api.InvalidParameterValue, "Please don't provide ZipFile, S3Bucket or S3Key when updating a function with packageType Image.")
	case code.ImageUri == "":
		return api.Errorf(api.InvalidParameterValue, "Please provide a source for function code: ImageUri.")
	}
	return nil
}

// resolveImage finds uri for the caller's account and points cfg at it (its
// manifest is known once the import ends). What the caller got wrong is
// Lambda's InvalidParameterValue, before anything is written.
func (s *Service) resolveImage(c *call, cfg *api.FunctionConfiguration, uri string) (*images.Resolved, error) {
	if s.cfg.Images == nil {
		return nil, api.Errorf(api.InvalidParameterValue, "This Kiln runs no container images: PackageType Image is not enabled.")
	}
	arch := "x86_64"
	if len(cfg.Architectures) > 0 {
		arch = cfg.Architectures[0]
	}
	r, err := s.cfg.Images.Resolve(c.ctx, c.caller.Account, uri, arch)
	switch {
	case errors.Is(err, images.ErrBadURI):
		return nil, api.Errorf(api.InvalidParameterValue, "Source image %s is not valid. Provide a valid source image.", uri)
	case errors.Is(err, images.ErrNotFound):
		return nil, api.Errorf(api.InvalidParameterValue, "Source image %s does not exist. Provide a valid source image.", uri)
	case errors.Is(err, images.ErrArchitecture):
		return nil, api.Errorf(api.InvalidParameterValue, "The image manifest, config or layer media type for the source image %s is not supported: %v", uri, err)
	case err != nil:
		return nil, err
	}
	cfg.CodeSha256 = strings.TrimPrefix(r.Digest, "sha256:")
	cfg.CodeSize = 0 // as Lambda reports it for images
	cfg.KilnImage = &api.ImageCode{ImageUri: uri, ResolvedImageUri: r.ResolvedURI}
	return r, nil
}

// saveImage is an image's import: its layers flattened into chunks and a
// manifest. It closes r.
func (s *Service) saveImage(account string, imp metadata.CodeImport, r *images.Resolved) importWork {
	return func(ctx context.Context) (string, error) {
		defer r.Close()
		s.running.Add(1)
		defer s.running.Add(-1)
		log := s.log.With("account", account, "image", imp.Resolved)
		log.Info("image import started")
		start := time.Now()
		var last int64
		lastLog := time.Now()
		res, err := s.cfg.Images.Save(ctx, account, r, func(done int64) {
			s.bytes.Add(done - last)
			last = done
			if time.Since(lastLog) >= 5*time.Second {
				lastLog = time.Now()
				log.Info("image import progress", "bytes", done, "elapsed", time.Since(start).Round(time.Second))
			}
		})
		if err != nil {
			return "", err
		}
		log.Info("image import done", "bytes", last, "elapsed", time.Since(start).Round(time.Millisecond))
		return res.ManifestName, nil
	}
}

// imageFailure is Lambda's StateReasonCode and reason for an image import
// that failed.
func imageFailure(uri string, err error) (code, reason string) {
	switch {
	case errors.Is(err, images.ErrDeleted), errors.Is(err, images.ErrNotFound):
		return "ImageDeleted", fmt.Sprintf("The image %s was deleted or is no longer reachable: %v", uri, err)
	case errors.Is(err, images.ErrAccessDenied):
		return "ImageAccessDenied", fmt.Sprintf("Access to the image %s was denied: %v", uri, err)
	case errors.Is(err, flatten.ErrHostile), errors.Is(err, images.ErrArchitecture):
		return "InvalidImage", fmt.Sprintf("The image %s cannot be used: %v", uri, err)
	}
	return "InternalError", fmt.Sprintf("Importing the image %s failed: %v", uri, err)
}

// resolveAgain finds a resumed import's image again, by digest, for its
// new owner.
func (s *Service) resolveAgain(account string, imp *metadata.CodeImport) (*images.Resolved, error) {
	uri := imp.Resolved
	if images.IsArchive(imp.URI) {
		uri = imp.URI // an archive is named by file, not digest
	}
	arch := "x86_64"
	if len(imp.Architectures) > 0 {
		arch = imp.Architectures[0]
	}
	r, err := s.cfg.Images.Resolve(s.bg, account, uri, arch)
	if err == nil && r.Digest != imp.Digest {
		r.Close()
		err = fmt.Errorf("%w: %s is now %s, not %s", images.ErrDeleted, uri, r.Digest, imp.Digest)
	}
	return r, err
}

// applyImageConfig validates ImageConfig and sets it on an image function;
// a zip function has none.
func applyImageConfig(cfg *api.FunctionConfiguration, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if cfg.PackageType != "Image" {
		if string(raw) == "{}" {
			return nil
		}
		return api.Errorf(api.InvalidParameterValue, "ImageConfig is not supported for functions with package type Zip.")
	}
	var ic api.ImageConfig
	if err := json.Unmarshal(raw, &ic); err != nil {
		return api.Errorf(api.InvalidParameterValue, "ImageConfig is not valid: %v", err)
	}
	switch {
	case len(ic.EntryPoint) > 1500:
		return validation(len(ic.EntryPoint), "imageConfig.entryPoint", "Member must have length less than or equal to 1500")
	case len(ic.Command) > 1500:
		return validation(len(ic.Command), "imageConfig.command", "Member must have length less than or equal to 1500")
	case len(ic.WorkingDirectory) > 1000:
		return validation(ic.WorkingDirectory, "imageConfig.workingDirectory", "Member must have length less than or equal to 1000")
	}
	cfg.ImageConfigResponse = nil
	if len(ic.EntryPoint) > 0 || len(ic.Command) > 0 || ic.WorkingDirectory != "" {
		cfg.ImageConfigResponse = &api.ImageConfigResponse{ImageConfig: &ic}
	}
	return nil
}
