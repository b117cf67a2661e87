// Package tier holds the places a content-addressed blob (an encrypted chunk
// or a sealed manifest, named by the hex SHA-256 of its bytes) can live, all
// behind one small interface: the caches (disk, and memory, which only tests
// stack now; LRU and bounded), other workers' disk caches (Peer, over NATS)
// and the authoritative stores (a directory, a JetStream bucket in cluster
// mode, or an S3 bucket). Tiers stacks them and checks every blob it
// reads against its name, so a corrupt copy in a cache is dropped and fetched
// again from the next tier, and is never returned.
package tier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// ErrNotFound is returned (wrapped) for a blob a store does not hold.
var ErrNotFound = errors.New("tier: not found")

// ErrCorrupt is returned (wrapped) when no tier holds an intact copy.
var ErrCorrupt = errors.New("tier: corrupt blob")

// Store is one tier. The bytes Get returns are the caller's (a chunk is
// decrypted in them), and Put keeps no hold on data once it returns.
type Store interface {
	// Get returns the blob named name, or an error wrapping ErrNotFound.
	Get(ctx context.Context, name string) ([]byte, error)
	// Put stores data under name; putting a name again is harmless.
	Put(ctx context.Context, name string, data []byte) error
	// Delete removes name if present.
	Delete(ctx context.Context, name string) error
}

// Name is the name of a content-addressed blob: the hex SHA-256 of data.
func Name(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// validName accepts only what Name produces, so no store ever sees a name
// that could be a path.
func validName(name string) error {
	if len(name) != 2*sha256.Size {
		return fmt.Errorf("tier: bad blob name %q", name)
	}
	if _, err := hex.DecodeString(name); err != nil {
		return fmt.Errorf("tier: bad blob name %q", name)
	}
	return nil
}

// verified is a cache whose every blob Tiers checked on its way in: this
// process's memory (Memory), which nothing outside it writes. Reading it
// again needs no second hash; every other tier's copy is checked on every
// read.
type verified interface{ verifiedOnEntry() }

func (*Memory) verifiedOnEntry() {}

// Tiers reads through Caches, nearest first, to Store, and fills the caches
// it missed on the way back.
type Tiers struct {
	Caches []Store
	Store  Store
	// Hit, if set, counts a read served by tier i (len(Caches) for Store).
	Hit func(i int)
}

// Get returns the blob name after checking it against its name (unless a
// memory cache, which holds only checked blobs, has it). A corrupt cached
// copy is deleted and the next tier asked; a corrupt authoritative copy is
// ErrCorrupt.
func (t *Tiers) Get(ctx context.Context, name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	all := append(append([]Store(nil), t.Caches...), t.Store)
	for i, s := range all {
		b, err := s.Get(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			if i == len(all)-1 {
				return nil, err
			}
			slog.Warn("tier: cache read failed; trying the next tier", "tier", i, "blob", name, "err", err)
			continue
		}
		if _, ok := s.(verified); !ok && Name(b) != name {
			if i == len(all)-1 {
				return nil, fmt.Errorf("%w: %s in the authoritative store", ErrCorrupt, name)
			}
			slog.Warn("tier: corrupt cached blob dropped", "tier", i, "blob", name)
			_ = s.Delete(ctx, name)
			continue
		}
		if t.Hit != nil {
			t.Hit(i)
		}
		for _, c := range all[:i] {
			if err := c.Put(ctx, name, b); err != nil {
				slog.Warn("tier: cache fill failed", "blob", name, "err", err)
			}
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
}

// Put writes data to the authoritative store under its name (caches fill on
// read) and returns the name.
func (t *Tiers) Put(ctx context.Context, data []byte) (string, error) {
	name := Name(data)
	return name, t.Store.Put(ctx, name, data)
}
