package natsd

import "testing"

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
