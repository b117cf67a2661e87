package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// importStale is Config.ImportStale's default.
const importStale = time.Minute

// Lambda's words for a function whose code is being imported.
const (
	creatingReason = "The function is being created."
	updatingReason = "The function is being updated."
)

// imports is the control plane's code imports: CreateFunction and
// UpdateFunctionCode answer once the code is checked (a zip) or resolved
// (an image), State Pending or LastUpdateStatus InProgress, and the rest
// (unpacking the zip, importing the image) runs here in the background.
type imports struct {
	owner   string // this control plane, as an import's owner
	bg      context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	running atomic.Int64 // image imports
	bytes   atomic.Int64
}

// importWork is an import's work, run in the background: the manifest of
// an image imported ("" for a zip), or why it failed.
type importWork func(ctx context.Context) (manifest string, err error)

func (s *Service) startImports() {
	s.owner = api.NewUUID()
	s.bg, s.stop = context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.resumeImports()
	}()
}

// Close stops the code imports this control plane runs; another control
// plane, or this one's next start, resumes them.
func (s *Service) Close() {
	s.stop()
	s.wg.Wait()
}

// newImport records the import of cfg's code (an image r, or the zip cfg
// names when r is nil), owned here.
func (s *Service) newImport(cfg *api.FunctionConfiguration, r *images.Resolved, creating bool) *metadata.CodeImport {
	imp := &metadata.CodeImport{Token: api.NewUUID(), Architectures: cfg.Architectures, Creating: creating, Owner: s.owner, Beat: s.cfg.Now()}
	if r == nil {
		imp.Zip, imp.Digest, imp.Size = true, cfg.CodeSha256, cfg.CodeSize
	} else {
		imp.URI, imp.Resolved, imp.Digest = cfg.KilnImage.ImageUri, r.ResolvedURI, r.Digest
	}
	return imp
}

// codeSha is the CodeSha256 the import's code has.
func codeSha(imp *metadata.CodeImport) string { return strings.TrimPrefix(imp.Digest, "sha256:") }

// pending marks a configuration whose code is being imported.
func pending(cfg *api.FunctionConfiguration) {
	cfg.State, cfg.StateReason, cfg.StateReasonCode = "Pending", creatingReason, "Creating"
}

// importInProgress is Lambda's answer to a change of a function while its
// code is imported.
func (s *Service) importInProgress(f *metadata.Function) *api.Error {
	if f.Import.Creating {
		return api.Errorf(api.ResourceConflict, "The operation cannot be performed at this time. The function is currently in the following state: Pending")
	}
	return api.Errorf(api.ResourceConflict, "The operation cannot be performed at this time. An update is in progress for resource: %s", f.Latest.FunctionArn)
}

// unpackZip is a zip's import: the code store decompresses and unpacks
// it, from zip when the caller still holds its bytes, else from its copy
// (fetched from the replicated store first when it is not here).
func (s *Service) unpackZip(imp metadata.CodeImport, zip []byte) importWork {
	return func(ctx context.Context) (string, error) {
		if zip != nil {
			return "", s.code.Unpack(ctx, zip)
		}
		_, err := s.code.Dir(ctx, imp.Digest)
		return "", err
	}
}

// zipHold is how long CreateFunction and UpdateFunctionCode hold their
// answer (Pending, InProgress: the function as written) for a zip's unpack
// to end: most zips unpack well within it, so a waiter's first look then
// finds the function Active rather than sleeping its delay, which is as
// long (a second in the SDKs and the CLI); a large one is answered while
// it is still unpacked.
const zipHold = time.Second

// startImport runs an import in the background; the channel is closed
// when it ends.
func (s *Service) startImport(account, name string, imp metadata.CodeImport, work importWork) <-chan struct{} {
	done := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(done)
		s.runImport(account, name, imp, work)
	}()
	return done
}

// hold waits up to zipHold for a zip's import to end (see zipHold).
func hold(c *call, imp *metadata.CodeImport, done <-chan struct{}) {
	if !imp.Zip {
		return
	}
	t := time.NewTimer(zipHold)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-c.ctx.Done():
	}
}

var errSuperseded = errors.New("controlplane: the code import was replaced or its function deleted")

func (s *Service) runImport(account, name string, imp metadata.CodeImport, work importWork) {
	ctx, cancel := context.WithCancel(s.bg)
	defer cancel()
	log := s.log.With("account", account, "function", name, "code", imp.Digest)
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
				if f.Import == nil || f.Import.Token != imp.Token {
					return errSuperseded
				}
				f.Import.Owner, f.Import.Beat = s.owner, s.cfg.Now()
				return nil
			})
			if errors.Is(err, errSuperseded) || errors.Is(err, metadata.ErrNotFound) {
				log.Info("code import abandoned: replaced, or its function deleted")
				cancel()
				return
			}
		}
	}()
	manifest, err := work(ctx)
	if s.bg.Err() != nil {
		s.handOver(account, name, imp.Token)
		return
	}
	if ctx.Err() != nil {
		return // superseded
	}
	if err != nil {
		log.Warn("code import failed", "err", err)
	} else {
		log.Debug("code import done", "elapsed", time.Since(start).Round(time.Millisecond))
	}
	if ferr := s.finishImport(account, name, imp.Token, manifest, err); ferr != nil && !errors.Is(ferr, errUnchanged) {
		log.Error("code import: recording its end failed; another control plane redoes it", "err", ferr)
	}
}

