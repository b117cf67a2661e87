package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"time"
)

// The files of the generated certificate, under DataDir/tls: a CA that
// clients trust (the AWS config file's ca_bundle) and the server's pair it
// signed. The CA's key is kept to sign a new server certificate when the
// listen address changes.
const (
	tlsDir    = "tls"
	caCert    = "ca.pem"
	caKey     = "ca-key.pem"
	tlsCert   = "cert.pem"
	tlsKeyPEM = "key.pem"
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
// name the listen address.
func generatedPair(dir string, listen net.Addr) (cert, key, ca string, err error) {
	cert, key, ca = filepath.Join(dir, tlsCert), filepath.Join(dir, tlsKeyPEM), filepath.Join(dir, caCert)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", "", err
	}
	hosts := certHosts(listen)
	if pair, err := tls.LoadX509KeyPair(cert, key); err == nil && coversAll(pair.Leaf, hosts) {
		return cert, key, ca, nil
	}
	caC, caK, err := loadOrMakeCA(dir)
	if err != nil {
		return "", "", "", err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "kiln"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(2, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caC, &k.PublicKey, caK)
	if err != nil {
		return "", "", "", err
	}
	if err := writePEM(key, "PRIVATE KEY", k); err != nil {
		return "", "", "", err
	}
	return cert, key, ca, writeFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
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

func loadOrMakeCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, caCert), filepath.Join(dir, caKey)
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		if k, ok := pair.PrivateKey.(*ecdsa.PrivateKey); ok && pair.Leaf != nil {
			return pair.Leaf, k, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "Kiln local CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(keyPath, "PRIVATE KEY", k); err != nil {
		return nil, nil, err
	}
	return c, k, writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writePEM(path, typ string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
