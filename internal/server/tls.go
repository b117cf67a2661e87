package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/kiln-dev/kiln/internal/pki"
	"github.com/kiln-dev/kiln/internal/roles"
)

// The generated certificate lives under DataDir/tls: a CA that clients
// trust (pki.CACertFile, the AWS config file's ca_bundle; its key is kept
// to sign a new server certificate when the listen address changes) and
// the server's pair it signed.
const (
	tlsDir      = "tls"
	tlsCertFile = "cert.pem"
	tlsKeyFile  = "key.pem"
)

// serverTLS is the TLS configuration of the API listener: the pair in
// cfg.TLSCert/TLSKey, or, with cfg.TLS alone, one Kiln generates for
// listen under dir. caPath is the CA clients should trust ("" for the
// operator's own pair, which clients trust as they do).
func serverTLS(cfg Config, dir string, listen net.Addr) (conf *tls.Config, caPath string, err error) {
	certFile, keyFile := cfg.TLSCert, cfg.TLSKey
	if certFile == "" && keyFile == "" {
		if certFile, keyFile, caPath, err = generatedPair(filepath.Join(dir, tlsDir), listen); err != nil {
			return nil, "", fmt.Errorf("tls: %w", err)
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, "", fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, caPath, nil
}

// generatedPair returns the generated server pair in dir, making the CA
// and the pair when missing, and a new pair when the one there does not
// name the listen address or is near its end.
func generatedPair(dir string, listen net.Addr) (cert, key, ca string, err error) {
	cert, key, ca = filepath.Join(dir, tlsCertFile), filepath.Join(dir, tlsKeyFile), filepath.Join(dir, pki.CACertFile)
	hosts := certHosts(listen)
	if pair, err := tls.LoadX509KeyPair(cert, key); err == nil && coversAll(pair.Leaf, hosts) {
		return cert, key, ca, nil
	}
	authority, err := pki.LoadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		if authority, err = pki.NewCA("Kiln local CA"); err == nil {
			err = authority.Save(dir)
		}
	}
	if err != nil {
		return "", "", "", err
	}
	certPEM, keyPEM, err := authority.Issue("kiln", "api", hosts)
	if err != nil {
		return "", "", "", err
	}
	if err := pki.WriteSecret(key, keyPEM); err != nil {
		return "", "", "", err
	}
	return cert, key, ca, roles.WriteFile(cert, certPEM, 0o644)
}

// certHosts are the names the server certificate must hold: the listen
// address's IP, or for a wildcard listen the loopback addresses and this
// host's name; localhost always.
func certHosts(listen net.Addr) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if a, ok := listen.(*net.TCPAddr); ok && !a.IP.IsUnspecified() && !a.IP.IsLoopback() {
		hosts = append(hosts, a.IP.String())
	} else if ok && a.IP.IsUnspecified() {
		if name, err := os.Hostname(); err == nil {
			hosts = append(hosts, name)
		}
	}
	return hosts
}

func coversAll(leaf *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if leaf == nil || leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return time.Now().Before(leaf.NotAfter.Add(-24 * time.Hour))
}
