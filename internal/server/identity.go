package server

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/kiln-dev/kiln/internal/accounts"
	"github.com/kiln-dev/kiln/internal/roles"
)

// Identity is the default account and its key pair, kept in the data
// directory so that a restart keeps them.
type Identity = roles.Identity

// loadIdentity reads DIR/identity.json, creating it on first start. Keys
// given in cfg win over (and replace) the stored ones. generated says the
// secret key was made by this call.
func loadIdentity(dir string, cfg Config) (id Identity, generated bool, err error) {
	path := filepath.Join(dir, "identity.json")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &id); err != nil {
			return id, false, fmt.Errorf("%s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		key := accounts.NewKey(accounts.NewID())
		id = Identity{AccountID: key.Account, AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey,
			URLSecret: randomBytes(32)}
		generated = true
	default:
		return id, false, err
	}
	if len(id.SessionKey) == 0 { // an identity from before sessions
		id.SessionKey = randomBytes(32)
	}
	if cfg.AccessKeyID != "" && cfg.SecretAccessKey != "" {
		id.AccessKeyID, id.SecretAccessKey = cfg.AccessKeyID, cfg.SecretAccessKey
		generated = false
	}
	if cfg.AccountID != "" {
		id.AccountID = cfg.AccountID
	}
	b, _ = json.MarshalIndent(id, "", "  ")
	return id, generated, roles.WriteFile(path, b, 0o600)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
