// Package accounts keeps Kiln's accounts and their access keys in a
// JetStream KV bucket (replicated in a cluster), and follows the keys into
// the keyrings that verify requests, so that a key added or removed on one
// process takes effect on every frontend without a restart.
//
// The first account (the identity Kiln makes on first start) is the admin:
// its key comes from the identity file, and only it may create accounts
// and manage keys. Every other account and key lives in the bucket:
//
//	acct.<account id>   Account
//	key.<access key id> Key (with its secret)
package accounts

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go/jetstream"
)

// Account is one account.
type Account struct {
	ID      string `json:"id"`
	Name    string `json:"name,omitempty"`
	Admin   bool   `json:"admin,omitempty"`
	Created string `json:"created"`
}

// Key is one access key pair of an account.
type Key struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey,omitempty"`
	Account         string `json:"account"`
	Created         string `json:"created"`
}

// Errors the store returns (the API maps them to Lambda's shapes).
var (
	ErrNotFound = errors.New("accounts: not found")
	ErrTooMany  = errors.New("accounts: too many keys")
)

// MaxKeys is how many keys an account may hold in the bucket (as IAM's two
// per user, with room for rotation).
const MaxKeys = 5

// Store keeps accounts and keys.
type Store struct {
	kv *natsd.KV
}

// Config configures the store; the zero value uses bucket "kiln-accounts"
// with one replica.
type Config struct {
	Bucket   string
	Replicas int
}

