package cluster

// How roles reach each other and the code: NATS with a certificate and a
// user, listeners and clients over mutual TLS, the replicated code bucket.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/codebucket"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/pki"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"
)

// natsConnect connects with a certificate and a user when given, and then
// takes replies on the user's own inbox prefix, the only one it may read.
func natsConnect(urls []string, name string, tlsc *pki.Config, user natsUser, opts ...nats.Option) (*nats.Conn, error) {
	opts = append(opts, nats.Name(name), nats.Timeout(2*time.Second))
	if tlsc != nil {
		opts = append(opts, nats.Secure(tlsc.Client()))
	}
	if user.User != "" {
		opts = append(opts, nats.UserInfo(user.User, user.Password), nats.CustomInboxPrefix(inboxPrefix(user.User)))
	}
	return nats.Connect(strings.Join(urls, ","), opts...)
}

// listen listens for the other roles: over TLS admitting peers of roles
// when the process has a certificate. It returns the listener's URL.
func (c roleConfig) listen(roles ...string) (net.Listener, string, error) {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, "", err
	}
	addr := c.Advertise
	if addr == "" {
		addr = ln.Addr().String()
	}
	if c.TLS == nil {
		return ln, "http://" + addr, nil
	}
	return tls.NewListener(ln, c.TLS.Server(roles...)), "https://" + addr, nil
}

// transport is the HTTP client transport to workers and control planes.
// A peer that vanishes from the network (a host down, a link cut) sends no
// reset: without these its calls would wait for the kernel's retransmission
// limit, a quarter of an hour. Keepalive probes find it silent while a call
// waits for its answer, and the user timeout while data it was sent stays
// unacknowledged: either way within about 10 s, however long the function runs.
const (
	peerKeepAlive   = 4 * time.Second
	peerUserTimeout = 10 * time.Second
)

func (c roleConfig) transport() *http.Transport {
	d := &net.Dialer{Timeout: 2 * time.Second,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: peerKeepAlive, Interval: 2 * time.Second, Count: 3},
		Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(peerUserTimeout.Milliseconds()))
			})
			return errors.Join(err, serr)
		}}
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
		DialContext: d.DialContext}
	if c.TLS != nil {
		tr.TLSClientConfig = c.TLS.Client()
	}
	return tr
}

// codeStore is a worker's or a control plane's code directory, a cache of
// the cluster's replicated bucket.
func (c roleConfig) codeStore(ctx context.Context, nc *nats.Conn) (*codestore.Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var b *codebucket.Bucket
	if err := retryFor(ctx, 60*time.Second, func(ctx context.Context) (err error) {
		b, err = codebucket.Open(ctx, js, c.Replicas)
		return err
	}); err != nil {
		return nil, err
	}
	return codestore.Open(codestore.Config{Dir: filepath.Join(c.DataDir, "code"), Remote: b})
}

// workerClient is this role's client of workers, with pooled connections.
func (c roleConfig) workerClient() *workerClient {
	return &workerClient{Token: c.Identity.Token, HTTP: &http.Client{Transport: c.transport()}}
}
