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

// Servers without a Dir keep their file streams apart: one server's
// messages never show up in another's stream of the same name.
func TestNoDirIsPrivate(t *testing.T) {
	counts := make([]uint64, 2)
	for i := range counts {
		s, err := Start(Config{})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := s.Connect()
		if err != nil {
			t.Fatal(err)
		}
		js, _ := nc.JetStream()
		if _, err := js.AddStream(&nats.StreamConfig{Name: "SHARED", Subjects: []string{"shared"}, Storage: nats.FileStorage}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish("shared", []byte("x")); err != nil {
			t.Fatal(err)
		}
		info, err := js.StreamInfo("SHARED")
		if err != nil {
			t.Fatal(err)
		}
		counts[i] = info.State.Msgs
		nc.Close()
		s.Shutdown()
	}
	if counts[0] != 1 || counts[1] != 1 {
		t.Fatalf("messages per server %v, want [1 1]", counts)
	}
}
