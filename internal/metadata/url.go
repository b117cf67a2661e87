package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/nats-io/nats.go/jetstream"
)

// URL is one function URL as stored with its function. Its FunctionUrl is
// not kept: it names the host the caller reached Kiln by.
type URL struct {
	ID               string    `json:"id"` // the host name's first label
	AuthType         string    `json:"authType"`
	InvokeMode       string    `json:"invokeMode"`
	Cors             *api.Cors `json:"cors,omitempty"`
	CreationTime     string    `json:"creationTime"`
	LastModifiedTime string    `json:"lastModifiedTime"`
}

// URLRef is what a URL id names: the function and the qualifier whose URL
// it is.
type URLRef struct {
	Account   string `json:"account"`
	Name      string `json:"name"`
	Qualifier string `json:"qualifier"`
}

// urlKey is the index entry of a URL id. It holds no dot, so it is never
// read as an account's function (List, All, the watches).
func urlKey(id string) string { return "url-" + id }

// PutURL indexes a new URL id; ErrExists if it is taken.
func (s *Store) PutURL(ctx context.Context, id string, ref URLRef) error {
	b, _ := json.Marshal(ref)
	_, err := s.kv.Create(ctx, urlKey(id), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%w: url %s", ErrExists, id)
	}
	if err != nil {
		return fmt.Errorf("metadata url %s: %w", id, err)
	}
	return nil
}

// URL reads what a URL id names. The entry can outlive its URL (a function
// deleted meanwhile): callers check the function still has the URL.
func (s *Store) URL(ctx context.Context, id string) (URLRef, error) {
	var ref URLRef
	b, _, err := s.kv.Read(ctx, urlKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ref, fmt.Errorf("%w: url %s", ErrNotFound, id)
	}
	if err != nil {
		return ref, fmt.Errorf("metadata url %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		return ref, fmt.Errorf("metadata url %s: %w", id, err)
	}
	return ref, nil
}

// DeleteURL removes a URL id's index entry.
func (s *Store) DeleteURL(ctx context.Context, id string) error {
	if err := s.kv.Delete(ctx, urlKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("metadata url %s: %w", id, err)
	}
	return nil
}

// URLFor returns the URL whose id is id, if the function still has it.
func (f *Function) URLFor(id, qualifier string) (*URL, bool) {
	u, ok := f.URLs[qualifier]
	if !ok || u.ID != id {
		return nil, false
	}
	return u, true
}
