package kilntest

import (
	"bytes"
	"context"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Kinesis returns an aws-sdk-go-v2 Kinesis client of endpoint, with
// retries off, keeping up to 64 idle connections (for concurrent callers).
//
// Its requests' bodies are copied into memory before they are sent, which
// works around a race between smithy-go and net/http in the client alone:
// smithy-go closes a request's body as soon as the response's head has
// come, and a Transport that has not yet made its last read of the body
// (the check for bytes past Content-Length) then gets io.EOF from the
// closed body, takes it for a failed write and closes the connection
// under the response body being read ("use of closed network
// connection"). A large response (GetRecords) on a loaded machine shows
// it; the body copy, a plain bytes.Reader, reads nothing after close.
func Kinesis(endpoint, region string, creds aws.CredentialsProvider) *kinesis.Client {
	return kinesis.New(kinesis.Options{Region: region, BaseEndpoint: aws.String(endpoint), Credentials: creds,
		RetryMaxAttempts: 1, HTTPClient: copiedBodies{&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}})
}

// KinesisJetStream is the JetStream stream holding the records of c's
// Kinesis stream name (named by its StreamId), read through nc.
func KinesisJetStream(ctx context.Context, c *kinesis.Client, nc *nats.Conn, name string) (jetstream.Stream, error) {
	sum, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return js.Stream(ctx, "KILN_KINESIS_"+aws.ToString(sum.StreamDescriptionSummary.StreamId))
}

type copiedBodies struct{ c *http.Client }

func (c copiedBodies) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	return c.c.Do(r)
}
