package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/metadata"
)

type functionCode struct {
	ZipFile         []byte `json:"ZipFile"`
	S3Bucket        string `json:"S3Bucket"`
	S3Key           string `json:"S3Key"`
	S3ObjectVersion string `json:"S3ObjectVersion"`
	ImageUri        string `json:"ImageUri"`
}

type createFunctionRequest struct {
	settings
	FunctionName         string            `json:"FunctionName"`
	Code                 *functionCode     `json:"Code"`
	Publish              bool              `json:"Publish"`
	PackageType          string            `json:"PackageType"`
	Tags                 map[string]string `json:"Tags"`
	Architectures        []string          `json:"Architectures"`
	CodeSigningConfigArn string            `json:"CodeSigningConfigArn"`
}

type updateFunctionConfigurationRequest struct {
	settings
	RevisionId string `json:"RevisionId"`
}

type updateFunctionCodeRequest struct {
	functionCode
	Publish       bool     `json:"Publish"`
	DryRun        bool     `json:"DryRun"`
	RevisionId    string   `json:"RevisionId"`
	Architectures []string `json:"Architectures"`
}

// zipSource checks that code is a zip uploaded in the request, the only
// source Kiln takes.
func zipSource(code *functionCode) error {
	switch {
	case code.ImageUri != "":
		return api.Errorf(api.InvalidParameterValue, "Please don't provide ImageUri when updating a function with packageType Zip.")
	case code.S3Bucket != "" || code.S3Key != "":
		return api.Errorf(api.InvalidParameterValue, "Kiln does not read code from S3: send the deployment package as ZipFile.")
	case len(code.ZipFile) == 0:
		return api.Errorf(api.InvalidParameterValue, "Please provide a source for function code: ZipFile.")
	}
	return nil
}

// putCode stores a deployment package with put (the code store's Put, or
// Stage for a function's code, unpacked in the background), refusing it
// when the code store would grow beyond MaxCodeStorage.
func (s *Service) putCode(c *call, zip []byte, put func(context.Context, []byte) (codestore.Code, error)) (codestore.Code, error) {
	if s.code.TotalSize()+int64(len(zip)) > s.cfg.MaxCodeStorage && !s.code.Has(codestore.Digest(zip)) {
		return codestore.Code{}, api.Errorf(api.CodeStorageExceeded, "Code storage limit exceeded.")
	}
	return put(c.ctx, zip)
}

