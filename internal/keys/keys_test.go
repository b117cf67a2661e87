package keys

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestEnvelope(t *testing.T) {
	ctx := context.Background()
	ks, err := Open(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte(`{"chunks":["..."]}`)
	e, err := Seal(ctx, ks, "111111111111", secret)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := OpenEnvelope(ctx, ks, "111111111111", e); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("owner: %q, %v", got, err)
	}
	// Another account, whether or not it relabels the envelope as its own.
	relabelled := e
	relabelled.Account = "222222222222"
	tampered := e
	tampered.Ciphertext = append([]byte(nil), e.Ciphertext...)
	tampered.Ciphertext[len(tampered.Ciphertext)-1] ^= 1
	for name, tc := range map[string]struct {
		account string
		e       Envelope
	}{
		"other account":            {"222222222222", e},
		"other account relabelled": {"222222222222", relabelled},
		"tampered":                 {"111111111111", tampered},
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := OpenEnvelope(ctx, ks, tc.account, tc.e); !errors.Is(err, ErrDenied) || got != nil {
				t.Fatalf("got %q, %v; want ErrDenied", got, err)
			}
		})
	}
}

func TestMasterPersistsAndScopesDiffer(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "k", "master.key")
	a, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	salt := func(s *Service, scope string) []byte {
		b, err := s.Salt(ctx, scope)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(salt(a, "acct-1"), salt(b, "acct-1")) {
		t.Fatal("salt changed across a restart: chunks would stop deduplicating")
	}
	if bytes.Equal(salt(a, "acct-1"), salt(a, "acct-2")) {
		t.Fatal("two scopes share a salt")
	}
	e, _ := Seal(ctx, a, "acct-1", []byte("x"))
	if _, err := OpenEnvelope(ctx, b, "acct-1", e); err != nil {
		t.Fatalf("sealed before a restart, not opened after: %v", err)
	}
}
