package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Layer is one layer of an account and its versions, kept in a bucket of
// its own beside the functions' (one key per layer, compare-and-set).
type Layer struct {
	Account string `json:"account"`
	Name    string `json:"name"`
	// LastVersion is the highest version ever published; numbers are not
	// reused after a version is deleted (as in Lambda).
	LastVersion int64                    `json:"lastVersion"`
	Versions    map[string]*LayerVersion `json:"versions,omitempty"`

	revision uint64
}

// LayerVersion is one published version of a layer.
type LayerVersion struct {
	Version                 int64    `json:"version"`
	Description             string   `json:"description,omitempty"`
	CreatedDate             string   `json:"createdDate"`
	LicenseInfo             string   `json:"licenseInfo,omitempty"`
	CompatibleRuntimes      []string `json:"compatibleRuntimes,omitempty"`
	CompatibleArchitectures []string `json:"compatibleArchitectures,omitempty"`
	// CodeSha256 names the layer's zip in the code store.
	CodeSha256 string `json:"codeSha256"`
	CodeSize   int64  `json:"codeSize"`
	// Unzipped is the size of its files, counted against the 250 MB limit
	// of the functions that use it.
	Unzipped int64 `json:"unzipped"`
	// Policy is the version's resource-based policy (who may use it).
	Policy *LayerPolicy `json:"policy,omitempty"`
}

// LayerPolicy is a layer version's permissions.
type LayerPolicy struct {
	RevisionId string           `json:"revisionId"`
	Statements []LayerStatement `json:"statements,omitempty"`
}

// LayerStatement grants Action on the version to Principal (an account or
// "*").
type LayerStatement struct {
	Sid       string `json:"sid"`
	Action    string `json:"action"`
	Principal string `json:"principal"`
}

// SortedVersions lists the layer's versions, oldest first.
func (l *Layer) SortedVersions() []*LayerVersion {
	out := make([]*LayerVersion, 0, len(l.Versions))
	for _, v := range l.Versions {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

// Version returns version n.
func (l *Layer) Version(n int64) (*LayerVersion, bool) {
	v, ok := l.Versions[strconv.FormatInt(n, 10)]
	return v, ok
}

// Layers keeps layers in a JetStream KV bucket.
type Layers struct{ s *Store }

// Layers returns the store of the layers, in the bucket "<functions'
// bucket>-layers" with the same replicas, opening it on first use.
func (s *Store) Layers(ctx context.Context) (*Layers, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.layers == nil {
		ls, err := Open(ctx, s.js, Config{Bucket: s.bucket + "-layers", Replicas: s.replicas})
		if err != nil {
			return nil, err
		}
		s.layers = &Layers{s: ls}
	}
	return s.layers, nil
}

// Get reads one layer; ErrNotFound if it was never published.
func (l *Layers) Get(ctx context.Context, account, name string) (*Layer, error) {
	value, revision, err := l.s.kv.Read(ctx, key(account, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: layer %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("metadata get layer %s: %w", name, err)
	}
	var layer Layer
	if err := json.Unmarshal(value, &layer); err != nil {
		return nil, fmt.Errorf("metadata decode layer %s: %w", name, err)
	}
	layer.revision = revision
	return &layer, nil
}

// Modify reads a layer (a new one when it was never published), applies
// change and writes it back, retrying on concurrent writes.
func (l *Layers) Modify(ctx context.Context, account, name string, change func(*Layer) error) (*Layer, error) {
	for {
		layer, err := l.Get(ctx, account, name)
		if errors.Is(err, ErrNotFound) {
			layer, err = &Layer{Account: account, Name: name}, nil
		}
		if err != nil {
			return nil, err
		}
		if err := change(layer); err != nil {
			return nil, err
		}
		b, err := json.Marshal(layer)
		if err != nil {
			return nil, err
		}
		if layer.revision == 0 {
			_, err = l.s.kv.Create(ctx, key(account, name), b)
		} else {
			_, err = l.s.kv.Update(ctx, key(account, name), b, layer.revision)
		}
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("metadata write layer %s: %w", name, err)
		}
		return layer, nil
	}
}

// List returns the account's layers sorted by name; "" lists every
// account's.
func (l *Layers) List(ctx context.Context, account string) ([]*Layer, error) {
	filter := account + ".>"
	if account == "" {
		filter = ""
	}
	keys, err := l.s.keys(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("metadata list layers: %w", err)
	}
	var out []*Layer
	for _, k := range keys {
		acct, name, ok := strings.Cut(k, ".")
		if !ok {
			continue
		}
		layer, err := l.Get(ctx, acct, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, layer)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
