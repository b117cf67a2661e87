// Package keys is Kiln's small key service, in the role of KMS for container
// images. It holds one master secret and derives from it, never handing it
// out, a key-encryption key per account and a salt per chunk scope.
//
// Manifests (an image's chunk IDs and keys) are sealed by envelope
// encryption: a fresh data key encrypts the manifest, and the account's key
// wraps the data key. Only the account that sealed a manifest can have its
// data key unwrapped, so one account cannot read another's manifest even
// though both sit in the same store.
//
// In `kiln up` the process holds the secret (DATA/keys/master.key). In a
// cluster only the control planes do; workers unwrap through them over NATS
// (Serve, Client in remote.go).
package keys

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrDenied is returned (wrapped) when a sealed value does not open for the
// account that asks: another account's, or tampered with.
var ErrDenied = errors.New("keys: access denied")

// Service holds the master secret.
type Service struct{ master []byte }

// New returns a service over a 32-byte master secret.
func New(master []byte) (*Service, error) {
	if len(master) != 32 {
		return nil, fmt.Errorf("keys: master secret is %d bytes, want 32", len(master))
	}
	return &Service{master: append([]byte(nil), master...)}, nil
}

// Open reads the master secret from path, creating it (0600) the first time.
func Open(path string) (*Service, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b = make([]byte, 32)
		rand.Read(b)
		if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			err = os.WriteFile(path, b, 0o600)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return New(b)
}

func (s *Service) derive(info string) []byte {
	k, err := hkdf.Key(sha256.New, s.master, nil, info, 32)
	if err != nil {
		panic(err)
	}
	return k
}

// Salt returns the convergent-encryption salt of a chunk scope. Chunks of
// equal content share a key (and are stored once) only within one scope.
func (s *Service) Salt(_ context.Context, scope string) ([]byte, error) {
	return s.derive("kiln chunk scope salt\x00" + scope), nil
}

// DataKey returns a fresh data key and the same key wrapped for account.
func (s *Service) DataKey(_ context.Context, account string) (plain, wrapped []byte, err error) {
	plain = make([]byte, 32)
	rand.Read(plain)
	wrapped, err = seal(s.derive("kiln account key\x00"+account), plain, []byte(account))
	return plain, wrapped, err
}

// Unwrap returns the data key wrapped for account, or ErrDenied.
func (s *Service) Unwrap(_ context.Context, account string, wrapped []byte) ([]byte, error) {
	return open(s.derive("kiln account key\x00"+account), wrapped, []byte(account))
}

// seal encrypts plain under key with a random nonce, which it prepends.
func seal(key, plain, ad []byte) ([]byte, error) {
	g, err := gcm(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize(), g.NonceSize()+len(plain)+g.Overhead())
	rand.Read(nonce)
	return g.Seal(nonce, nonce, plain, ad), nil
}

func open(key, sealed, ad []byte) ([]byte, error) {
	g, err := gcm(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize() {
		return nil, fmt.Errorf("%w: too short", ErrDenied)
	}
	p, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDenied, err)
	}
	return p, nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return cipher.NewGCM(b)
}

// Envelope is a value sealed for one account: its data key wrapped by the
// key service, and the value encrypted under the data key.
type Envelope struct {
	Account    string `json:"account"`
	WrappedKey []byte `json:"wrappedKey"`
	Ciphertext []byte `json:"ciphertext"`
}

// KeyService is what sealing an envelope needs of the key service.
type KeyService interface {
	DataKey(ctx context.Context, account string) (plain, wrapped []byte, err error)
	Unwrap(ctx context.Context, account string, wrapped []byte) ([]byte, error)
}

// Seal encrypts plain for account under a fresh data key.
func Seal(ctx context.Context, ks KeyService, account string, plain []byte) (Envelope, error) {
	dk, wrapped, err := ks.DataKey(ctx, account)
	if err != nil {
		return Envelope{}, err
	}
	ct, err := seal(dk, plain, []byte(account))
	return Envelope{Account: account, WrappedKey: wrapped, Ciphertext: ct}, err
}

// OpenEnvelope decrypts e for account; another account gets ErrDenied.
func OpenEnvelope(ctx context.Context, ks KeyService, account string, e Envelope) ([]byte, error) {
	if e.Account != account {
		return nil, fmt.Errorf("%w: sealed for another account", ErrDenied)
	}
	dk, err := ks.Unwrap(ctx, account, e.WrappedKey)
	if err != nil {
		return nil, err
	}
	return open(dk, e.Ciphertext, []byte(account))
}
