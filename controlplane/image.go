package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/api"
	"github.com/kiln-dev/kiln/flatten"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/metadata"
)

// ImageImporter imports container images (images.Store): Resolve finds and
// checks an image while the caller waits; Save stores it afterwards.
type ImageImporter interface {
	Resolve(ctx context.Context, account, uri, architecture string) (*images.Resolved, error)
	Save(ctx context.Context, account string, r *images.Resolved, progress func(bytes int64)) (*images.Import, error)
}

// importStale is Config.ImportStale's default.
const importStale = time.Minute

// Lambda's words for a function whose image is being imported.
const (
	creatingReason = "The function is being created."
	updatingReason = "The function is being updated."
)

// imports is the control plane's image imports: CreateFunction and
// UpdateFunctionCode answer once the image is resolved (State Pending,
// LastUpdateStatus InProgress), and the import runs here in the background.
type imports struct {
	owner   string // this control plane, as an import's owner
	bg      context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	running atomic.Int64
	bytes   atomic.Int64
}

func (s *Service) startImports() {
	s.owner = api.NewUUID()
	s.bg, s.stop = context.WithCancel(context.Background())
	if s.cfg.Images == nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.resumeImports()
	}()
}

// Close stops the image imports this control plane runs; another control
// plane, or this one's next start, resumes them.
func (s *Service) Close() {
	s.stop()
	s.wg.Wait()
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

// newImport records the import of r for cfg, owned here.
func (s *Service) newImport(cfg *api.FunctionConfiguration, r *images.Resolved, creating bool) *metadata.ImageImport {
	return &metadata.ImageImport{Token: api.NewUUID(), URI: cfg.KilnImage.ImageUri, Resolved: r.ResolvedURI, Digest: r.Digest,
		Architectures: cfg.Architectures, Creating: creating, Owner: s.owner, Beat: s.cfg.Now()}
}

// pending marks a configuration whose image is being imported.
func pending(cfg *api.FunctionConfiguration) {
	cfg.State, cfg.StateReason, cfg.StateReasonCode = "Pending", creatingReason, "Creating"
}

// importInProgress is Lambda's answer to a change of a function while its
// image is imported.
func (s *Service) importInProgress(f *metadata.Function) *api.Error {
	if f.ImageImport.Creating {
		return api.Errorf(api.ResourceConflict, "The operation cannot be performed at this time. The function is currently in the following state: Pending")
	}
	return api.Errorf(api.ResourceConflict, "The operation cannot be performed at this time. An update is in progress for resource: %s", f.Latest.FunctionArn)
}

// startImport runs an import in the background; r is closed when it ends.
func (s *Service) startImport(account, name string, imp metadata.ImageImport, r *images.Resolved) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer r.Close()
		s.runImport(account, name, imp, r)
	}()
}

var errSuperseded = errors.New("controlplane: the image import was replaced or its function deleted")