// handOver gives up import token as this control plane stops: its beat is
// cleared, so another control plane (or this one's next start) takes it
// over at its next look rather than after ImportStale.
func (s *Service) handOver(account, name, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.store.Modify(ctx, account, name, func(f *metadata.Function) error {
		if f.Import == nil || f.Import.Token != token {
			return errUnchanged
		}
		f.Import.Beat = time.Time{}
		return nil
	})
}

// importFailure is Lambda's StateReasonCode and reason for an import that
// failed.
func importFailure(imp *metadata.CodeImport, err error) (code, reason string) {
	if !imp.Zip {
		return imageFailure(imp.URI, err)
	}
	var ae *api.Error
	if errors.As(err, &ae) { // the code store's answer for a package that does not unpack
		return "InvalidZipFileException", ae.Message
	}
	return "InternalError", fmt.Sprintf("Unpacking the function's code failed: %v", err)
}

// finishImport records the end of import token: on success $LATEST (and
// the versions published while it ran) get the code, on failure they are
// Failed with Lambda's reason code. Nothing is written when the import was
// replaced meanwhile.
func (s *Service) finishImport(account, name, token, manifest string, ierr error) error {
	_, err := s.store.Modify(context.WithoutCancel(s.bg), account, name, func(f *metadata.Function) error {
		imp := f.Import
		if imp == nil || imp.Token != token {
			return errUnchanged
		}
		f.Import = nil
		var image *api.ImageCode
		var failCode, failReason string
		switch {
		case ierr != nil:
			failCode, failReason = importFailure(imp, ierr)
		case !imp.Zip:
			image = &api.ImageCode{ImageUri: imp.URI, ResolvedImageUri: imp.Resolved, Manifest: manifest}
		}
		end := func(cfg *api.FunctionConfiguration) {
			if ierr == nil {
				if image != nil {
					c := *image
					cfg.KilnImage = &c
				}
				cfg.State, cfg.StateReason, cfg.StateReasonCode = "Active", "", ""
			} else {
				cfg.State, cfg.StateReason, cfg.StateReasonCode = "Failed", failReason, failCode
			}
		}
		l := &f.Latest
		switch {
		case imp.Creating:
			end(l)
		case ierr == nil:
			l.CodeSha256, l.CodeSize, l.KilnImage, l.Architectures = codeSha(imp), imp.Size, image, imp.Architectures
		}
		l.LastUpdateStatus, l.LastUpdateStatusReason, l.LastUpdateStatusReasonCode = "Successful", "", ""
		if ierr != nil {
			l.LastUpdateStatus, l.LastUpdateStatusReason, l.LastUpdateStatusReasonCode = "Failed", failReason, failCode
		}
		rev := api.NewUUID()
		if ierr == nil && f.PublishedFrom == l.RevisionId {
			f.PublishedFrom = rev // the version published with the code is still $LATEST
		}
		l.RevisionId, l.LastModified = rev, s.timestamp()
		for _, v := range f.Versions { // published while it ran: Pending with its code
			if v.State == "Pending" && v.CodeSha256 == codeSha(imp) && (imp.Zip || v.KilnImage != nil && v.KilnImage.Manifest == "") {
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
			s.log.Warn("code imports: listing functions failed", "err", err)
		}
		for _, f := range fns {
			if imp := f.Import; imp != nil && s.cfg.Now().Sub(imp.Beat) > s.cfg.ImportStale && (imp.Zip || s.cfg.Images != nil) {
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
// plane wins) and runs it again: a zip from the code store, an image from
// its resolved URI.
func (s *Service) resume(account, name, token string) {
	var imp metadata.CodeImport
	_, err := s.store.Modify(s.bg, account, name, func(f *metadata.Function) error {
		if f.Import == nil || f.Import.Token != token || s.cfg.Now().Sub(f.Import.Beat) <= s.cfg.ImportStale {
			return errUnchanged
		}
		f.Import.Owner, f.Import.Beat = s.owner, s.cfg.Now()
		imp = *f.Import
		return nil
	})
	if err != nil {
		return // another control plane took it, or it ended
	}
	s.log.Info("code import resumed", "account", account, "function", name, "code", imp.Digest)
	if imp.Zip {
		s.startImport(account, name, imp, s.unpackZip(imp, nil))
		return
	}
	r, err := s.resolveAgain(account, &imp)
	if err != nil {
		if s.bg.Err() == nil {
			s.finishImport(account, name, token, "", err)
		}
		return
	}
	s.startImport(account, name, imp, s.saveImage(account, imp, r))
}
