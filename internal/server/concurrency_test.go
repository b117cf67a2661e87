package server_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/server"
)

func TestProvisionedConcurrency(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "pc", func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(15) })
	if _, err := c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("pc")}); err != nil {
		t.Fatal(err)
	}
	c.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("pc"), Name: aws.String("live"), FunctionVersion: aws.String("1")})

	_, err := c.PutProvisionedConcurrencyConfig(ctx, &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"),
		Qualifier: aws.String("$LATEST"), ProvisionedConcurrentExecutions: aws.Int32(1)})
	kilntest.APIError(t, err, "InvalidParameterValueException", 400)
	_, err = c.GetProvisionedConcurrencyConfig(ctx, &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"), Qualifier: aws.String("live")})
	kilntest.APIError(t, err, "ProvisionedConcurrencyConfigNotFoundException", 404)

	put, err := c.PutProvisionedConcurrencyConfig(ctx, &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"),
		Qualifier: aws.String("live"), ProvisionedConcurrentExecutions: aws.Int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	if put.Status != types.ProvisionedConcurrencyStatusEnumInProgress || aws.ToInt32(put.RequestedProvisionedConcurrentExecutions) != 3 {
		t.Errorf("put: %+v", put)
	}
	// The same version again through another qualifier conflicts.
	_, err = c.PutProvisionedConcurrencyConfig(ctx, &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"),
		Qualifier: aws.String("1"), ProvisionedConcurrentExecutions: aws.Int32(1)})
	kilntest.APIError(t, err, "ResourceConflictException", 409)

	ready := func(want int) {
		t.Helper()
		waitFor(t, func() bool {
			got, err := c.GetProvisionedConcurrencyConfig(ctx, &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"), Qualifier: aws.String("live")})
			return err == nil && got.Status == types.ProvisionedConcurrencyStatusEnumReady &&
				aws.ToInt32(got.AllocatedProvisionedConcurrentExecutions) == int32(want) &&
				s.Assignment().Stats(s.Identity.AccountID, "pc").Idle == want
		})
	}
	ready(3) // ready before any traffic
	if st := s.Assignment().Stats(s.Identity.AccountID, "pc"); st.Provisioned != 3 || st.Busy != 0 {
		t.Fatalf("before traffic: %+v", st)
	}

	out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("pc:live"), Payload: []byte(`{"action":"env","name":"AWS_LAMBDA_INITIALIZATION_TYPE"}`), LogType: types.LogTypeTail})
	log, _ := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
	if string(out.Payload) != `"provisioned-concurrency"` || strings.Contains(string(log), "Init Duration") {
		t.Errorf("invoke on a provisioned environment: %s\n%s", out.Payload, log)
	}

	// Five at once: three provisioned, two spill over to on-demand.
	var mu sync.Mutex
	kinds := map[string]int{}
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Sleep first so all five overlap (4 s: however slowly a loaded
			// host sends them and starts the two on demand), then report the
			// environment's kind.
			out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("pc:live"), Payload: []byte(`{"action":"sleep","ms":4000}`)})
			_ = out
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	busy := 0
	wait.For(t, "five invokes running at once", func() error {
		busy = max(busy, s.Assignment().Stats(s.Identity.AccountID, "pc").Busy)
		select {
		case <-done:
			return nil
		default:
		}
		if busy < 5 {
			return fmt.Errorf("%d busy", busy)
		}
		return nil
	})
	<-done
	if busy != 5 {
		t.Errorf("five concurrent invokes: at most %d busy at once", busy)
	}
	for range 8 {
		out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("pc:live"), Payload: []byte(`{"action":"env","name":"AWS_LAMBDA_INITIALIZATION_TYPE"}`)})
		mu.Lock()
		kinds[string(out.Payload)]++
		mu.Unlock()
	}
	if kinds[`"provisioned-concurrency"`] != 8 {
		t.Errorf("sequential invokes after the spill should use provisioned environments first: %v", kinds)
	}

	// A crash takes a provisioned environment; it is replaced.
	out = call(t, c, &lambda.InvokeInput{FunctionName: aws.String("pc:live"), Payload: []byte(`{"action":"exit","code":2}`)})
	if aws.ToString(out.FunctionError) == "" {
		t.Fatalf("exit: %s", out.Payload)
	}
	waitFor(t, func() bool {
		st := s.Assignment().Stats(s.Identity.AccountID, "pc")
		return st.Provisioned == 3
	})

	list, err := c.ListProvisionedConcurrencyConfigs(ctx, &lambda.ListProvisionedConcurrencyConfigsInput{FunctionName: aws.String("pc")})
	if err != nil || len(list.ProvisionedConcurrencyConfigs) != 1 || !strings.HasSuffix(aws.ToString(list.ProvisionedConcurrencyConfigs[0].FunctionArn), ":live") {
		t.Fatalf("list: %+v %v", list, err)
	}
	// Reserved concurrency below the provisioned amount is refused, and
	// provisioned concurrency above the reserved.
	_, err = c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("pc"), ReservedConcurrentExecutions: aws.Int32(2)})
	kilntest.APIError(t, err, "InvalidParameterValueException", 400)
	if _, err := c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("pc"), ReservedConcurrentExecutions: aws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.PutProvisionedConcurrencyConfig(ctx, &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"),
		Qualifier: aws.String("live"), ProvisionedConcurrentExecutions: aws.Int32(4)})
	kilntest.APIError(t, err, "InvalidParameterValueException", 400)
	c.DeleteFunctionConcurrency(ctx, &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String("pc")})

	if _, err := c.DeleteProvisionedConcurrencyConfig(ctx, &lambda.DeleteProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"), Qualifier: aws.String("live")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return s.Assignment().Stats(s.Identity.AccountID, "pc").Provisioned == 0 })
}