func (s *Service) createFunction(c *call) error {
	var req createFunctionRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.FunctionName == "" {
		return validation(nil, "functionName", "Member must not be null")
	}
	ref, err := api.ParseFunctionRef(req.FunctionName)
	if err != nil {
		return err
	}
	if ref.Qualifier != "" {
		return api.Errorf(api.InvalidParameterValue, "Unsupported qualifier %s: CreateFunction takes an unqualified function name or ARN.", ref.Qualifier)
	}
	if err := s.checkOwner(c, ref); err != nil {
		return err
	}
	if req.Role == nil {
		return validation(nil, "role", "Member must not be null")
	}
	if req.Code == nil {
		return validation(nil, "code", "Member must not be null")
	}
	switch req.PackageType {
	case "":
		req.PackageType = "Zip"
	case "Zip", "Image":
	default:
		return validation(req.PackageType, "packageType", "Member must satisfy enum value set: [Image, Zip]")
	}
	if req.CodeSigningConfigArn != "" {
		return api.Errorf(api.InvalidParameterValue, "Kiln does not support code signing.")
	}
	archs := []string{"x86_64"}
	if req.Architectures != nil {
		if err := checkArchitectures(req.Architectures); err != nil {
			return err
		}
		archs = req.Architectures
	}
	if err := checkTags(req.Tags); err != nil {
		return err
	}
	cfg := api.FunctionConfiguration{
		FunctionName:     ref.Name,
		FunctionArn:      s.arn(c.caller.Account, ref.Name, ""),
		Timeout:          3,
		MemorySize:       128,
		Version:          metadata.Latest,
		TracingConfig:    &api.TracingConfig{Mode: "PassThrough"},
		State:            "Active",
		LastUpdateStatus: "Successful",
		PackageType:      req.PackageType,
		Architectures:    archs,
		EphemeralStorage: &api.EphemeralStorage{Size: 512},
		SnapStart:        &api.SnapStartResponse{ApplyOn: "None", OptimizationStatus: "Off"},
	}
	if err := apply(&cfg, &req.settings); err != nil {
		return err
	}
	s.describeRuntime(&cfg)
	image := cfg.PackageType == "Image"
	if cfg.Layers, err = s.layersOf(c, image, req.Layers); err != nil {
		return err
	}
	switch {
	case image && cfg.Runtime != "":
		return api.Errorf(api.InvalidParameterValue, "Runtime is not supported for functions created with image packages: the image brings its own.")
	case !image && (cfg.Runtime == "" || cfg.Handler == ""):
		return api.Errorf(api.InvalidParameterValue, "Runtime and Handler are mandatory parameters for functions created with deployment packages.")
	}
	source := zipSource
	if image {
		source = imageSource
	}
	if err := source(req.Code); err != nil {
		return err
	}
	// Refuse a duplicate before the (possibly large) upload is unpacked.
	if _, err := s.store.Get(c.ctx, c.caller.Account, ref.Name); err == nil {
		return functionExists(ref.Name)
	} else if !errors.Is(err, metadata.ErrNotFound) {
		return err
	}
	var resolved *images.Resolved
	if image {
		if resolved, err = s.resolveImage(c, &cfg, req.Code.ImageUri); err != nil {
			return err
		}
		defer func() { // unless its import took it
			if resolved != nil {
				resolved.Close()
			}
		}()
	} else {
		code, err := s.putCode(c, req.Code.ZipFile, s.code.Stage)
		if err != nil {
			return err
		}
		cfg.CodeSha256, cfg.CodeSize = code.Sha256, code.Size
		if err := s.checkUnzipped(&cfg, code.Unzipped); err != nil {
			return err
		}
	}
	// Pending until its code is imported (an image) or unpacked (a zip).
	pending(&cfg)
	cfg.LastUpdateStatus, cfg.LastUpdateStatusReason, cfg.LastUpdateStatusReasonCode = "InProgress", creatingReason, "Creating"
	cfg.RevisionId, cfg.LastModified = api.NewUUID(), s.timestamp()

	f := &metadata.Function{Account: c.caller.Account, Name: ref.Name, Latest: cfg, Tags: req.Tags}
	f.Import = s.newImport(&cfg, resolved, true)
	out := &f.Latest
	if req.Publish {
		v := s.publish(f, nil)
		// CreateFunction answers with the new version but the unqualified ARN.
		cp := *v
		cp.FunctionArn = f.Latest.FunctionArn
		out = &cp
	}
	if err := s.store.Create(c.ctx, f); err != nil {
		if errors.Is(err, metadata.ErrExists) {
			return functionExists(ref.Name)
		}
		return err
	}
	done := s.startImport(f.Account, f.Name, *f.Import, s.work(f, resolved, req.Code.ZipFile))
	resolved = nil
	hold(c, f.Import, done)
	return c.reply(http.StatusCreated, out)
}

// describeRuntime sets what Lambda reports of how a function runs: its
// logging (the default, the only one Kiln has) and its runtime's version,
// one per runtime name: the runtime installed with Kiln.
func (s *Service) describeRuntime(cfg *api.FunctionConfiguration) {
	cfg.LoggingConfig = &api.LoggingConfig{LogFormat: "Text", LogGroup: "/aws/lambda/" + cfg.FunctionName}
	cfg.RuntimeVersionConfig = nil
	if cfg.Runtime != "" {
		sum := sha256.Sum256([]byte("kiln-runtime\n" + cfg.Runtime))
		cfg.RuntimeVersionConfig = &api.RuntimeVersionConfig{RuntimeVersionArn: fmt.Sprintf("arn:aws:lambda:%s::runtime:%x", s.cfg.Region, sum)}
	}
}

