package natsd

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// Port 0 means a free port, as for net.Listen (nats-server alone reads it
// as 4222): two servers side by side both start.
func TestListenPortZeroIsFree(t *testing.T) {
	var urls []string
	for i := 0; i < 2; i++ {
		s, err := Start(Config{Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Shutdown)
		urls = append(urls, s.ClientURL())
	}
	if urls[0] == urls[1] || urls[0] == "nats://127.0.0.1:4222" {
		t.Fatalf("client URLs %v", urls)
	}
}

// With a password, a client over the network must give it; the in-process
// connection gives it itself.
func TestPassword(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0", Password: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	if _, err := nats.Connect(s.ClientURL()); err == nil {
		t.Error("connected without the password")
	}
	if _, err := nats.Connect(s.ClientURL(), nats.UserInfo(User, "wrong")); err == nil {
		t.Error("connected with a wrong password")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(User, "secret"))
	if err != nil {
		t.Fatalf("with the password: %v", err)
	}
	nc.Close()
	in, err := s.Connect()
	if err != nil {
		t.Fatalf("in process: %v", err)
	}
	in.Close()
}
