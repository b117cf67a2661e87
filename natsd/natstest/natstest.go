// Package natstest gives tests an embedded JetStream of their own.
package natstest

import (
	"testing"

	"github.com/kiln-dev/kiln/natsd"
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
