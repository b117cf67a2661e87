package images

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-dev/kiln/internal/tier"
)

// ManifestRef names a manifest some function version uses.
type ManifestRef struct {
	Account, Name string
}

// Plan is a collection's decision, free of I/O: of the blobs the store
// holds, those to delete. Live are the manifests in use (by name) and every
// chunk they name, whatever their age; any other blob goes once it was last
// written more than grace before now (the grace covers an import, whose
// chunks are stored before its manifest, and its manifest before the
// function naming it).
func Plan(inUse map[string]*Manifest, blobs []tier.Blob, now time.Time, grace time.Duration) []tier.Blob {
	live := map[string]bool{}
	for name, m := range inUse {
		live[name] = true
		for _, e := range m.Entries {
			for _, c := range e.Chunks {
				live[c.ID.String()] = true
			}
		}
	}
	return tier.Doomed(blobs, func(name string) bool { return live[name] }, now.Add(-grace))
}

// Collect deletes from the authoritative store every manifest and chunk
// Plan chooses, keep being the manifests in use. A kept manifest that
// cannot be opened stops it before anything is deleted: its chunks would be
// lost. now is when the caller began reading what is in use.
func (s *Store) Collect(ctx context.Context, keep []ManifestRef, now time.Time, grace time.Duration) (tier.Swept, error) {
	l, ok := s.Tiers.Store.(tier.Lister)
	if !ok {
		return tier.Swept{}, errors.New("images: the store cannot be swept")
	}
	inUse := map[string]*Manifest{}
	for _, r := range keep {
		if inUse[r.Name] != nil {
			continue
		}
		m, err := s.Manifest(ctx, r.Account, r.Name)
		if err != nil {
			return tier.Swept{}, fmt.Errorf("images: collection stopped, a manifest in use does not open: %w", err)
		}
		inUse[r.Name] = m
	}
	return tier.Sweep(ctx, l, func(all []tier.Blob) []tier.Blob { return Plan(inUse, all, now, grace) })
}
