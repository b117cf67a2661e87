package fntest

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// waitFor bounds a wait for a function's code: generous, as the host may
// be slow.
const waitFor = 2 * time.Minute

// WaitActive waits, as a Lambda user does with the SDK's FunctionActiveV2
// waiter, until a function just created is Active (its code unpacked or
// imported). The waiter's delay is shortened: tests create many functions.
func WaitActive(tb TB, c lambda.GetFunctionAPIClient, name string) {
	tb.Helper()
	w := lambda.NewFunctionActiveV2Waiter(c, func(o *lambda.FunctionActiveV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 20*time.Millisecond, time.Second
	})
	if err := w.Wait(context.Background(), &lambda.GetFunctionInput{FunctionName: aws.String(name)}, waitFor); err != nil {
		tb.Fatalf("waiting for %s to be Active: %v", name, err)
	}
}

// WaitUpdated waits, as WaitActive with the FunctionUpdatedV2 waiter, until
// a code or configuration update of a function has ended.
func WaitUpdated(tb TB, c lambda.GetFunctionAPIClient, name string) {
	tb.Helper()
	w := lambda.NewFunctionUpdatedV2Waiter(c, func(o *lambda.FunctionUpdatedV2WaiterOptions) {
		o.MinDelay, o.MaxDelay = 20*time.Millisecond, time.Second
	})
	if err := w.Wait(context.Background(), &lambda.GetFunctionInput{FunctionName: aws.String(name)}, waitFor); err != nil {
		tb.Fatalf("waiting for %s's update: %v", name, err)
	}
}
