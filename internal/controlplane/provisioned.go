package controlplane

import (
	"maps"
	"net/http"
	"slices"
	"sort"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// Provisioned concurrency: the control plane keeps the requested number per
// qualifier; the assignment service allocates environments and writes their
// status back into the same record.

type putProvisionedRequest struct {
	ProvisionedConcurrentExecutions *int `json:"ProvisionedConcurrentExecutions"`
}

func provisionedNotFound() *api.Error {
	return api.Errorf(api.ProvisionedConcurrency, "No Provisioned Concurrency Config found for this function")
}

// provisionedQualifier reads the required ?Qualifier= of the
// provisioned-concurrency calls.
func (s *Service) provisionedQualifier(c *call) (api.FunctionRef, error) {
	ref, err := s.function(c, true)
	if err != nil {
		return ref, err
	}
	if ref.Qualifier == "" {
		return ref, validation(nil, "qualifier", "Member must not be null")
	}
	if ref.Qualifier == metadata.Latest {
		return ref, api.Errorf(api.InvalidParameterValue, "Provisioned Concurrency Configs cannot be applied to unpublished function versions.")
	}
	return ref, nil
}

// targetVersion is the version a provisioned-concurrency qualifier runs.
func targetVersion(f *metadata.Function, q string) (string, bool) {
	if _, ok := f.Versions[q]; ok {
		return q, true
	}
	if a, ok := f.Aliases[q]; ok {
		return a.FunctionVersion, true
	}
	return "", false
}

func (s *Service) putProvisionedConcurrency(c *call) error {
	ref, err := s.provisionedQualifier(c)
	if err != nil {
		return err
	}
	var req putProvisionedRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	n := req.ProvisionedConcurrentExecutions
	reservedElsewhere, _, unlock, err := s.reservation(c, ref.Name, n, "provisionedConcurrentExecutions", 1)
	if err != nil {
		return err
	}
	defer unlock()
	var out *metadata.Provisioned
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		version, ok := targetVersion(f, ref.Qualifier)
		if !ok {
			return s.notFound(f.Account, f.Name, ref.Qualifier)
		}
		// A version may be provisioned once: directly or through one alias.
		total := *n
		for q, p := range f.Provisioned {
			if q == ref.Qualifier {
				continue
			}
			if v, _ := targetVersion(f, q); v == version {
				return api.Errorf(api.ResourceConflict, "Alias or version %s already has provisioned concurrency for version %s.", q, version)
			}
			total += p.Requested
		}
		if f.ReservedConcurrency != nil && total > *f.ReservedConcurrency {
			return api.Errorf(api.InvalidParameterValue, "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for function")
		}
		if f.ReservedConcurrency == nil && total > s.cfg.AccountConcurrency-reservedElsewhere-s.minUnreserved() {
			return api.Errorf(api.InvalidParameterValue, "Specified ConcurrentExecutions for function is greater than account's unreserved concurrency [%d].",
				s.cfg.AccountConcurrency-reservedElsewhere-s.minUnreserved())
		}
		if f.Provisioned == nil {
			f.Provisioned = map[string]*metadata.Provisioned{}
		}
		out = &metadata.Provisioned{Requested: *n, Status: "IN_PROGRESS", LastModified: s.timestamp()}
		f.Provisioned[ref.Qualifier] = out
		return nil
	})
	if err != nil {
		return err
	}
	return c.reply(http.StatusAccepted, provisionedDoc(out, ""))
}

func provisionedDoc(p *metadata.Provisioned, arn string) api.ProvisionedConcurrencyConfig {
	return api.ProvisionedConcurrencyConfig{
		FunctionArn:                              arn,
		RequestedProvisionedConcurrentExecutions: p.Requested,
		AvailableProvisionedConcurrentExecutions: p.Allocated,
		AllocatedProvisionedConcurrentExecutions: p.Allocated,
		Status:                                   p.Status,
		StatusReason:                             p.StatusReason,
		LastModified:                             p.LastModified,
	}
}

