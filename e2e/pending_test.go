package e2e

import (
	"archive/zip"
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// A zip whose directory is sound but whose data is corrupt is taken
// (Pending: the package is unpacked after the answer), then fails as it
// is unpacked: the function is Failed with InvalidZipFileException, the
// SDK's waiter says so, and invokes get Lambda's ResourceConflictException.
func TestZipThatDoesNotUnpack(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		h := &zip.FileHeader{Name: "bootstrap", Method: zip.Store}
		h.SetMode(0o755)
		w, _ := zw.CreateHeader(h)
		w.Write([]byte("#!/bin/sh\necho intact\n"))
		zw.Close()
		bad := buf.Bytes()
		bad[bytes.Index(bad, []byte("intact"))] = 'X' // the CRC no longer matches
		out, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("corrupt"), Role: aws.String("arn:aws:iam::123456789012:role/kiln-e2e"),
			Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: bad}})
		if err != nil || out.State != types.StatePending || out.LastUpdateStatus != types.LastUpdateStatusInProgress {
			t.Fatalf("create: %+v %v; want Pending, InProgress", out, err)
		}
		wait := lambda.NewFunctionActiveV2Waiter(c, func(o *lambda.FunctionActiveV2WaiterOptions) { o.MinDelay = 100 * time.Millisecond })
		if err := wait.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("corrupt")}, time.Minute); err == nil || !strings.Contains(err.Error(), "Failure") {
			t.Fatalf("waiter: %v; want its failure state", err)
		}
		get, err := c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("corrupt")})
		if err != nil || get.Configuration.State != types.StateFailed || get.Configuration.StateReasonCode != types.StateReasonCodeInvalidZipFileException {
			t.Fatalf("GetFunction: %+v %v; want Failed, InvalidZipFileException", get, err)
		}
		_, err = c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("corrupt")})
		var conflict *types.ResourceConflictException
		if !errors.As(err, &conflict) || !strings.Contains(conflict.ErrorMessage(), "currently in the following state: Failed") {
			t.Fatalf("invoke: %v; want ResourceConflictException (state Failed)", err)
		}
	})
}