// work is the import of f's code: the image r, or the zip f.Import names
// (whose bytes are zip) when r is nil.
func (s *Service) work(f *metadata.Function, r *images.Resolved, zip []byte) importWork {
	if r == nil {
		return s.unpackZip(*f.Import, zip)
	}
	return s.saveImage(f.Account, *f.Import, r)
}

func functionExists(name string) *api.Error {
	return api.Errorf(api.ResourceConflict, "Function already exist: %s", name)
}

// resolve returns the configuration a qualifier names, as GetFunction and
// GetFunctionConfiguration show it: the ARN carries the qualifier asked for.
func (s *Service) resolve(f *metadata.Function, q string) (*api.FunctionConfiguration, error) {
	var cfg api.FunctionConfiguration
	switch {
	case q == "":
		cfg = f.Latest
	case q == metadata.Latest:
		cfg = f.Latest
		cfg.FunctionArn = s.arn(f.Account, f.Name, q)
	case digitsRe.MatchString(q):
		v, ok := f.Versions[q]
		if !ok {
			return nil, s.notFound(f.Account, f.Name, q)
		}
		cfg = *v
	default:
		a, ok := f.Aliases[q]
		if !ok {
			return nil, s.notFound(f.Account, f.Name, q)
		}
		v, ok := f.Version(a.FunctionVersion)
		if !ok {
			return nil, s.notFound(f.Account, f.Name, q)
		}
		cfg = *v
		cfg.FunctionArn = s.arn(f.Account, f.Name, q)
	}
	// Records written before Kiln reported these get them as they are read.
	if cfg.LastUpdateStatus == "" {
		cfg.LastUpdateStatus = "Successful"
	}
	if cfg.LoggingConfig == nil {
		s.describeRuntime(&cfg)
	}
	return &cfg, nil
}

// getResolved reads the function ref names and resolves its qualifier.
func (s *Service) getResolved(c *call, ref api.FunctionRef) (*metadata.Function, *api.FunctionConfiguration, error) {
	f, err := s.get(c, ref.Name, ref.Qualifier)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := s.resolve(f, ref.Qualifier)
	if err != nil {
		return nil, nil, err
	}
	return f, cfg, nil
}

func (s *Service) getFunction(c *call) error {
	ref, err := s.function(c, true)
	if err != nil {
		return err
	}
	f, cfg, err := s.getResolved(c, ref)
	if err != nil {
		return err
	}
	out := api.GetFunctionResponse{
		Configuration: cfg,
		Code:          &api.FunctionCodeLocation{RepositoryType: "S3", Location: s.codeURL(c.r, cfg.CodeSha256)},
		Tags:          f.Tags,
	}
	if im := cfg.KilnImage; im != nil {
		out.Code = &api.FunctionCodeLocation{RepositoryType: "ECR", ImageUri: im.ImageUri, ResolvedImageUri: im.ResolvedImageUri}
	}
	if out.Tags == nil {
		out.Tags = map[string]string{}
	}
	if f.ReservedConcurrency != nil {
		out.Concurrency = &api.Concurrency{ReservedConcurrentExecutions: f.ReservedConcurrency}
	}
	return c.reply(http.StatusOK, out)
}

func (s *Service) getFunctionConfiguration(c *call) error {
	ref, err := s.function(c, true)
	if err != nil {
		return err
	}
	_, cfg, err := s.getResolved(c, ref)
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, cfg)
}

// listed is a configuration as list calls show it: without the state
// fields, which Lambda leaves to GetFunction.
func listed(cfg api.FunctionConfiguration) *api.FunctionConfiguration {
	cfg.State, cfg.StateReason, cfg.StateReasonCode = "", "", ""
	cfg.LastUpdateStatus, cfg.LastUpdateStatusReason, cfg.LastUpdateStatusReasonCode = "", "", ""
	return &cfg
}