func TestAccountSettings(t *testing.T) {
	s := kilntest.Start(t, server.Config{AccountConcurrency: 500})
	c := kilntest.Lambda(s)
	toolkit(t, c, "a1", nil)
	toolkit(t, c, "a2", nil)
	c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("a1"), ReservedConcurrentExecutions: aws.Int32(50)})
	got, err := c.GetAccountSettings(ctx, &lambda.GetAccountSettingsInput{})
	if err != nil {
		t.Fatal(err)
	}
	l, u := got.AccountLimit, got.AccountUsage
	if l.ConcurrentExecutions != 500 || aws.ToInt32(l.UnreservedConcurrentExecutions) != 450 || l.CodeSizeZipped != 52428800 ||
		l.CodeSizeUnzipped != 262144000 || u.FunctionCount != 2 || u.TotalCodeSize <= 0 {
		t.Errorf("account settings: limit %+v usage %+v", *l, *u)
	}
}

// TestNoSlotLeaks ends thousands of invokes every way there is and checks
// that every concurrency slot came back.
func TestNoSlotLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("thousands of invokes")
	}
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "leak", func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(1) })
	// Mostly successes and function errors; one in ten ends its environment.
	payloads := []string{`{}`, `{}`, `{}`, `{}`, `{}`, `{}`, `{"action":"error","msg":"x"}`, `{"action":"error","msg":"y"}`, `{}`, ``}
	killers := []string{`{"action":"panic"}`, `{"action":"exit","code":1}`, `{"action":"big","bytes":7000000}`}
	var done atomic.Int64
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				switch {
				case i%100 == 7: // a caller that hangs up mid-invoke
					cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
					c.Invoke(cctx, &lambda.InvokeInput{FunctionName: aws.String("leak"), Payload: []byte(`{"action":"sleep","ms":200}`)})
					cancel()
				case i%250 == 11: // a timeout
					c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("leak"), Payload: []byte(`{"action":"sleep","ms":3000}`)})
				default:
					p := payloads[i%len(payloads)]
					if p == "" {
						p = killers[(i/len(payloads))%len(killers)]
					}
					if _, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("leak"), Payload: []byte(p)}); err != nil {
						t.Errorf("invoke %d: %v", i, err)
					}
				}
				done.Add(1)
			}
		}()
	}
	const n = 2000
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	// Reserved 0: every invoke is throttled, and throttles hold no slot either.
	c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("leak"), ReservedConcurrentExecutions: aws.Int32(0)})
	waitFor(t, func() bool {
		_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("leak")})
		var tm *types.TooManyRequestsException
		return errors.As(err, &tm)
	})
	key := counting.Key{Account: s.Identity.AccountID, Function: "leak"}
	waitFor(t, func() bool { // hung-up callers' invokes finish on their own
		fn, acct := s.Counter().InUse(key)
		return fn == 0 && acct == 0 && s.Assignment().Stats("", "").Busy == 0
	})
	if done.Load() != n {
		t.Fatalf("%d of %d invokes ended", done.Load(), n)
	}
}

// TestReservedLimitExactUnderRace: of 40 simultaneous invokes with reserved
// concurrency 5, exactly 5 run.
func TestReservedLimitExactUnderRace(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "race", func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(30) })
	c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("race"), ReservedConcurrentExecutions: aws.Int32(5)})
	var ok, throttled atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Long sleeps: all 40 must arrive while the first five run, however
			// slowly a loaded host sends them.
			_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("race"), Payload: []byte(`{"action":"sleep","ms":8000}`)})
			var tm *types.TooManyRequestsException
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &tm) && tm.Reason == types.ThrottleReasonReservedFunctionConcurrentInvocationLimitExceeded:
				throttled.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok.Load() != 5 || throttled.Load() != 35 {
		t.Errorf("reserved 5, 40 at once: %d ran, %d throttled", ok.Load(), throttled.Load())
	}
}
