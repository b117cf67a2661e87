package pki_test

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-dev/kiln/internal/pki"
)

// issue writes a CA's certificate and one issued certificate into dir.
func issue(t *testing.T, ca *pki.CA, dir, name, role string) pki.Files {
	t.Helper()
	crt, key, err := ca.Issue(name, role, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	f := pki.Files{CA: filepath.Join(dir, name+"-ca.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if err := os.WriteFile(f.CA, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert, crt, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteSecret(f.Key, key); err != nil {
		t.Fatal(err)
	}
	return f
}

func config(t *testing.T, f pki.Files) *pki.Config {
	t.Helper()
	c, err := f.Config()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestHandshake dials a real TLS listener that admits frontends and
// assignment members, with clients holding various certificates.
func TestHandshake(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("kiln test")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("another cluster")
	if err != nil {
		t.Fatal(err)
	}
	server := config(t, issue(t, ca, dir, "worker-a1", "worker"))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server.Server("frontend", "assignment"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	roles := make(chan string, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				roles <- pki.RoleOf(tc.ConnectionState())
				tc.Write([]byte("k"))
			}
			tc.Close()
		}
	}()
	frontendCA := filepath.Join(dir, "frontend-1-ca.pem")
	foreign := issue(t, other, dir, "intruder", "frontend")
	foreign.CA = frontendCA // trusts our CA, but holds another's certificate
	cases := []struct {
		name string
		tls  func() *tls.Config
		ok   bool
	}{
		{"frontend", func() *tls.Config { return config(t, issue(t, ca, dir, "frontend-1", "frontend")).Client() }, true},
		{"assignment", func() *tls.Config { return config(t, issue(t, ca, dir, "assignment-a", "assignment")).Client() }, true},
		{"worker may not call a worker", func() *tls.Config { return config(t, issue(t, ca, dir, "worker-b1", "worker")).Client() }, false},
		{"certificate of another CA", func() *tls.Config { return config(t, foreign).Client() }, false},
		{"no certificate", func() *tls.Config {
			c := config(t, issue(t, ca, dir, "anon", "frontend")).Client()
			c.Certificates = nil
			return c
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", ln.Addr().String(), tc.tls())
			if err == nil {
				// TLS 1.3: the server's verdict on our certificate arrives with the first read.
				_, err = c.Read(make([]byte, 1))
				c.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("dial: %v, want ok=%v", err, tc.ok)
			}
			if tc.ok {
				if r := <-roles; r != tc.name {
					t.Fatalf("server saw role %q", r)
				}
			}
		})
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s")
	if err := pki.WriteSecret(p, []byte("hush")); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	if b, err := pki.ReadSecret(p); err != nil || string(b) != "hush" {
		t.Fatalf("read: %q %v", b, err)
	}
	os.Chmod(p, 0o640)
	if _, err := pki.ReadSecret(p); !errors.Is(err, pki.ErrExposed) {
		t.Fatalf("group-readable secret: %v, want ErrExposed", err)
	}
}

func TestCASaveLoad(t *testing.T) {
	dir := t.TempDir()
	ca, _ := pki.NewCA("kiln test")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	back, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate the loaded CA issues verifies against the saved one.
	srv := config(t, issue(t, back, dir, "n", "nats"))
	cli := config(t, issue(t, ca, dir, "c", "frontend"))
	a, b := net.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- tls.Server(a, srv.Server()).Handshake(); a.Close() }()
	cfg := cli.Client()
	cfg.ServerName = "127.0.0.1"
	c := tls.Client(b, cfg)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