// versionKey orders a function's versions: $LATEST first, then by number.
func versionKey(name, version string) string {
	n := 0
	if version != metadata.Latest {
		n, _ = strconv.Atoi(version)
		n++
	}
	return fmt.Sprintf("%s\x00%010d", name, n)
}

// allVersions is $LATEST (with its qualified ARN) and every published version.
func (s *Service) allVersions(f *metadata.Function) []*api.FunctionConfiguration {
	latest := listed(f.Latest)
	latest.FunctionArn = s.arn(f.Account, f.Name, metadata.Latest)
	out := []*api.FunctionConfiguration{latest}
	for _, v := range f.SortedVersions() {
		out = append(out, listed(*f.Versions[v]))
	}
	return out
}

func (s *Service) listFunctions(c *call) error {
	q := c.r.URL.Query()
	all := false
	switch v := q.Get("FunctionVersion"); v {
	case "":
	case "ALL":
		all = true
	default:
		return validation(v, "functionVersion", "Member must satisfy enum value set: [ALL]")
	}
	p, err := listQuery(c.r, 50)
	if err != nil {
		return err
	}
	fns, err := s.store.List(c.ctx, c.caller.Account)
	if err != nil {
		return err
	}
	var items []*api.FunctionConfiguration
	for _, f := range fns {
		if all {
			items = append(items, s.allVersions(f)...)
		} else {
			items = append(items, listed(f.Latest))
		}
	}
	page, next, err := paginate(items, func(cfg *api.FunctionConfiguration) string {
		return versionKey(cfg.FunctionName, cfg.Version)
	}, p)
	if err != nil {
		return err
	}
	if page == nil {
		page = []*api.FunctionConfiguration{}
	}
	return c.reply(http.StatusOK, api.ListFunctionsResponse{Functions: page, NextMarker: next})
}

func (s *Service) updateFunctionCode(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	var req updateFunctionCodeRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if req.Architectures != nil {
		if err := checkArchitectures(req.Architectures); err != nil {
			return err
		}
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	image := f.Latest.PackageType == "Image"
	source := zipSource
	if image {
		source = imageSource
	}
	if err := source(&req.functionCode); err != nil {
		return err
	}
	if req.RevisionId != "" && req.RevisionId != f.Latest.RevisionId {
		return revisionMismatch()
	}
	if f.Import != nil { // before the upload is stored (and again when the update is written)
		return s.importInProgress(f)
	}
	// code is the new code's identity, as the configuration records it.
	code := clone(&f.Latest)
	if req.Architectures != nil {
		code.Architectures = req.Architectures
	}
	var resolved *images.Resolved
	switch {
	case image:
		if resolved, err = s.resolveImage(c, code, req.ImageUri); err != nil {
			return err
		}
		defer func() { // unless its import took it
			if resolved != nil {
				resolved.Close()
			}
		}()
	default:
		put := s.code.Stage
		if req.DryRun {
			put = s.code.Check
		}
		stored, err := s.putCode(c, req.ZipFile, put)
		if err != nil {
			return err
		}
		code.CodeSha256, code.CodeSize = stored.Sha256, stored.Size
		if err := s.checkUnzipped(code, stored.Unzipped); err != nil {
			return err
		}
	}
	if req.DryRun {
		return c.reply(http.StatusOK, code)
	}
	var published *api.FunctionConfiguration
	f, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		if req.RevisionId != "" && req.RevisionId != f.Latest.RevisionId {
			return revisionMismatch()
		}
		if f.Import != nil {
			return s.importInProgress(f)
		}
		f.Latest.RevisionId, f.Latest.LastModified = api.NewUUID(), s.timestamp()
		// $LATEST runs its code until the import ends; a version
		// published now is Pending until then.
		f.Import = s.newImport(code, resolved, false)
		f.Latest.LastUpdateStatus, f.Latest.LastUpdateStatusReason, f.Latest.LastUpdateStatusReasonCode = "InProgress", updatingReason, ""
		published = nil
		if req.Publish {
			published = s.publish(f, nil)
			published.CodeSha256, published.CodeSize, published.KilnImage = code.CodeSha256, code.CodeSize, code.KilnImage
			published.Architectures = code.Architectures
			pending(published)
		}
		return nil
	})
	if err != nil {
		return err
	}
	done := s.startImport(f.Account, f.Name, *f.Import, s.work(f, resolved, req.ZipFile))
	resolved = nil
	hold(c, f.Import, done)
	if published != nil {
		return c.reply(http.StatusOK, published)
	}
	// Lambda answers with the new code's identity while $LATEST still runs
	// the old.
	out := f.Latest
	out.CodeSha256, out.CodeSize, out.Architectures = code.CodeSha256, code.CodeSize, code.Architectures
	return c.reply(http.StatusOK, &out)
}

