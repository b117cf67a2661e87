// Package pki is the cluster's own certificate authority: `kiln cluster up`
// (or `kiln cluster certs` for real hosts) makes an ECDSA P-256 CA and, for
// every role process, a certificate naming the process (CN) and its role
// (OU). NATS and the workers' invoke endpoint accept only peers holding a
// certificate of that CA, and a worker only those whose role may call it.
//
// Secrets live in files readable by their owner alone: ReadSecret refuses a
// file that its group or others may read, as ssh does with keys.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Lifetimes of what the CA signs. Rotation is by issuing anew and restarting
// the role; a year keeps a forgotten key from being good forever.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	CertLifetime = 365 * 24 * time.Hour
)

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: name, Organization: []string{"kiln"}},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Issue signs a certificate for one process: CN name, OU role, valid as a
// TLS server for hosts (IP addresses or DNS names) and as a TLS client. It
// returns the certificate and the private key, PEM-encoded.
func (ca *CA) Issue(name, role string, hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: []string{role}, Organization: []string{"kiln"}},
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(CertLifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	return pemOf("CERTIFICATE", der), pemOf("EC PRIVATE KEY", kder), nil
}

// CertPEM is the CA's certificate, what every peer trusts.
func (ca *CA) CertPEM() []byte { return pemOf("CERTIFICATE", ca.Cert.Raw) }

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// Files in a CA directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// Save writes the CA into dir: its certificate (0644) and key (0600).
func (ca *CA) Save(dir string) error {
	kder, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := WriteSecret(filepath.Join(dir, CAKeyFile), pemOf("EC PRIVATE KEY", kder)); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CACertFile), ca.CertPEM(), 0o644)
}

// LoadCA reads a CA that Save wrote.
func LoadCA(dir string) (*CA, error) {
	cb, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	kb, err := ReadSecret(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(cb, kb)
	if err != nil {
		return nil, fmt.Errorf("pki: CA in %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("pki: CA key in %s is not ECDSA", dir)
	}
	return &CA{Cert: pair.Leaf, Key: key}, nil
}

// ErrExposed is returned (wrapped) for a secret file others may read.
var ErrExposed = errors.New("pki: secret file readable by group or others")

// WriteSecret writes b to path with mode 0600, through a temporary file so
// that the secret is never visible with looser permissions or half written.
func WriteSecret(path string, b []byte) error { return writeFile(path, b, 0o600) }

func writeFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	_, werr := f.Write(b)
	err = errors.Join(werr, f.Chmod(mode), f.Close())
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("pki: writing %s: %w", path, err)
	}
	return nil
}

// ReadSecret reads a secret file, refusing one whose group or others have
// any permission on it.
func ReadSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v, want 0600", ErrExposed, path, fi.Mode().Perm())
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && fi.Size() > 0 {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return b, nil
}

// Files names a process's CA certificate, certificate and key.
type Files struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// load reads the files: the pool of the trusted CA and this process's
// certificate (its key read with ReadSecret).
func (f Files) load() (*x509.CertPool, tls.Certificate, error) {
	cb, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("pki: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cb) {
		return nil, tls.Certificate{}, fmt.Errorf("pki: no certificate in %s", f.CA)
	}
	crt, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("pki: %w", err)
	}
	key, err := ReadSecret(f.Key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("pki: %s: %w", f.Cert, err)
	}
	return pool, pair, nil
}

// Config is the TLS of one process, both ends: it serves with its
// certificate and requires a client certificate of the CA, and it dials
// with its certificate and trusts only the CA.
type Config struct {
	pool *x509.CertPool
	cert tls.Certificate
}

// Config reads the files.
func (f Files) Config() (*Config, error) {
	pool, cert, err := f.load()
	if err != nil {
		return nil, err
	}
	return &Config{pool: pool, cert: cert}, nil
}

// Server is the tls.Config of a listener that admits only clients with a
// certificate of the CA and, when roles are given, one of those roles. It
// also trusts the CA when dialing, as NATS routes use one config both ways.
func (c *Config) Server(roles ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{c.cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: c.pool, RootCAs: c.pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(roles) == 0 {
				return nil
			}
			if r := RoleOf(cs); !slices.Contains(roles, r) {
				return fmt.Errorf("pki: role %q may not connect here (want one of %v)", r, roles)
			}
			return nil
		},
	}
}

// Client is the tls.Config to dial peers of the cluster with.
func (c *Config) Client() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{c.cert}, RootCAs: c.pool}
}

// RoleOf is the role (OU) of the peer's verified certificate, "" if none.
func RoleOf(cs tls.ConnectionState) string {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	return roleOf(cs.VerifiedChains[0][0])
}

// roleOf is a certificate's role: its one OU, "" if it has not one.
func roleOf(x *x509.Certificate) string {
	if ou := x.Subject.OrganizationalUnit; len(ou) == 1 {
		return ou[0]
	}
	return ""
}

// Sign signs msg with this process's key, for a peer to Verify: it returns
// the process's certificate (DER) and the signature. It proves who asks
// where a message passes through a broker, as a request over NATS does.
func (c *Config) Sign(msg []byte) (cert, sig []byte, err error) {
	key, ok := c.cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("pki: key is %T, not ECDSA", c.cert.PrivateKey)
	}
	h := sha256.Sum256(msg)
	if sig, err = ecdsa.SignASN1(rand.Reader, key, h[:]); err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	return c.cert.Certificate[0], sig, nil
}

// ErrUnverified is returned (wrapped) by Verify.
var ErrUnverified = errors.New("pki: signature not verified")

// Verify checks that sig is msg signed by the holder of cert, a valid
// client certificate of the CA, and returns its name (CN) and role (OU).
func (c *Config) Verify(cert, msg, sig []byte) (name, role string, err error) {
	x, err := x509.ParseCertificate(cert)
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrUnverified, err)
	}
	if _, err := x.Verify(x509.VerifyOptions{Roots: c.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrUnverified, err)
	}
	if err := x.CheckSignature(x509.ECDSAWithSHA256, msg, sig); err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrUnverified, err)
	}
	return x.Subject.CommonName, roleOf(x), nil
}
