package images

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ManifestRef names a manifest some function version uses.
type ManifestRef struct {
	Account, Name string
}

// Sweeper is an authoritative store that can delete what is not kept
// (tier.Dir).
type Sweeper interface {
	Sweep(keep func(name string) bool, notAfter time.Time) (int, error)
}

// Collect deletes from the authoritative store every manifest and chunk
// that none of keep uses and that was last written before notAfter (the
// grace covers imports whose function is not written yet). A kept manifest
// that cannot be opened stops it before anything is deleted: its chunks
// would be lost. It returns how many blobs it deleted.
func (s *Store) Collect(ctx context.Context, keep []ManifestRef, notAfter time.Time) (int, error) {
	sw, ok := s.Tiers.Store.(Sweeper)
	if !ok {
		return 0, errors.New("images: the store cannot be swept")
	}
	used := map[string]bool{}
	for _, r := range keep {
		if used[r.Name] {
			continue
		}
		m, err := s.Manifest(ctx, r.Account, r.Name)
		if err != nil {
			return 0, fmt.Errorf("images: collection stopped, a manifest in use does not open: %w", err)
		}
		used[r.Name] = true
		for _, e := range m.Entries {
			for _, c := range e.Chunks {
				used[c.ID.String()] = true
			}
		}
	}
	return sw.Sweep(func(name string) bool { return used[name] }, notAfter)
}
