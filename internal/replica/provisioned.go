package replica

import (
	"context"
	"errors"
	"time"

	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/partition"
)

// provision is one version's provisioned concurrency in a partition. Every
// member keeps the wanted ones; the leader creates the environments
// (journaled with Provisioned set, so the next leader has them too).
type provision struct {
	assignment.Provision
	creating int   // environments being created (leader)
	failed   error // an init failure: not retried until reconfigured
	reported int   // allocated as last reported; -1: nothing yet
	failSent bool
}

func provisionKey(pv assignment.Provision) partition.Key {
	return partition.Key{Account: pv.Account, Function: pv.Function.FunctionName, Version: pv.Function.Version, Revision: pv.Function.RevisionId}
}

// SetProvisioned replaces the provisioned concurrency of one function,
// as assignment.Service.SetProvisioned does in one process: every member
// is told, the leader of the function's partition acts. A repeat of the
// same configuration keeps its progress.
func (m *Member) SetProvisioned(account, function string, provs []assignment.Provision) {
	p := m.parts[m.ring.Of(account, function)]
	p.mu.Lock()
	old := p.provisions
	p.provisions = map[partition.Key]*provision{}
	for k, pv := range old {
		if k.Account != account || k.Function != function {
			p.provisions[k] = pv
		}
	}
	for _, pv := range provs {
		k := provisionKey(pv)
		if was := old[k]; was != nil && was.N == pv.N {
			was.Provision = pv
			p.provisions[k] = was
			continue
		}
		p.provisions[k] = &provision{Provision: pv, reported: -1}
	}
	p.mu.Unlock()
	go p.reconcile()
}

// reconcile, on the leader, starts provisioned environments up to each
// wanted count, retires idle ones beyond it (or no longer wanted), and
// reports progress when it changed.
func (p *part) reconcile() {
	p.reconciling.Lock() // reports go out in order
	defer p.reconciling.Unlock()
	p.mu.Lock()
	if !p.leading {
		p.mu.Unlock()
		return
	}
	ready := map[partition.Key]int{}
	idle := map[partition.Key][]partition.Env{}
	for _, e := range p.st.Envs() {
		if !e.Provisioned || e.Status == partition.Draining || e.Status == partition.Initializing {
			continue
		}
		ready[e.Key]++
		if e.Status == partition.Idle {
			idle[e.Key] = append(idle[e.Key], e)
		}
	}
	var doomed []partition.Env
	var start []*provision
	type report struct {
		fn        func(int, error)
		allocated int
		err       error
	}
	var reports []report
	for k, list := range idle {
		pv := p.provisions[k]
		extra := len(list)
		if pv != nil {
			extra = min(ready[k]-pv.N, len(list))
		}
		if extra > 0 {
			doomed = append(doomed, list[:extra]...)
		}
	}
	for k, pv := range p.provisions {
		for n := ready[k] + pv.creating; n < pv.N && pv.failed == nil; n++ {
			pv.creating++
			start = append(start, pv)
		}
		switch {
		case pv.Report == nil:
		case pv.failed != nil && !pv.failSent:
			pv.failSent = true
			reports = append(reports, report{pv.Report, ready[k], pv.failed})
		case pv.failed == nil && ready[k] != pv.reported:
			pv.reported = ready[k]
			reports = append(reports, report{pv.Report, ready[k], nil})
		}
	}
	p.mu.Unlock()
	if len(doomed) > 0 {
		p.kill(doomed, true)
	}
	for _, pv := range start {
		go p.provisionOne(pv)
	}
	for _, r := range reports {
		r.fn(r.allocated, r.err)
	}
}

// provisionOne creates one provisioned environment and leaves it idle.
func (p *part) provisionOne(pv *provision) {
	ctx, cancel := context.WithTimeout(p.m.ctx, 2*time.Minute)
	defer cancel()
	token := newToken()
	started, _, err := p.start(ctx, pv.Account, pv.Function, token, true)
	if err == nil {
		rel := partition.Transition(partition.OpRelease, 0, *started.Env, token)
		rel.Env.Used = time.Now().UnixNano()
		err = p.commit(rel)
	}
	p.mu.Lock()
	pv.creating--
	var ie *invoke.InitError
	if errors.As(err, &ie) {
		pv.failed = ie
	}
	p.mu.Unlock()
	if err != nil {
		p.m.cfg.Logger.Warn("provisioned concurrency: environment failed", "partition", p.id,
			"function", pv.Function.FunctionName, "version", pv.Function.Version, "err", err)
	}
	p.reconcile()
}

// FollowProvisioned keeps every function's provisioned concurrency in step
// with its metadata until ctx ends, reporting progress back into it.
func (m *Member) FollowProvisioned(ctx context.Context, store *metadata.Store) error {
	set := func(f *metadata.Function) {
		m.SetProvisioned(f.Account, f.Name, assignment.ProvisionsOf(f, func(qualifier string, requested, allocated int, failure error) {
			if err := assignment.ReportProvisioned(ctx, store, f.Account, f.Name, qualifier, requested, allocated, failure); err != nil {
				m.cfg.Logger.Warn("provisioned concurrency status", "function", f.Name, "qualifier", qualifier, "err", err)
			}
		}))
	}
	// Follow gives every function as it is, then each write, from the
	// watch's own values (a Get could reach a lagging replica).
	return store.Follow(ctx, func(account, name string, f *metadata.Function) {
		if f == nil {
			m.SetProvisioned(account, name, nil)
			return
		}
		set(f)
	})
}
