package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/server"
)

// TestRecursionDetection: a function that invokes itself is stopped after
// 16 invokes of one chain unless its recursion config allows loops. The
// chain is carried as a function's own AWS SDK carries it: the SDK, run
// here with the environment a function has (AWS_LAMBDA_FUNCTION_NAME,
// _X_AMZN_TRACE_ID of the invoke it serves), sends the trace header Kiln
// gave the function.
func TestRecursionDetection(t *testing.T) {
	s := kilntest.Start(t, server.Config{})
	c := kilntest.Lambda(s)
	toolkit(t, c, "loop", nil)
	t.Setenv("AWS_LAMBDA_FUNCTION_NAME", "loop")
	trace := "Root=1-5f84c7a6-0123456789abcdef01234567;Sampled=0"
	hop := func() error {
		t.Setenv("_X_AMZN_TRACE_ID", trace)
		out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("loop"), Payload: []byte(`{"action":"env","name":"_X_AMZN_TRACE_ID"}`)})
		if err != nil {
			return err
		}
		return json.Unmarshal(out.Payload, &trace)
	}
	for i := 1; i <= frontend.MaxRecursion; i++ {
		if err := hop(); err != nil {
			t.Fatalf("hop %d: %v", i, err)
		}
	}
	if !strings.HasPrefix(trace, "Root=1-5f84c7a6-0123456789abcdef01234567;Sampled=0;Lineage=") || !strings.HasSuffix(trace, ":16") {
		t.Fatalf("the function's trace after 16 hops: %q", trace)
	}
	kilntest.APIError(t, hop(), "RecursiveInvocationException", 400)

	if _, err := c.PutFunctionRecursionConfig(ctx, &lambda.PutFunctionRecursionConfigInput{FunctionName: aws.String("loop"), RecursiveLoop: types.RecursiveLoopAllow}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for err := hop(); err != nil; err = hop() { // the frontend's cache follows the store
		if time.Now().After(deadline) {
			t.Fatalf("loops allowed, yet: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A request that is no function's starts a chain of its own.
	t.Setenv("AWS_LAMBDA_FUNCTION_NAME", "")
	t.Setenv("_X_AMZN_TRACE_ID", "")
	if _, err := c.PutFunctionRecursionConfig(ctx, &lambda.PutFunctionRecursionConfigInput{FunctionName: aws.String("loop"), RecursiveLoop: types.RecursiveLoopTerminate}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("loop")}); err != nil {
		t.Fatal(err)
	}
}
