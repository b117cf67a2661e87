package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-dev/kiln/internal/pki"
	"golang.org/x/crypto/bcrypt"
)

// Every role process reads its secrets from files, never from its
// environment (which /proc shows its user's other processes, and which
// children inherit): a bundle directory per process, made by `kiln cluster
// up` or, for real hosts, `kiln cluster certs`, from the issuer's directory:
//
//	DIR/ca/ca.pem, ca-key.pem      the cluster's CA (the key never leaves DIR)
//	DIR/secrets.json               the shared secrets below (0600)
//	DIR/roles/NAME/                one process's bundle, copied to its host:
//	    ca.pem cert.pem key.pem    its certificate (CN NAME, OU its role)
//	    nats.json                  its role's NATS user and password
//	    identity.json              what of the Identity its role needs
//	    users.json route.json      NATS nodes: client users (bcrypt), route credential
//	    config.json                its settings, written by `kiln cluster up`
//
// Every secret file is 0600 and refused if looser (pki.ReadSecret).

// Bundle file names.
const (
	bundleCA       = "ca.pem"
	bundleCert     = "cert.pem"
	bundleKey      = "key.pem"
	bundleNATS     = "nats.json"
	bundleIdentity = "identity.json"
	bundleUsers    = "users.json"
	bundleRoute    = "route.json"
	bundleConfig   = "config.json"
)

// natsRoles each have a NATS user; "admin" is the operator's `kiln cluster
// status|drain` and the tests.
var natsRoles = []string{"assignment", "placement", "worker", "controlplane", "frontend", "pollers", "admin"}

// roleSecrets are the cluster's shared secrets, which the issuer keeps.
type roleSecrets struct {
	Identity clusterIdentity   `json:"identity"`
	NATS     map[string]string `json:"nats"`  // role → password
	Route    string            `json:"route"` // password NATS nodes give each other
}

func newSecrets(id clusterIdentity) *roleSecrets {
	s := &roleSecrets{Identity: id, NATS: map[string]string{}, Route: random(16)}
	for _, r := range natsRoles {
		s.NATS[r] = random(16)
	}
	return s
}

// issuer makes bundles from a CA and the shared secrets in its directory.
type issuer struct {
	dir     string
	ca      *pki.CA
	secrets *roleSecrets
}

// openIssuer loads DIR's CA and secrets, creating them (with id) if DIR
// has none yet.
func openIssuer(dir string, id func() clusterIdentity) (*issuer, error) {
	is := &issuer{dir: dir}
	b, err := pki.ReadSecret(filepath.Join(dir, "secrets.json"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if is.ca, err = pki.NewCA("kiln cluster " + filepath.Base(dir)); err != nil {
			return nil, err
		}
		if err := is.ca.Save(filepath.Join(dir, "ca")); err != nil {
			return nil, err
		}
		is.secrets = newSecrets(id())
		b, _ := json.MarshalIndent(is.secrets, "", "  ")
		return is, pki.WriteSecret(filepath.Join(dir, "secrets.json"), b)
	case err != nil:
		return nil, err
	}
	if err := json.Unmarshal(b, &is.secrets); err != nil {
		return nil, fmt.Errorf("%s/secrets.json: %w", dir, err)
	}
	is.ca, err = pki.LoadCA(filepath.Join(dir, "ca"))
	return is, err
}

// identityFor is the part of the Identity a role needs.
func identityFor(role string, id clusterIdentity) *clusterIdentity {
	switch role {
	case "frontend":
		return &clusterIdentity{AccountID: id.AccountID, AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, Token: id.Token,
			SessionKey: id.SessionKey}
	case "controlplane":
		return &clusterIdentity{AccountID: id.AccountID, AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, URLSecret: id.URLSecret,
			ImageKey: id.ImageKey, SessionKey: id.SessionKey}
	case "worker":
		// No image key: workers ask the control planes' key service to
		// unwrap the manifests they open (keys.Client).
		return &clusterIdentity{Token: id.Token, SessionKey: id.SessionKey}
	case "assignment", "pollers":
		return &clusterIdentity{Token: id.Token}
	}
	return nil
}

// issue writes the bundle of process name (role) whose certificate is
// valid for hosts, and returns its directory.
func (is *issuer) issue(name, role string, hosts []string) (string, error) {
	dir := filepath.Join(is.dir, "roles", name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	crt, key, err := is.ca.Issue(name, role, hosts)
	if err != nil {
		return "", err
	}
	files := map[string]any{bundleNATS: natsUser{User: role, Password: is.secrets.NATS[role]}}
	if id := identityFor(role, is.secrets.Identity); id != nil {
		files[bundleIdentity] = id
	}
	if role == "nats" {
		delete(files, bundleNATS)
		var users []natsUser
		for _, r := range natsRoles {
			// The cheapest cost: the passwords are 128 random bits, so the
			// hash only keeps them off the node's disk, and NATS checks it
			// on every (re)connect.
			h, err := bcrypt.GenerateFromPassword([]byte(is.secrets.NATS[r]), bcrypt.MinCost)
			if err != nil {
				return "", err
			}
			users = append(users, natsUser{User: r, Password: string(h)})
		}
		files[bundleUsers] = users
		files[bundleRoute] = natsUser{User: "route", Password: is.secrets.Route}
	}
	for f, v := range files {
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := pki.WriteSecret(filepath.Join(dir, f), b); err != nil {
			return "", err
		}
	}
	if err := pki.WriteSecret(filepath.Join(dir, bundleKey), key); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, bundleCert), crt, 0o644); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, bundleCA), is.ca.CertPEM(), 0o644)
}

// bundleFlags are the settings that point a role at its bundle.
func bundleFlags(dir, role string) map[string]string {
	m := map[string]string{"ca": filepath.Join(dir, bundleCA), "cert": filepath.Join(dir, bundleCert),
		"key": filepath.Join(dir, bundleKey)}
	if role == "nats" {
		m["users"], m["route-creds"] = filepath.Join(dir, bundleUsers), filepath.Join(dir, bundleRoute)
		return m
	}
	m["nats-creds"] = filepath.Join(dir, bundleNATS)
	if identityFor(role, clusterIdentity{}) != nil {
		m["identity"] = filepath.Join(dir, bundleIdentity)
	}
	return m
}

// readJSONSecret decodes a secret file into v.
func readJSONSecret(path string, v any) error {
	b, err := pki.ReadSecret(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeConfig writes a role's settings (flag name → value) as its config.json.
func writeConfig(dir string, settings map[string]string) (string, error) {
	b, _ := json.MarshalIndent(settings, "", "  ")
	p := filepath.Join(dir, bundleConfig)
	return p, pki.WriteSecret(p, b)
}

// hostsOf splits a --host list.
func hostsOf(s string) []string {
	var out []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}
