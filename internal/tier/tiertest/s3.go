package tiertest

import (
	"net/http/httptest"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/kiln-dev/kiln/internal/tier"
)

// S3 starts an S3-compatible server on 127.0.0.1 for the test, with an
// empty bucket, and returns its configuration. The server is gofakes3 (in
// memory): S3 is an external service, the one edge where Kiln's tests run a
// stand-in; the client is the real aws-sdk-go-v2.
func S3(t testing.TB, bucket string) tier.S3Config {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	return tier.S3Config{Bucket: bucket, Prefix: "chunks/", Endpoint: srv.URL, PathStyle: true,
		AccessKeyID: "AKIDTEST", SecretAccessKey: "test-secret"}
}
