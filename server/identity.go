package server

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-dev/kiln/auth"
	"github.com/kiln-dev/kiln/logs"
	"github.com/kiln-dev/kiln/queues"
)

// Identity is the default account and its key pair, kept in the data
// directory so that a restart keeps them.
type Identity struct {
	AccountID       string `json:"accountId"`
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	// URLSecret signs Code.Location download URLs.
	URLSecret []byte `json:"urlSecret"`
}

// keyring verifies the default account's signatures, scoped to region and
// to the service a request is for: on POST /, CloudWatch Logs or SQS by
// X-Amz-Target (SQS's query form has none), Lambda everywhere else.
func (id Identity) keyring(region string) *auth.Keyring {
	k := auth.NewKeyring(auth.Credential{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, Account: id.AccountID})
	k.Region = region
	k.Services = func(r *http.Request) []string {
		if r.URL.Path != "/" {
			return []string{"lambda"}
		}
		switch target := r.Header.Get("X-Amz-Target"); {
		case strings.HasPrefix(target, logs.TargetPrefix):
			return []string{"logs"}
		case strings.HasPrefix(target, queues.TargetPrefix), target == "":
			return []string{queues.SigningService}
		}
		return []string{"lambda"}
	}
	return k
}

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
	if cfg.AccessKeyID != "" && cfg.SecretAccessKey != "" {
		id.AccessKeyID, id.SecretAccessKey = cfg.AccessKeyID, cfg.SecretAccessKey
		generated = false
	}
	if cfg.AccountID != "" {
		id.AccountID = cfg.AccountID
	}
	b, _ = json.MarshalIndent(id, "", "  ")
	return id, generated, writeFile(path, b, 0o600)
}

// writeAWSFiles writes an AWS-format credentials and config file, so that
// AWS_SHARED_CREDENTIALS_FILE/AWS_CONFIG_FILE plus --endpoint-url is all a
// client needs; caBundle, when set, is the CA the clients must trust.
func writeAWSFiles(dir string, id Identity, region, endpoint, caBundle string) error {
	creds := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", id.AccessKeyID, id.SecretAccessKey)
	conf := fmt.Sprintf("[default]\nregion = %s\noutput = json\nendpoint_url = %s\n", region, endpoint)
	if caBundle != "" {
		conf += "ca_bundle = " + caBundle + "\n"
	}
	if err := writeFile(filepath.Join(dir, "credentials"), []byte(creds), 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "config"), []byte(conf), 0o600)
}

func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
