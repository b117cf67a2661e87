package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/sandbox"
	"github.com/kiln-dev/kiln/internal/server"
)

// Counting measures the counting service's decision (Acquire and Release of
// a slot) one call at a time from 8 goroutines, and prints p50 and p99.
func Counting(out io.Writer) {
	c := counting.New(counting.Config{})
	const perG, gs = 200000, 8
	lat := make([][]time.Duration, gs)
	var wg sync.WaitGroup
	for g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := counting.Key{Account: "123456789012", Function: fmt.Sprintf("f%d", g%3)}
			ds := make([]time.Duration, 0, perG)
			for range perG {
				t := time.Now()
				s, err := c.Acquire(k)
				d := time.Since(t)
				if err == nil {
					s.Release()
				}
				ds = append(ds, d)
			}
			lat[g] = ds
		}()
	}
	wg.Wait()
	all := slices.Concat(lat...)
	s := summarize(all, 0)
	fmt.Fprintf(out, "\ncounting decision (Acquire, 8 goroutines, %d calls): p50 %s  p99 %s  (the talk's counting service: < 1.5 ms over the network)\n",
		len(all), s.P50, s.P99)
}

// ScaleOut drives one sleeping function from 0 to envs concurrent execution
// environments in an in-process Kiln and reports how long it took and how
// many invokes were throttled, with the scaling-rate limit on or off.
func ScaleOut(ctx context.Context, envs int, unlimited bool, out io.Writer) error {
	dir, err := os.MkdirTemp("", "kiln-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bootstrap, err := fntest.BuildGo(fntest.ToolkitGo)
	if err != nil {
		return err
	}
	zip, err := fntest.ZipFiles(map[string][]byte{"bootstrap": bootstrap})
	if err != nil {
		return err
	}
	box, err := sandbox.New(sandbox.Config{})
	if err != nil {
		return err
	}
	s, err := server.Start(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", AccountConcurrency: max(1000, envs),
		ScaleUnlimited: unlimited, Sandbox: box, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer s.Close()
	creds := aws.Credentials{AccessKeyID: s.Identity.AccessKeyID, SecretAccessKey: s.Identity.SecretAccessKey}
	lc := lambda.New(lambda.Options{Region: s.Region, BaseEndpoint: aws.String(s.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, "")})
	if _, err := lc.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("scale"),
		Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Role: aws.String(fntest.Role),
		Code: &types.FunctionCode{ZipFile: zip}, MemorySize: aws.Int32(128), Timeout: aws.Int32(120)}); err != nil {
		return err
	}
	if err := lambda.NewFunctionActiveV2Waiter(lc).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("scale")}, 2*time.Minute); err != nil {
		return err
	}

	// Every invoke sleeps until all have started (bounded), so each one
	// holds its own environment.
	hold := 60 * time.Second
	payload := []byte(fmt.Sprintf(`{"action":"sleep","ms":%d}`, hold.Milliseconds()))
	sum := sha256.Sum256(payload)
	hash := hex.EncodeToString(sum[:])
	signer := v4.NewSigner()
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: envs}}
	url := s.Endpoint + "/2015-03-31/functions/scale/invocations"
	var throttled, failed atomic.Int64
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for range envs {
		go func() {
			req, _ := http.NewRequestWithContext(runCtx, http.MethodPost, url, bytes.NewReader(payload))
			signer.SignHTTP(ctx, creds, req, hash, "lambda", s.Region, time.Now())
			resp, err := httpc.Do(req)
			if err != nil {
				return // cancelled at the end of the run
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
			case http.StatusTooManyRequests:
				throttled.Add(1)
			default:
				failed.Add(1)
			}
		}()
	}
	deadline := start.Add(hold - 5*time.Second)
	reached := time.Duration(0)
	next := 100
	for time.Now().Before(deadline) {
		n := s.Worker().Count()
		for n >= next && next <= envs {
			fmt.Fprintf(os.Stderr, "  %4d environments after %s\n", next, time.Since(start).Round(time.Millisecond))
			next += 100
		}
		if n >= envs {
			reached = time.Since(start)
			break
		}
		if int(throttled.Load()+failed.Load())+n >= envs && n < envs {
			break // some were refused: this is as far as it goes
		}
		time.Sleep(5 * time.Millisecond)
	}
	limit := "on"
	if unlimited {
		limit = "off"
	}
	if reached > 0 {
		fmt.Fprintf(out, "scale-out, scaling-rate limit %s: 0 → %d environments in %s, %d throttled, %d failed\n",
			limit, envs, reached.Round(time.Millisecond), throttled.Load(), failed.Load())
	} else {
		fmt.Fprintf(out, "scale-out, scaling-rate limit %s: reached %d of %d environments, %d throttled, %d failed\n",
			limit, s.Worker().Count(), envs, throttled.Load(), failed.Load())
	}
	cancel()
	return nil
}