// getProvisionedConcurrency serves both Get (?Qualifier=) and List (?List=ALL).
func (s *Service) getProvisionedConcurrency(c *call) error {
	if c.r.URL.Query().Get("List") == "ALL" {
		return s.listProvisionedConcurrency(c)
	}
	c.op = "GetProvisionedConcurrencyConfig"
	ref, err := s.provisionedQualifier(c)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, ref.Qualifier)
	if err != nil {
		return err
	}
	p, ok := f.Provisioned[ref.Qualifier]
	if _, exists := targetVersion(f, ref.Qualifier); !ok && !exists {
		return s.notFound(f.Account, f.Name, ref.Qualifier)
	}
	if !ok {
		return provisionedNotFound()
	}
	return c.reply(http.StatusOK, provisionedDoc(p, ""))
}

func (s *Service) listProvisionedConcurrency(c *call) error {
	c.op = "ListProvisionedConcurrencyConfigs"
	ref, err := s.function(c, false)
	if err != nil {
		return err
	}
	f, err := s.get(c, ref.Name, "")
	if err != nil {
		return err
	}
	page, err := listQuery(c.r, 50)
	if err != nil {
		return err
	}
	qs := make([]string, 0, len(f.Provisioned))
	for q := range f.Provisioned {
		qs = append(qs, q)
	}
	sort.Strings(qs)
	qs, next, err := paginate(qs, func(q string) string { return q }, page)
	if err != nil {
		return err
	}
	items := make([]api.ProvisionedConcurrencyConfig, 0, len(qs))
	for _, q := range qs {
		items = append(items, provisionedDoc(f.Provisioned[q], s.arn(f.Account, f.Name, q)))
	}
	return c.page("ProvisionedConcurrencyConfigs", items, next)
}

func (s *Service) deleteProvisionedConcurrency(c *call) error {
	ref, err := s.provisionedQualifier(c)
	if err != nil {
		return err
	}
	_, err = s.modify(c, ref.Name, func(f *metadata.Function) error {
		if _, ok := f.Provisioned[ref.Qualifier]; !ok {
			if _, ok := targetVersion(f, ref.Qualifier); !ok {
				return s.notFound(f.Account, f.Name, ref.Qualifier)
			}
			return errUnchanged
		}
		delete(f.Provisioned, ref.Qualifier)
		return nil
	})
	if err != nil && err != errUnchanged {
		return err
	}
	return c.noContent()
}

func (s *Service) getAccountSettings(c *call) error {
	fns, err := s.store.List(c.ctx, c.caller.Account)
	if err != nil {
		return err
	}
	var out api.AccountSettings
	reserved := 0
	for _, f := range fns {
		if f.ReservedConcurrency != nil {
			reserved += *f.ReservedConcurrency
		}
	}
	out.AccountLimit.TotalCodeSize = s.cfg.MaxCodeStorage
	out.AccountLimit.CodeSizeUnzipped = 262144000
	out.AccountLimit.CodeSizeZipped = 52428800
	out.AccountLimit.ConcurrentExecutions = s.cfg.AccountConcurrency
	out.AccountLimit.UnreservedConcurrentExecutions = s.cfg.AccountConcurrency - reserved
	ls, err := s.store.Layers(c.ctx)
	if err != nil {
		return err
	}
	layers, err := ls.List(c.ctx, c.caller.Account)
	if err != nil {
		return err
	}
	out.AccountUsage.TotalCodeSize = codeSize(fns, layers)
	out.AccountUsage.FunctionCount = len(fns)
	return c.reply(http.StatusOK, out)
}

// codeSize is an account's AccountUsage.TotalCodeSize: each function's
// packages and each layer version's archive, as Lambda counts them (one
// package shared by versions of a function counts once; two functions with
// the same package count twice).
func codeSize(fns []*metadata.Function, layers []*metadata.Layer) int64 {
	var n int64
	for _, l := range layers {
		for _, v := range l.Versions {
			n += v.CodeSize
		}
	}
	for _, f := range fns {
		seen := map[string]bool{}
		for _, cfg := range append([]*api.FunctionConfiguration{&f.Latest}, slices.Collect(maps.Values(f.Versions))...) {
			if !seen[cfg.CodeSha256] {
				seen[cfg.CodeSha256] = true
				n += cfg.CodeSize
			}
		}
	}
	return n
}
