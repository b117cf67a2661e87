// Package natsd runs the embedded NATS JetStream server that `kiln up` uses,
// and connects to it (or to an external cluster) for every role.
package natsd

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config configures the embedded server. The zero value listens on no TCP port
// at all: roles in the same process connect in-process.
type Config struct {
	// Dir holds JetStream's files. Empty means a private temporary
	// directory, removed at Shutdown (nats-server's own default is one
	// directory shared by every server on the machine).
	Dir string
	// Listen is host:port for NATS clients; empty means no network listener.
	Listen string
	// Password, when set, is required of every client (user "kiln"),
	// in-process ones included.
	Password string
}

// Server is a running embedded NATS server.
type Server struct {
	srv      *server.Server
	password string
	dir      string
	scratch  string // the temporary Dir to remove at Shutdown, if any
	stopDisk chan struct{}
	stopOnce sync.Once

	diskMu sync.Mutex
	disk   DiskState
}

// Start runs an embedded NATS server with JetStream and waits until it is ready.
func Start(cfg Config) (*Server, error) {
	opts := &server.Options{
		ServerName: "kiln",
		JetStream:  true,
		NoSigs:     true,
		NoLog:      true,
		DontListen: cfg.Listen == "",
		// Async events carry up to 1 MB of payload plus headers, and their
		// destination records a 6 MB response: above NATS's 1 MB default.
		MaxPayload: 8 << 20,
		// JetStream sync_interval: fsync on every write would cost ~ms per
		// publish; the default (2 min) trusts the page cache, which survives
		// a process crash (our failure model for `kiln up`), not a power cut.
	}
	scratch := ""
	if cfg.Dir == "" {
		var err error
		if scratch, err = os.MkdirTemp("", "kiln-nats-"); err != nil {
			return nil, fmt.Errorf("nats store: %w", err)
		}
	}
	opts.StoreDir = cmp.Or(cfg.Dir, scratch)
	if cfg.Password != "" {
		opts.Username, opts.Password = User, cfg.Password
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address: %w", err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("nats listen address: %w", err)
		}
		if opts.Port == 0 { // nats-server reads 0 as its default port, 4222
			opts.Port = server.RANDOM_PORT
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		os.RemoveAll(scratch)
		return nil, fmt.Errorf("nats server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		os.RemoveAll(scratch)
		return nil, fmt.Errorf("nats server: not ready after 30s")
	}
	s := &Server{srv: srv, password: cfg.Password, dir: cfg.Dir, scratch: scratch, stopDisk: make(chan struct{})}
	if cfg.Dir != "" {
		s.checkDisk(cfg.Dir)
		go s.watchDisk(cfg.Dir, s.stopDisk)
	}
	return s, nil
}

// User is the user name clients give with Config.Password.
const User = "kiln"

// Connect opens a client connection inside this process, without a socket.
func (s *Server) Connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(s.srv), nats.Name("kiln")}
	if s.password != "" {
		opts = append(opts, nats.UserInfo(User, s.password))
	}
	return nats.Connect("", opts...)
}

// ClientURL is the URL external processes connect to ("" when not listening).
func (s *Server) ClientURL() string {
	if s.srv.Addr() == nil {
		return ""
	}
	return s.srv.ClientURL()
}

// MaxStore is how many bytes JetStream may keep on disk: sized from the
// free space when the server started.
func (s *Server) MaxStore() int64 {
	if c := s.srv.JetStreamConfig(); c != nil {
		return c.MaxStore
	}
	return 0
}

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() { close(s.stopDisk) })
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	if s.scratch != "" {
		os.RemoveAll(s.scratch)
	}
}