func (s *Service) updateFunctionConfiguration(c *call) error {
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	var req updateFunctionConfigurationRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	current, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	layers, err := s.layersOf(c, current.Latest.PackageType == "Image", req.Layers)
	if err != nil {
		return err
	}
	f, err := s.modify(c, ref.Name, func(f *metadata.Function) error {
		if req.RevisionId != "" && req.RevisionId != f.Latest.RevisionId {
			return revisionMismatch()
		}
		if f.Import != nil {
			return s.importInProgress(f)
		}
		cfg := clone(&f.Latest)
		if err := apply(cfg, &req.settings); err != nil {
			return err
		}
		if req.Layers != nil {
			cfg.Layers = layers
			if len(layers) > 0 {
				n, err := s.code.Unzipped(c.ctx, cfg.CodeSha256)
				if err != nil {
					return err
				}
				if err := s.checkUnzipped(cfg, n); err != nil {
					return err
				}
			}
		}
		s.describeRuntime(cfg)
		cfg.RevisionId, cfg.LastModified = api.NewUUID(), s.timestamp()
		cfg.LastUpdateStatus = "Successful"
		f.Latest = *cfg
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusOK, &f.Latest)
}

func (s *Service) deleteFunction(c *call) error {
	ref, err := s.function(c, true)
	if err != nil {
		return err
	}
	switch q := ref.Qualifier; {
	case q == "":
		f, _ := s.store.Get(c.ctx, c.caller.Account, ref.Name)
		if err := s.store.Delete(c.ctx, c.caller.Account, ref.Name); err != nil {
			if errors.Is(err, metadata.ErrNotFound) {
				return s.notFound(c.caller.Account, ref.Name, "")
			}
			return err
		}
		if f != nil {
			s.dropURLs(c, f, "")
		}
		return c.noContent()
	case q == metadata.Latest:
		return api.Errorf(api.InvalidParameterValue, "$LATEST version cannot be deleted without deleting the function.")
	case !digitsRe.MatchString(q):
		return api.Errorf(api.InvalidParameterValue, "Deletion of aliases is not supported.")
	}
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		if _, ok := f.Versions[ref.Qualifier]; !ok {
			return errUnchanged
		}
		if users := aliasesOf(f, ref.Qualifier); len(users) > 0 {
			return api.Errorf(api.ResourceConflict, "Unable to delete version because the following aliases reference it: [%s]", strings.Join(users, ", "))
		}
		delete(f.Versions, ref.Qualifier)
		delete(f.Provisioned, ref.Qualifier)
		delete(f.EventInvokeConfigs, ref.Qualifier)
		delete(f.Policies, ref.Qualifier)
		return nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return err
	}
	return c.noContent()
}

// clone deep-copies a configuration.
func clone(cfg *api.FunctionConfiguration) *api.FunctionConfiguration {
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	var out api.FunctionConfiguration
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return &out
}
