// Package kilntest starts real in-process Kilns for tests and benchmarks.
package kilntest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"regexp"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/server"
)

// TB is what the helpers need of a testing.TB: they take it rather than
// testing.TB so that kiln-bench, which uses some of them, links no testing
// (cmd/kiln-bench's TestLinksNoTesting).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Start runs a Kiln with its data in a temporary directory on a free
// loopback port, and closes it when the test ends. cfg's zero fields get
// those defaults.
func Start(tb TB, cfg server.Config) *server.Server {
	tb.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = tb.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := server.Start(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("start kiln: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Lambda returns an aws-sdk-go-v2 Lambda client for s's default account,
// with retries off so that every error reaches the test.
func Lambda(s *server.Server) *lambda.Client {
	return lambda.New(lambda.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(
			s.Identity.AccessKeyID, s.Identity.SecretAccessKey, ""),
		RetryMaxAttempts: 1,
	})
}

// SQS returns an aws-sdk-go-v2 SQS client (AWS JSON protocol) for s's
// default account, with retries off.
func SQS(s *server.Server) *sqs.Client {
	return sqs.New(sqs.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(
			s.Identity.AccessKeyID, s.Identity.SecretAccessKey, ""),
		RetryMaxAttempts: 1,
	})
}

// MustCreate is a convenience for tests: it creates a function, or fails,
// and waits until it is Active, as a Lambda user does before invoking.
func MustCreate(tb TB, c *lambda.Client, in *lambda.CreateFunctionInput) {
	tb.Helper()
	if in.Role == nil {
		in.Role = aws.String(fntest.Role)
	}
	if _, err := c.CreateFunction(context.Background(), in); err != nil {
		tb.Fatalf("create function %s: %v", aws.ToString(in.FunctionName), err)
	}
	fntest.WaitActive(tb, c, aws.ToString(in.FunctionName))
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(tb TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ColdStart is the X-Kiln-Cold-Start header of an invoke's response (the
// phases of the environment it started; empty when it ran warm), and
// whether it is well formed: every phase given, all but placement and
// pool (0 when an agent was ready) above 0.
func ColdStart(out *lambda.InvokeOutput) (header string, ok bool) {
	if r, is := awsmiddleware.GetRawResponse(out.ResultMetadata).(*smithyhttp.Response); is {
		header = r.Header.Get("X-Kiln-Cold-Start")
	}
	return header, coldStartHeader.MatchString(header)
}

var coldStartHeader = regexp.MustCompile(`^placement=\d+\.\d{3};pool=\d+\.\d{3};sandbox=[0-9.]*[1-9][0-9.]*;runtime=[0-9.]*[1-9][0-9.]*;init=[0-9.]*[1-9][0-9.]*;invoke=[0-9.]*[1-9][0-9.]*$`)