func (s *Service) runImport(account, name string, imp metadata.ImageImport, r *images.Resolved) {
	s.running.Add(1)
	defer s.running.Add(-1)
	ctx, cancel := context.WithCancel(s.bg)
	defer cancel()
	log := s.log.With("account", account, "function", name, "image", imp.Resolved)
	log.Info("image import started")
	start := time.Now()
	go func() { // the beat, six per ImportStale: other control planes leave a live owner's import alone
		t := time.NewTicker(s.cfg.ImportStale / 6)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, err := s.store.Modify(ctx, account, name, func(f *metadata.Function) error {
				if f.ImageImport == nil || f.ImageImport.Token != imp.Token {
					return errSuperseded
				}
				f.ImageImport.Owner, f.ImageImport.Beat = s.owner, s.cfg.Now()
				return nil
			})
			if errors.Is(err, errSuperseded) || errors.Is(err, metadata.ErrNotFound) {
				log.Info("image import abandoned: replaced, or its function deleted")
				cancel()
				return
			}
		}
	}()
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
	if s.bg.Err() != nil {
		s.handOver(account, name, imp.Token)
		return
	}
	if ctx.Err() != nil {
		return // superseded
	}
	if err != nil {
		log.Warn("image import failed", "err", err)
	} else {
		log.Info("image import done", "bytes", last, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	if ferr := s.finishImport(account, name, imp.Token, res, err); ferr != nil && !errors.Is(ferr, errUnchanged) {
		log.Error("image import: recording its end failed; another control plane redoes it", "err", ferr)
	}
}

// handOver gives up import token as this control plane stops: its beat is
// cleared, so another control plane (or this one's next start) takes it
// over at its next look rather than after ImportStale.
func (s *Service) handOver(account, name, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.store.Modify(ctx, account, name, func(f *metadata.Function) error {
		if f.ImageImport == nil || f.ImageImport.Token != token {
			return errUnchanged
		}
		f.ImageImport.Beat = time.Time{}
		return nil
	})
}

// importFailure is Lambda's StateReasonCode and reason for an import that
// failed.
func importFailure(uri string, err error) (code, reason string) {
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

// finishImport records the end of import token: on success $LATEST (and
// the versions published while it ran) get the image, on failure they are
// Failed with Lambda's reason code. Nothing is written when the import was
// replaced meanwhile.
func (s *Service) finishImport(account, name, token string, res *images.Import, ierr error) error {
	_, err := s.store.Modify(context.WithoutCancel(s.bg), account, name, func(f *metadata.Function) error {
		imp := f.ImageImport
		if imp == nil || imp.Token != token {
			return errUnchanged
		}
		f.ImageImport = nil
		var code *api.ImageCode
		var failCode, failReason string
		if ierr == nil {
			code = &api.ImageCode{ImageUri: imp.URI, ResolvedImageUri: imp.Resolved, Manifest: res.ManifestName}
		} else {
			failCode, failReason = importFailure(imp.URI, ierr)
		}
		end := func(cfg *api.FunctionConfiguration) {
			if code != nil {
				c := *code
				cfg.KilnImage = &c
				cfg.State, cfg.StateReason, cfg.StateReasonCode = "Active", "", ""
			} else {
				cfg.State, cfg.StateReason, cfg.StateReasonCode = "Failed", failReason, failCode
			}
		}
		l := &f.Latest
		switch {
		case imp.Creating:
			end(l)
		case code != nil:
			l.CodeSha256, l.CodeSize, l.KilnImage, l.Architectures = strings.TrimPrefix(imp.Digest, "sha256:"), 0, code, imp.Architectures
		}
		l.LastUpdateStatus, l.LastUpdateStatusReason, l.LastUpdateStatusReasonCode = "Successful", "", ""
		if code == nil {
			l.LastUpdateStatus, l.LastUpdateStatusReason, l.LastUpdateStatusReasonCode = "Failed", failReason, failCode
		}
		l.RevisionId, l.LastModified = api.NewUUID(), s.timestamp()
		for _, v := range f.Versions {
			if v.State == "Pending" && v.KilnImage != nil && v.KilnImage.Manifest == "" && v.KilnImage.ResolvedImageUri == imp.Resolved {
				end(v)
			}
		}
		return nil
	})
	return err
}

// resumeImports takes over the imports whose owner stopped beating (a
// control plane that died or was stopped mid-import), now and every
// quarter of ImportStale.
func (s *Service) resumeImports() {
	t := time.NewTicker(s.cfg.ImportStale / 4)
	defer t.Stop()
	for {
		fns, err := s.store.All(s.bg)
		if err != nil && s.bg.Err() == nil {
			s.log.Warn("image imports: listing functions failed", "err", err)
		}
		for _, f := range fns {
			if imp := f.ImageImport; imp != nil && s.cfg.Now().Sub(imp.Beat) > s.cfg.ImportStale {
				s.resume(f.Account, f.Name, imp.Token)
			}
		}
		select {
		case <-s.bg.Done():
			return
		case <-t.C:
		}
	}
}

// resume claims import token of a function (compare-and-set: one control
// plane wins) and runs it again from the image's resolved URI.
func (s *Service) resume(account, name, token string) {
	var imp metadata.ImageImport
	_, err := s.store.Modify(s.bg, account, name, func(f *metadata.Function) error {
		if f.ImageImport == nil || f.ImageImport.Token != token || s.cfg.Now().Sub(f.ImageImport.Beat) <= s.cfg.ImportStale {
			return errUnchanged
		}
		f.ImageImport.Owner, f.ImageImport.Beat = s.owner, s.cfg.Now()
		imp = *f.ImageImport
		return nil
	})
	if err != nil {
		return // another control plane took it, or it ended
	}
	s.log.Info("image import resumed", "account", account, "function", name, "image", imp.Resolved)
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
	if err != nil {
		if s.bg.Err() == nil {
			s.finishImport(account, name, token, nil, err)
		}
		return
	}
	s.startImport(account, name, imp, r)
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
