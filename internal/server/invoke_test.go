package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/server"
)

var ctx = context.Background()

// toolkit creates the multi-behaviour aws-lambda-go function under name.
func toolkit(t *testing.T, c *lambda.Client, name string, mutate func(*lambda.CreateFunctionInput)) {
	t.Helper()
	in := &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Runtime:      types.RuntimeProvidedal2023,
		Handler:      aws.String("bootstrap"),
		Code:         &types.FunctionCode{ZipFile: fntest.GoFunctionZip(t, fntest.ToolkitGo)},
		Timeout:      aws.Int32(3),
	}
	if mutate != nil {
		mutate(in)
	}
	kilntest.MustCreate(t, c, in)
}

func call(t *testing.T, c *lambda.Client, in *lambda.InvokeInput) *lambda.InvokeOutput {
	t.Helper()
	out, err := c.Invoke(ctx, in)
	if err != nil {
		t.Fatalf("invoke %s: %v", aws.ToString(in.FunctionName), err)
	}
	return out
}

func TestInvokeEchoWarmAndLogs(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "echo", nil)

	out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"a":[1,2,3]}`), LogType: types.LogTypeTail})
	if string(out.Payload) != `{"a":[1,2,3]}` || out.StatusCode != 200 || aws.ToString(out.ExecutedVersion) != "$LATEST" || out.FunctionError != nil {
		t.Fatalf("first invoke: %+v %s", out, out.Payload)
	}
	log, _ := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
	for _, want := range []string{"START RequestId: ", "END RequestId: ", "REPORT RequestId: ", "Init Duration: "} {
		if !strings.Contains(string(log), want) {
			t.Errorf("tail lacks %q:\n%s", want, log)
		}
	}
	if h, ok := kilntest.ColdStart(out); !ok {
		t.Errorf("cold invoke: X-Kiln-Cold-Start %q", h)
	}
	out = call(t, c, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"action":"print","lines":2,"text":"line of the second invoke"}`), LogType: types.LogTypeTail})
	log, _ = base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
	if strings.Count(string(log), "line of the second invoke") != 2 || strings.Contains(string(log), "Init Duration") {
		t.Errorf("warm invoke tail:\n%s", log)
	}
	if h, _ := kilntest.ColdStart(out); h != "" {
		t.Errorf("warm invoke: X-Kiln-Cold-Start %q", h)
	}
	if st := s.Assignment().Stats("", ""); st.Idle != 1 || st.Busy != 0 {
		t.Errorf("environments after two sequential invokes: %+v, want one idle", st)
	}
	// No payload is an empty event, as Lambda gives.
	if out = call(t, c, &lambda.InvokeInput{FunctionName: aws.String("echo")}); string(out.Payload) != `{}` {
		t.Errorf("empty payload: %s", out.Payload)
	}
	// A tail of a big log is exactly 4 KB and ends with REPORT.
	out = call(t, c, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"action":"print","lines":2000,"text":"0123456789"}`), LogType: types.LogTypeTail})
	log, _ = base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
	if len(log) != 4096 || !strings.Contains(string(log), "REPORT RequestId") {
		t.Errorf("tail of a big log: %d bytes", len(log))
	}
}

func TestQualifiersAndNames(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "q", nil)
	if _, err := c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("q")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("q"), Name: aws.String("live"), FunctionVersion: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	arn := fmt.Sprintf("arn:aws:lambda:%s:%s:function:q", s.Region, s.Identity.AccountID)
	for _, tc := range []struct {
		name, qualifier, version string
	}{
		{"q", "", "$LATEST"},
		{"q:1", "", "1"},
		{"q:live", "", "1"},
		{"q", "live", "1"},
		{"q", "$LATEST", "$LATEST"},
		{arn, "", "$LATEST"},
		{arn + ":live", "", "1"},
		{s.Identity.AccountID + ":function:q:1", "", "1"},
		{"q:live", "live", "1"},
	} {
		in := &lambda.InvokeInput{FunctionName: aws.String(tc.name), Payload: []byte(`{"action":"context"}`)}
		if tc.qualifier != "" {
			in.Qualifier = aws.String(tc.qualifier)
		}
		out := call(t, c, in)
		if v := aws.ToString(out.ExecutedVersion); v != tc.version {
			t.Errorf("%s (%s): executed %s, want %s", tc.name, tc.qualifier, v, tc.version)
		}
		var got map[string]any
		json.Unmarshal(out.Payload, &got)
		if got["version"] != tc.version || !strings.HasPrefix(got["functionArn"].(string), arn) {
			t.Errorf("%s: context %v", tc.name, got)
		}
	}
	for _, tc := range []struct {
		name, qualifier, typ string
		status               int
	}{
		{"nope", "", "ResourceNotFoundException", 404},
		{"q:7", "", "ResourceNotFoundException", 404},
		{"q:ghost", "", "ResourceNotFoundException", 404},
		{"q:live", "1", "InvalidParameterValueException", 400},
		{"arn:aws:lambda:us-east-1:999999999999:function:q", "", "AccessDeniedException", 403},
		{"arn:aws:lambda:eu-west-1:" + s.Identity.AccountID + ":function:q", "", "ResourceNotFoundException", 404},
	} {
		in := &lambda.InvokeInput{FunctionName: aws.String(tc.name)}
		if tc.qualifier != "" {
			in.Qualifier = aws.String(tc.qualifier)
		}
		_, err := c.Invoke(ctx, in)
		kilntest.APIError(t, err, tc.typ, tc.status)
	}
	// DryRun checks the call without running anything.
	out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("q"), InvocationType: types.InvocationTypeDryRun})
	if out.StatusCode != 204 {
		t.Errorf("DryRun status %d", out.StatusCode)
	}
}

func TestFunctionErrors(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "f", func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(1) })
	type doc struct {
		ErrorMessage, ErrorType string
	}
	for _, tc := range []struct {
		payload, errType, msgPart string
	}{
		{`{"action":"error","msg":"it broke"}`, "errorString", "it broke"},
		{`{"action":"panic"}`, "", "toolkit panic"},
		{`{"action":"sleep","ms":3000}`, "Sandbox.Timedout", "Task timed out after 1.00 seconds"},
		{`{"action":"exit","code":7}`, "Runtime.ExitError", "exit status 7"},
		{`{"action":"big","bytes":6300000}`, "Function.ResponseSizeTooLarge", "Response payload size exceeded"},
	} {
		out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("f"), Payload: []byte(tc.payload)})
		var d doc
		json.Unmarshal(out.Payload, &d)
		if aws.ToString(out.FunctionError) != "Unhandled" || !strings.Contains(d.ErrorMessage, tc.msgPart) || tc.errType != "" && d.ErrorType != tc.errType {
			t.Errorf("%s: FunctionError=%v payload=%.300s", tc.payload, aws.ToString(out.FunctionError), out.Payload)
		}
		// The function keeps serving after every kind of failure.
		if out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("f"), Payload: []byte(`{"ok":1}`)}); string(out.Payload) != `{"ok":1}` {
			t.Errorf("after %s: %s", tc.payload, out.Payload)
		}
	}
}

func TestRequestErrors(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "r", nil)
	// Lambda's front door answers RequestEntityTooLarge (the model's
	// RequestTooLarge is never sent), for 6 MB and one byte as for 7 MB.
	for _, n := range []int{6*1024*1024 + 1, 7 << 20} {
		_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("r"), Payload: make([]byte, n)})
		kilntest.APIError(t, err, "RequestEntityTooLargeException", 413)
	}
	_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("r"), LogType: "Everything"})
	kilntest.APIError(t, err, "ValidationException", 400)
	_, err = c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("r"), InvocationType: "Sometimes"})
	kilntest.APIError(t, err, "ValidationException", 400)
	_, err = c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("r"), Payload: []byte("not json")})
	kilntest.APIError(t, err, "InvalidRequestContentException", 400)
	_, err = c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("r"), ClientContext: aws.String("%%%")})
	kilntest.APIError(t, err, "InvalidRequestContentException", 400)

	unknown := lambda.New(lambda.Options{Region: s.Region, BaseEndpoint: aws.String(s.Endpoint), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIAUNKNOWNUNKNOWN00", "whatever", "")})
	_, err = unknown.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("r")})
	kilntest.APIError(t, err, "UnrecognizedClientException", 403)
	badSecret := lambda.New(lambda.Options{Region: s.Region, BaseEndpoint: aws.String(s.Endpoint), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(s.Identity.AccessKeyID, "wrong-secret", "")})
	_, err = badSecret.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("r")})
	kilntest.APIError(t, err, "InvalidSignatureException", 403)
	_, err = badSecret.ListFunctions(ctx, &lambda.ListFunctionsInput{})
	kilntest.APIError(t, err, "InvalidSignatureException", 403)

	dry, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("r"), InvocationType: types.InvocationTypeDryRun})
	if id, _ := awsmiddleware.GetRequestIDMetadata(dry.ResultMetadata); err != nil || id == "" {
		t.Errorf("DryRun: %v, no request ID", err)
	}
	// Every answer carries a request ID, and a path of no operation is
	// Lambda's error, not Go's plain-text 404.
	for _, r := range []*http.Request{
		signedRequest(t, s, "GET", "/2015-03-31/functions/", nil, "lambda", s.Region, nil),
		signedRequest(t, s, "GET", "/2099-01-01/no-such-operation", nil, "lambda", s.Region, nil),
		signedRequest(t, s, "GET", "/2015-03-31/functions/", nil, "lambda", "eu-north-9", nil),
	} {
		resp, body := do(t, r)
		if len(resp.Header.Get("X-Amzn-RequestId")) != 36 || len(resp.Header.Values("X-Amzn-RequestId")) != 1 {
			t.Errorf("%s: request IDs %q", r.URL.Path, resp.Header.Values("X-Amzn-RequestId"))
		}
		if resp.StatusCode == 404 && errorType(resp) != "UnknownOperationException" {
			t.Errorf("%s: %d %q %s", r.URL.Path, resp.StatusCode, errorType(resp), body)
		}
	}
}

func TestClientContextAndEnvironment(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "ctx", func(in *lambda.CreateFunctionInput) {
		in.MemorySize = aws.Int32(256)
		in.Environment = &types.Environment{Variables: map[string]string{"GREETING": "hi"}}
	})
	cc := base64.StdEncoding.EncodeToString([]byte(`{"custom":{"tenant":"t1"},"client":{},"env":{}}`))
	out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("ctx"), Payload: []byte(`{"action":"context"}`), ClientContext: aws.String(cc)})
	var got map[string]any
	json.Unmarshal(out.Payload, &got)
	if got["memory"] != float64(256) || got["functionName"] != "ctx" || got["logGroup"] != "/aws/lambda/ctx" ||
		fmt.Sprint(got["clientCustom"]) != "map[tenant:t1]" || got["remainingMs"].(float64) < 1000 || got["requestId"] == "" {
		t.Errorf("context: %v", got)
	}
	for name, want := range map[string]string{"GREETING": "hi", "AWS_REGION": s.Region, "AWS_LAMBDA_FUNCTION_NAME": "ctx",
		"AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand", "_HANDLER": "bootstrap", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"} {
		out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("ctx"), Payload: []byte(`{"action":"env","name":"` + name + `"}`)})
		if string(out.Payload) != `"`+want+`"` {
			t.Errorf("%s = %s, want %q", name, out.Payload, want)
		}
	}
}

func TestConcurrencyParallelEnvironmentsAndThrottles(t *testing.T) {
	s := kilntest.Start(t, server.Config{AccountConcurrency: 104})
	c := kilntest.Lambda(s)
	toolkit(t, c, "par", func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(15) })
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Long enough that all four overlap on a loaded host, so that
			// each needs an environment of its own.
			_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("par"), Payload: []byte(`{"action":"sleep","ms":2000}`)})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Assignment().Stats("", ""); st.Idle != n {
		t.Fatalf("after %d parallel invokes: %+v, want %d idle environments", n, st, n)
	}

	// Reserved concurrency 0 throttles every invoke.
	if _, err := c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("par"), ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("par")})
		var tm *types.TooManyRequestsException
		return errors.As(err, &tm) && tm.Reason == types.ThrottleReasonReservedFunctionConcurrentInvocationLimitExceeded
	})
	// Reserved 1: a second concurrent invoke is throttled.
	c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("par"), ReservedConcurrentExecutions: aws.Int32(1)})
	waitFor(t, func() bool {
		_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("par")})
		return err == nil
	})
	throttled := concurrent(t, c, "par", 2, 3000)
	if throttled != 1 {
		t.Errorf("reserved 1, 2 concurrent invokes: %d throttled, want 1", throttled)
	}
	// The account pool: 104 - 100 reserved... use a second function with the 4 left.
	c.DeleteFunctionConcurrency(ctx, &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String("par")})
	toolkit(t, c, "big", nil)
	if _, err := c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("big"), ReservedConcurrentExecutions: aws.Int32(4)}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "counting learns the reservations through the metadata watch", func() error {
		par, parReserved := s.Counter().Reserved(counting.Key{Account: s.Identity.AccountID, Function: "par"})
		big, _ := s.Counter().Reserved(counting.Key{Account: s.Identity.AccountID, Function: "big"})
		if parReserved || big != 4 {
			return fmt.Errorf("par reserved %d (%v), big %d", par, parReserved, big)
		}
		return nil
	})
	// Long sleeps: all 102 must overlap, however slowly a loaded machine starts them.
	if throttled := concurrent(t, c, "par", 102, 8000); throttled != 2 {
		t.Errorf("unreserved pool of 100, 102 concurrent invokes: %d throttled, want 2", throttled)
	}
}

// concurrent runs n sleeping invokes at once and counts the throttled ones.
func concurrent(t *testing.T, c *lambda.Client, name string, n, sleepMs int) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	throttled := 0
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(name), Payload: []byte(fmt.Sprintf(`{"action":"sleep","ms":%d}`, sleepMs))})
			var tm *types.TooManyRequestsException
			switch {
			case errors.As(err, &tm):
				mu.Lock()
				throttled++
				mu.Unlock()
			case err != nil:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	return throttled
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	wait.True(t, "condition", cond)
}

func TestUpdatedCodeRunsAndRestartKeepsFunctions(t *testing.T) {
	dir := t.TempDir()
	s := kilntest.Start(t, server.Config{DataDir: dir})
	c := kilntest.Lambda(s)
	toolkit(t, c, "upd", nil)
	if out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("upd"), Payload: []byte(`{"action":"version"}`)}); string(out.Payload) != `"v1"` {
		t.Fatalf("v1: %s", out.Payload)
	}
	v2 := fntest.GoFunctionZip(t, strings.Replace(fntest.ToolkitGo, `VERSION = "v1"`, `VERSION = "v2"`, 1))
	if _, err := c.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("upd"), ZipFile: v2, Publish: true}); err != nil {
		t.Fatal(err)
	}
	fntest.WaitUpdated(t, c, "upd")
	if out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("upd"), Payload: []byte(`{"action":"version"}`)}); string(out.Payload) != `"v2"` {
		t.Fatalf("after update: %s", out.Payload)
	}
	c.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("upd"), Name: aws.String("prod"), FunctionVersion: aws.String("1")})
	s.Close()

	s2 := kilntest.Start(t, server.Config{DataDir: dir})
	c2 := kilntest.Lambda(s2)
	if s2.Identity.AccessKeyID != s.Identity.AccessKeyID || s2.Identity.AccountID != s.Identity.AccountID {
		t.Errorf("identity changed across restart")
	}
	out := call(t, c2, &lambda.InvokeInput{FunctionName: aws.String("upd:prod"), Payload: []byte(`{"action":"version"}`)})
	if string(out.Payload) != `"v2"` || aws.ToString(out.ExecutedVersion) != "1" {
		t.Fatalf("after restart: %s %s", out.Payload, aws.ToString(out.ExecutedVersion))
	}
}

func TestWeightedAlias(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "w", nil)
	c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("w")})
	c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("w"), Description: aws.String("second")})
	if _, err := c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("w")}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("w"), Name: aws.String("canary"), FunctionVersion: aws.String("1"),
		RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"2": 0.5}}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range 60 {
		out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("w:canary")})
		seen[aws.ToString(out.ExecutedVersion)]++
	}
	if seen["1"] < 10 || seen["2"] < 10 || len(seen) != 2 {
		t.Errorf("versions run through a 50%% alias: %v", seen)
	}
}