// Open creates the bucket if needed.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = "kiln-accounts"
	}
	kv, err := natsd.OpenKV(ctx, js, jetstream.KeyValueConfig{Bucket: cfg.Bucket, History: 1,
		Replicas: max(cfg.Replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return &Store{kv: kv}, nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }

// EnsureAdmin records the first account (whose key is in the identity
// file) as the admin, once.
func (s *Store) EnsureAdmin(ctx context.Context, id string) error {
	b, _ := json.Marshal(Account{ID: id, Name: "admin", Admin: true, Created: now()})
	_, err := s.kv.Create(ctx, "acct."+id, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil
	}
	return err
}

// Account reads one account.
func (s *Store) Account(ctx context.Context, id string) (Account, error) {
	var a Account
	if !validAccount(id) {
		return a, fmt.Errorf("%w: account %s", ErrNotFound, id)
	}
	b, _, err := s.kv.Read(ctx, "acct."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return a, fmt.Errorf("%w: account %s", ErrNotFound, id)
	}
	if err != nil {
		return a, err
	}
	return a, json.Unmarshal(b, &a)
}

// Create makes an account and its first key; the key's secret is only
// ever returned here and by AddKey.
func (s *Store) Create(ctx context.Context, name string) (Account, Key, error) {
	for {
		a := Account{ID: NewID(), Name: name, Created: now()}
		b, _ := json.Marshal(a)
		_, err := s.kv.Create(ctx, "acct."+a.ID, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // a 12-digit collision: draw again
		}
		if err != nil {
			return a, Key{}, err
		}
		k, err := s.AddKey(ctx, a.ID)
		return a, k, err
	}
}

// AddKey makes a new key for account.
func (s *Store) AddKey(ctx context.Context, account string) (Key, error) {
	if _, err := s.Account(ctx, account); err != nil {
		return Key{}, err
	}
	keys, err := s.keys(ctx)
	if err != nil {
		return Key{}, err
	}
	if n := len(keys[account]); n >= MaxKeys {
		return Key{}, fmt.Errorf("%w: account %s has %d keys, the most it may hold: remove one first", ErrTooMany, account, n)
	}
	k := NewKey(account)
	b, _ := json.Marshal(k)
	if _, err := s.kv.Create(ctx, "key."+k.AccessKeyID, b); err != nil {
		return Key{}, err
	}
	return k, nil
}

// RemoveKey deletes one of account's keys.
func (s *Store) RemoveKey(ctx context.Context, account, accessKeyID string) error {
	b, rev, err := s.kv.Read(ctx, "key."+accessKeyID)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return fmt.Errorf("%w: key %s", ErrNotFound, accessKeyID)
	}
	if err != nil {
		return err
	}
	var k Key
	if err := json.Unmarshal(b, &k); err != nil {
		return err
	}
	if k.Account != account {
		return fmt.Errorf("%w: key %s of account %s", ErrNotFound, accessKeyID, account)
	}
	return s.kv.Delete(ctx, "key."+accessKeyID, jetstream.LastRevision(rev))
}

// Listed is an account with its keys' ids (never their secrets).
type Listed struct {
	Account
	Keys []string `json:"accessKeyIds"`
}

// List returns every account with its keys' ids, in id order.
func (s *Store) List(ctx context.Context) ([]Listed, error) {
	keys, err := s.keys(ctx)
	if err != nil {
		return nil, err
	}
	out := []Listed{}
	err = s.each(ctx, "acct.>", func(b []byte) error {
		var a Account
		if err := json.Unmarshal(b, &a); err != nil {
			return err
		}
		ids := []string{}
		for _, k := range keys[a.ID] {
			ids = append(ids, k.AccessKeyID)
		}
		sort.Strings(ids)
		out = append(out, Listed{Account: a, Keys: ids})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// keys returns the bucket's keys by account.
func (s *Store) keys(ctx context.Context) (map[string][]Key, error) {
	out := map[string][]Key{}
	err := s.each(ctx, "key.>", func(b []byte) error {
		var k Key
		if err := json.Unmarshal(b, &k); err != nil {
			return err
		}
		out[k.Account] = append(out[k.Account], k)
		return nil
	})
	return out, err
}

// each calls fn with the value of every key matching filter, seeing every
// write acknowledged before it (natsd.KV.ReadKeys, Read): a watch's
// consumer on a lagging replica left an account or key created a moment
// before out of the list.
func (s *Store) each(ctx context.Context, filter string, fn func([]byte) error) error {
	keys, err := s.kv.ReadKeys(ctx, filter)
	if err != nil {
		return err
	}
	for _, k := range keys {
		v, _, err := s.kv.Read(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted
		}
		if err != nil {
			return err
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

// Follow keeps k's keys in step with the bucket until ctx ends: it returns
// once every stored key is in k, then adds and removes keys as they change.
func (s *Store) Follow(ctx context.Context, k *auth.Keyring) error {
	w, err := s.kv.Watch(ctx, "key.>")
	if err != nil {
		return fmt.Errorf("accounts: watching keys: %w", err)
	}
	apply := func(e jetstream.KeyValueEntry) {
		id := strings.TrimPrefix(e.Key(), "key.")
		if e.Operation() != jetstream.KeyValuePut {
			k.Remove(id)
			return
		}
		var key Key
		if json.Unmarshal(e.Value(), &key) == nil && key.AccessKeyID == id {
			k.Add(auth.Credential{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey, Account: key.Account})
		}
	}
	for e := range w.Updates() {
		if e == nil {
			break // the stored keys are in
		}
		apply(e)
	}
	go func() {
		defer w.Stop()
		for e := range w.Updates() {
			if e != nil {
				apply(e)
			}
		}
	}()
	return nil
}

func validAccount(id string) bool {
	if len(id) != 12 {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// NewID is a new account id: 12 digits, not starting with 0.
func NewID() string { return randomDigits(12) }

// NewKey is a new key pair of account, as AWS makes them (AKIA and 16
// characters; a 40-character secret).
func NewKey(account string) Key {
	return Key{AccessKeyID: "AKIA" + randomFrom(upperAlnum, 16), SecretAccessKey: randomFrom(secretChars, 40),
		Account: account, Created: now()}
}

const (
	upperAlnum  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	secretChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

func randomFrom(alphabet string, n int) string {
	out := make([]byte, n)
	for i := range out {
		k, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		out[i] = alphabet[k.Int64()]
	}
	return string(out)
}

func randomDigits(n int) string {
	s := randomFrom("0123456789", n)
	if s[0] == '0' {
		s = "1" + s[1:]
	}
	return s
}
