package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/server"
)

// benchInvoker starts a Kiln with an aws-lambda-go echo function and returns
// one warm invoke through the whole path, from an in-process SigV4-signing
// HTTP client. `kiln-bench` reports the same path against a plain-HTTP
// floor; these benchmarks are for profiling.
func benchInvoker(b *testing.B) func() error {
	s := kilntest.Start(b, server.Config{})
	c := kilntest.Lambda(s)
	kilntest.MustCreate(b, c, &lambda.CreateFunctionInput{FunctionName: aws.String("bench"), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: fntest.GoFunctionZip(b, fntest.EchoGo)}})
	payload := []byte(`{"message":"hello"}`)
	sum := sha256.Sum256(payload)
	hash := hex.EncodeToString(sum[:])
	signer := v4.NewSigner()
	creds := aws.Credentials{AccessKeyID: s.Identity.AccessKeyID, SecretAccessKey: s.Identity.SecretAccessKey}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	url := s.Endpoint + "/2015-03-31/functions/bench/invocations"
	return func() error {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
		signer.SignHTTP(context.Background(), creds, req, hash, "lambda", s.Region, time.Now())
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
}

func BenchmarkInvokeWarm(b *testing.B) {
	invoke := benchInvoker(b)
	if err := invoke(); err != nil { // the cold start
		b.Fatal(err)
	}
	for b.Loop() {
		if err := invoke(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInvokeWarmParallel is BenchmarkInvokeWarm from 8 clients at once.
func BenchmarkInvokeWarmParallel(b *testing.B) {
	invoke := benchInvoker(b)
	b.SetParallelism(4) // 4 × GOMAXPROCS(2) = 8 clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := invoke(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
