package assignment

import (
	"context"
	"errors"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// Provision is provisioned concurrency for one function version.
type Provision struct {
	Account  string
	Function *api.FunctionConfiguration // a published version
	N        int
	// Report is told, from its own goroutine, how many environments are
	// initialized and whether allocation failed (err is an init failure).
	Report func(allocated int, err error)
}

// ProvisionsOf is f's provisioned concurrency, one Provision per version
// (an alias's primary version carries the alias's), each reporting to
// report with the qualifier it was configured on.
func ProvisionsOf(f *metadata.Function, report func(qualifier string, requested, allocated int, failure error)) []Provision {
	var provs []Provision
	for q, p := range f.Provisioned {
		cfg, err := f.Resolve(q, 0)
		if err != nil || cfg.Version == metadata.Latest {
			continue
		}
		qualifier, requested := q, p.Requested
		provs = append(provs, Provision{Account: f.Account, Function: cfg, N: requested,
			Report: func(allocated int, failure error) { report(qualifier, requested, allocated, failure) }})
	}
	return provs
}

// ReportProvisioned writes a provisioned-concurrency status into the
// function's metadata: IN_PROGRESS, READY once allocated reaches
// requested, FAILED with the init error. A report about a configuration
// since changed or deleted is dropped.
func ReportProvisioned(ctx context.Context, store *metadata.Store, account, name, qualifier string, requested, allocated int, failure error) error {
	status, reason := "IN_PROGRESS", ""
	switch {
	case failure != nil:
		status, reason = "FAILED", "FUNCTION_ERROR_INIT_FAILURE: "+failure.Error()
	case allocated >= requested:
		status = "READY"
	}
	_, err := store.Modify(ctx, account, name, func(f *metadata.Function) error {
		p, ok := f.Provisioned[qualifier]
		if !ok || p.Requested != requested || p.Status == status && p.Allocated == allocated && p.StatusReason == reason {
			return errStale
		}
		p.Status, p.StatusReason, p.Allocated = status, reason, min(allocated, requested)
		return nil
	})
	if errors.Is(err, errStale) || errors.Is(err, metadata.ErrNotFound) {
		return nil
	}
	return err
}

// errStale aborts a status write that no longer applies.
var errStale = errors.New("stale status")

// SetProvisioned replaces the provisioned concurrency of one function: every
// version not listed keeps none. Environments are created in the
// background, replaced when they die, and preferred over on-demand ones.
func (s *Service) SetProvisioned(account, function string, provs []Provision) {
	wanted := map[poolKey]Provision{}
	for _, pv := range provs {
		wanted[keyOf(Request{Account: account, Function: pv.Function})] = pv
	}
	var doomed []*Env
	s.mu.Lock()
	for k, p := range s.pools {
		if k.account != account || k.function != function {
			continue
		}
		if _, ok := wanted[k]; !ok && p.target > 0 {
			p.target, p.prov = 0, nil
			doomed = append(doomed, p.trimProvisioned()...)
		}
	}
	for k, pv := range wanted {
		p := s.pools[k]
		if p == nil {
			p = &pool{}
			s.pools[k] = p
		}
		changed := p.target != pv.N
		pv := pv
		p.target, p.prov = pv.N, &pv
		doomed = append(doomed, p.trimProvisioned()...)
		s.reconcileLocked(p)
		if changed {
			p.provErr = nil
			s.reportLocked(p)
		}
	}
	s.mu.Unlock()
	for _, e := range doomed {
		s.destroy(e)
	}
}

// trimProvisioned takes idle provisioned environments beyond the target out
// of the pool; busy ones go when released.
func (p *pool) trimProvisioned() []*Env {
	var out []*Env
	for p.provisioned > p.target && len(p.idleProv) > 0 {
		n := len(p.idleProv)
		out = append(out, p.idleProv[n-1])
		p.idleProv = p.idleProv[:n-1]
		p.provisioned--
	}
	return out
}

// reconcileLocked starts environments until the pool has its target.
func (s *Service) reconcileLocked(p *pool) {
	for p.prov != nil && !p.retired && p.provisioned < p.target {
		p.provisioned++
		p.creating++
		go s.provisionOne(p, p.prov)
	}
}

func (s *Service) provisionOne(p *pool, pv *Provision) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := Request{Account: pv.Account, Function: pv.Function, initType: "provisioned-concurrency"}
	e, err := s.create(ctx, req, keyOf(req))
	s.mu.Lock()
	defer s.mu.Unlock()
	p.creating--
	if err != nil {
		p.provisioned--
		s.cfg.Logger.Warn("provisioned concurrency: environment failed", "function", pv.Function.FunctionName,
			"version", pv.Function.Version, "err", err)
		p.provErr = err
		s.reportLocked(p)
		return
	}
	e.pool, e.provisioned, e.lastUsed = p, true, time.Now()
	if p.retired || p.provisioned > p.target {
		p.provisioned--
		go s.destroy(e)
		return
	}
	p.idleProv = append(p.idleProv, e)
	s.reportLocked(p)
}

// reportLocked tells the pool's Provision how many environments are ready,
// from one goroutine per pool so the last report carries the latest counts.
func (s *Service) reportLocked(p *pool) {
	if p.prov == nil || p.prov.Report == nil {
		return
	}
	if p.reporting {
		p.reportAgain = true
		return
	}
	p.reporting = true
	go func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for p.prov != nil && p.prov.Report != nil {
			p.reportAgain = false
			report, allocated, err := p.prov.Report, p.provisioned-p.creating, p.provErr
			s.mu.Unlock()
			report(allocated, err)
			s.mu.Lock()
			if !p.reportAgain {
				break
			}
		}
		p.reporting = false
	}()
}
