package keys_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kiln-dev/kiln/internal/keys"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/kiln-dev/kiln/internal/pki"
)

// certs issues a certificate of one CA per role and returns each one's
// TLS config (what signs and verifies requests).
func certs(t testing.TB, roles ...string) map[string]*pki.Config {
	t.Helper()
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := map[string]*pki.Config{}
	for _, r := range roles {
		crt, key, err := ca.Issue(r+"-1", r, []string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		f := pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, r+".pem"), Key: filepath.Join(dir, r+"-key.pem")}
		os.WriteFile(f.Cert, crt, 0o644)
		if err := pki.WriteSecret(f.Key, key); err != nil {
			t.Fatal(err)
		}
		if out[r], err = f.Config(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// syncBuffer is a log sink the service's goroutine writes and the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newService(t testing.TB) *keys.Service {
	ks, err := keys.Open(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestRemoteUnwrap: a worker opens its account's envelope through the
// service over NATS, not another account's (ErrDenied) and not as a role
// that may not ask nor with another CA's certificate; every unwrap is logged with account and requester, and
// a data key once unwrapped is served from the worker's cache.
func TestRemoteUnwrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc := natstest.Connect(t)
	c := certs(t, "controlplane", "worker", "frontend")
	ks := newService(t)
	var audit syncBuffer
	sub, err := keys.Serve(nc, keys.ServeConfig{Keys: ks, Verifier: c["controlplane"], Roles: []string{"worker"},
		Logger: slog.New(slog.NewJSONHandler(&audit, nil))})
	if err != nil {
		t.Fatal(err)
	}
	worker := keys.NewClient(nc, c["worker"])

	secret := []byte(`{"chunks":["..."]}`)
	e, err := keys.Seal(ctx, ks, "111111111111", secret)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := keys.OpenEnvelope(ctx, worker, "111111111111", e); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("owner: %q, %v", got, err)
	}
	if a := audit.String(); !strings.Contains(a, `"msg":"keys: unwrap","account":"111111111111","requester":"worker-1","role":"worker"`) {
		t.Errorf("no audit line for the unwrap: %s", a)
	}
	relabelled := e
	relabelled.Account = "222222222222"
	if got, err := keys.OpenEnvelope(ctx, worker, "222222222222", relabelled); !errors.Is(err, keys.ErrDenied) || got != nil {
		t.Fatalf("another account's key: %q, %v; want ErrDenied", got, err)
	}
	for who, signer := range map[string]*pki.Config{"a frontend": c["frontend"], "a worker of another CA": certs(t, "worker")["worker"]} {
		if _, err := keys.NewClient(nc, signer).Unwrap(ctx, "111111111111", e.WrappedKey); err == nil || errors.Is(err, keys.ErrDenied) {
			t.Fatalf("%s asked: %v, want refused", who, err)
		}
	}
	if _, _, err := worker.DataKey(ctx, "111111111111"); !errors.Is(err, keys.ErrNotServed) {
		t.Fatalf("DataKey over the network: %v", err)
	}

	// With the service gone and no time to wait, only the cache answers.
	sub.Unsubscribe()
	done, stop := context.WithCancel(ctx)
	stop()
	if got, err := keys.OpenEnvelope(done, worker, "111111111111", e); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("cached: %q, %v", got, err)
	}
	if _, err := keys.OpenEnvelope(done, worker, "222222222222", relabelled); err == nil {
		t.Fatal("a denied unwrap was cached")
	}
}

// TestRemoteFailover: the worker asks before any control plane answers (no
// responders), then the one that takes the request dies without answering;
// the worker asks again and another control plane answers.
func TestRemoteFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	connect := func() *nats.Conn {
		nc, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	c := certs(t, "controlplane", "worker")
	ks := newService(t)
	e, err := keys.Seal(ctx, ks, "111111111111", []byte("manifest"))
	if err != nil {
		t.Fatal(err)
	}
	worker := keys.NewClient(connect(), c["worker"])
	worker.Attempt = time.Second
	type result struct {
		b   []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		b, err := keys.OpenEnvelope(ctx, worker, "111111111111", e)
		res <- result{b, err}
	}()

	dying := connect()
	held := make(chan struct{}, 1)
	if _, err := dying.QueueSubscribe(keys.Subject, "kiln-keys", func(*nats.Msg) {
		select {
		case held <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case r := <-res:
		t.Fatalf("answered with no service: %q, %v", r.b, r.err)
	case <-ctx.Done():
		t.Fatal("the request never reached the control plane")
	}
	dying.Close() // killed holding the request
	if _, err := keys.Serve(connect(), keys.ServeConfig{Keys: ks, Verifier: c["controlplane"], Roles: []string{"worker"}}); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.err != nil || string(r.b) != "manifest" {
		t.Fatalf("after the failover: %q, %v", r.b, r.err)
	}
}

// BenchmarkRemoteUnwrap: a worker's unwrap over NATS (sign, verify, unwrap,
// seal to the asker, open), and one its cache answers.
func BenchmarkRemoteUnwrap(b *testing.B) {
	ctx := context.Background()
	nc := natstest.Connect(b)
	c := certs(b, "controlplane", "worker")
	ks := newService(b)
	if _, err := keys.Serve(nc, keys.ServeConfig{Keys: ks, Verifier: c["controlplane"], Roles: []string{"worker"},
		Logger: slog.New(slog.DiscardHandler)}); err != nil {
		b.Fatal(err)
	}
	worker := keys.NewClient(nc, c["worker"])
	b.Run("uncached", func(b *testing.B) {
		wrapped := make([][]byte, b.N)
		for i := range wrapped {
			_, wrapped[i], _ = ks.DataKey(ctx, "111111111111")
		}
		b.ResetTimer()
		for i := range b.N {
			if _, err := worker.Unwrap(ctx, "111111111111", wrapped[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		_, wrapped, _ := ks.DataKey(ctx, "111111111111")
		for b.Loop() {
			if _, err := worker.Unwrap(ctx, "111111111111", wrapped); err != nil {
				b.Fatal(err)
			}
		}
	})
}
