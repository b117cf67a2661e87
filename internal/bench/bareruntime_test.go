package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The signed ceiling's target makes, per call, the request kiln's client
// makes (SigV4-signed, the same payload) to the floor, and then a whole
// turn of the real runtime: neither is skipped.
func TestSignedRuntimeTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the aws-lambda-go function")
	}
	var signed, unsigned atomic.Int32
	floor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential="+benchKey+"/") {
			signed.Add(1)
		} else {
			unsigned.Add(1)
		}
		floorEcho(w, r)
	}))
	defer floor.Close()
	zip, err := echoZip(&strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bare, err := newBareRuntimes(t.TempDir(), zip, []byte(echoPayload))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.stop()
	tg := bare.withClient(ctx, signedClient(floor.URL, "bench-warm", []byte(echoPayload), 1), "signed+runtime")
	if err := tg.prepare(2); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := tg.call(ctx, i); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if signed.Load() != 2 || unsigned.Load() != 0 {
		t.Errorf("floor got %d signed and %d unsigned requests, want 2 signed", signed.Load(), unsigned.Load())
	}
	// Each runtime received its event.
	for i, r := range bare.running {
		if r.api.LastDelivered() == "" {
			t.Errorf("runtime %d received no event", i)
		}
	}
}
