package server

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"

	"github.com/kiln-dev/kiln/roles"
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
		id = Identity{AccountID: randomDigits(12), AccessKeyID: "AKIA" + randomFrom(upperAlnum, 16),
			SecretAccessKey: randomFrom(secretChars, 40), URLSecret: randomBytes(32)}
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

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
