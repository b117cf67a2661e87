// Package natstest gives tests an embedded JetStream of their own.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Connect starts an embedded NATS JetStream server with its data in a
// temporary directory and returns a connection to it; both end with the test.
func Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	srv, err := natsd.Start(natsd.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Cluster starts n clustered JetStream nodes on 127.0.0.1, as n hosts would
// run them (ServerName n0, n1, ...; ClientURL to connect); they stop with
// the test. Replicated streams need a moment to elect leaders: retry their
// creation.
func Cluster(tb testing.TB, n int) []*server.Server {
	tb.Helper()
	routes := make([]int, n)
	for i := range routes {
		routes[i] = freePort(tb)
	}
	var nodes []*server.Server
	for i, port := range routes {
		opts := &server.Options{ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: tb.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: port}}
		for j, rt := range routes {
			if j != i {
				opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", rt)})
			}
		}
		s, err := server.NewServer(opts)
		if err != nil {
			tb.Fatal(err)
		}
		s.Start()
		nodes = append(nodes, s)
		tb.Cleanup(s.Shutdown)
	}
	for _, s := range nodes {
		if !s.ReadyForConnections(30 * time.Second) {
			tb.Fatal("nats node not ready")
		}
	}
	return nodes
}

func freePort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ConnectTo returns a connection to node s (of Cluster), closed with the test.
func ConnectTo(tb testing.TB, s *server.Server) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
