package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/kiln-dev/kiln/api"
	"github.com/kiln-dev/kiln/flatten"
	"github.com/kiln-dev/kiln/images"
)

// ImageImporter imports container images (images.Store).
type ImageImporter interface {
	Import(ctx context.Context, account, uri, architecture string) (*images.Import, error)
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

// importImage pulls uri into the chunk store for the caller's account and
// points cfg at it. Import failures are Lambda's InvalidParameterValue.
func (s *Service) importImage(c *call, cfg *api.FunctionConfiguration, uri string) error {
	if s.cfg.Images == nil {
		return api.Errorf(api.InvalidParameterValue, "This Kiln runs no container images: PackageType Image is not enabled.")
	}
	arch := "x86_64"
	if len(cfg.Architectures) > 0 {
		arch = cfg.Architectures[0]
	}
	imp, err := s.cfg.Images.Import(c.ctx, c.caller.Account, uri, arch)
	switch {
	case errors.Is(err, images.ErrBadURI):
		return api.Errorf(api.InvalidParameterValue, "Source image %s is not valid. Provide a valid source image.", uri)
	case errors.Is(err, images.ErrNotFound):
		return api.Errorf(api.InvalidParameterValue, "Source image %s does not exist. Provide a valid source image.", uri)
	case errors.Is(err, images.ErrArchitecture):
		return api.Errorf(api.InvalidParameterValue, "The image manifest, config or layer media type for the source image %s is not supported: %v", uri, err)
	case errors.Is(err, flatten.ErrHostile):
		return api.Errorf(api.InvalidParameterValue, "Source image %s cannot be used: %v", uri, err)
	case err != nil:
		return err
	}
	cfg.CodeSha256 = strings.TrimPrefix(imp.Manifest.Digest, "sha256:")
	cfg.CodeSize = 0 // as Lambda reports it for images
	cfg.KilnImage = &api.ImageCode{ImageUri: uri, ResolvedImageUri: imp.ResolvedURI, Manifest: imp.ManifestName}
	return nil
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
