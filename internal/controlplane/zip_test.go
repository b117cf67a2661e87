package controlplane_test

import (
	"archive/zip"
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/controlplane"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// corruptZip is a zip whose directory is sound (so CreateFunction takes
// it) but whose file data does not match its CRC: found only when the
// package is unpacked, in the background.
func corruptZip(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "bootstrap", Method: zip.Store}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("#!/bin/sh\necho intact\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	i := bytes.Index(b, []byte("intact"))
	b[i] = 'X'
	return b
}

// TestZipPendingAndFailures: a zip function is Pending until its package
// is unpacked, then Active; a package that does not unpack leaves a new
// function Failed (InvalidZipFileException) and an updated one on its
// old code with LastUpdateStatus Failed, as the SDKs' waiters read it.
func TestZipPendingAndFailures(t *testing.T) {
	ctx := context.Background()
	k := start(t, "", nil)
	bad := corruptZip(t)
	out, err := k.client.CreateFunction(ctx, createInput("broken", bad))
	if err != nil {
		t.Fatal(err)
	}
	if out.State != types.StatePending || out.LastUpdateStatus != types.LastUpdateStatusInProgress {
		t.Fatalf("created: State %s, LastUpdateStatus %s; want Pending, InProgress", out.State, out.LastUpdateStatus)
	}
	w := lambda.NewFunctionActiveV2Waiter(k.client, func(o *lambda.FunctionActiveV2WaiterOptions) { o.MinDelay = 20 * time.Millisecond })
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("broken")}, time.Minute); err == nil {
		t.Fatal("the waiter saw a function whose zip does not unpack Active")
	}
	get, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("broken")})
	if err != nil {
		t.Fatal(err)
	}
	if c := get.Configuration; c.State != types.StateFailed || c.StateReasonCode != types.StateReasonCodeInvalidZipFileException ||
		!strings.Contains(aws.ToString(c.StateReason), "Could not unzip uploaded file") {
		t.Fatalf("State %s (%s: %s); want Failed (InvalidZipFileException)", c.State, c.StateReasonCode, aws.ToString(c.StateReason))
	}

	// An update with it: $LATEST keeps its code, the version published
	// with it fails.
	good := bootstrapZip(t, "good")
	k.create("fn", good)
	upd, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("fn"), ZipFile: bad, Publish: true})
	if err != nil {
		t.Fatal(err)
	}
	if upd.State != types.StatePending || aws.ToString(upd.Version) != "1" {
		t.Fatalf("published with the update: version %s State %s; want 1 Pending", aws.ToString(upd.Version), upd.State)
	}
	u := lambda.NewFunctionUpdatedV2Waiter(k.client, func(o *lambda.FunctionUpdatedV2WaiterOptions) { o.MinDelay = 20 * time.Millisecond })
	if err := u.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("fn")}, time.Minute); err == nil {
		t.Fatal("the update waiter saw a failed update succeed")
	}
	get, err = k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("fn")})
	if err != nil {
		t.Fatal(err)
	}
	if c := get.Configuration; c.State != types.StateActive || c.LastUpdateStatus != types.LastUpdateStatusFailed ||
		c.LastUpdateStatusReasonCode != types.LastUpdateStatusReasonCode(types.StateReasonCodeInvalidZipFileException) || aws.ToString(c.CodeSha256) != codeSha(good) {
		t.Fatalf("after a failed update: State %s, LastUpdateStatus %s (%s), code %s; want Active, Failed, the old code",
			c.State, c.LastUpdateStatus, c.LastUpdateStatusReasonCode, aws.ToString(c.CodeSha256))
	}
	v1, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("fn"), Qualifier: aws.String("1")})
	if err != nil || v1.State != types.StateFailed {
		t.Fatalf("version 1: %+v %v; want Failed", v1, err)
	}

	// A good update: in progress, then $LATEST and its version run it.
	next := bootstrapZip(t, "next")
	if upd, err = k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("fn"), ZipFile: next, Publish: true}); err != nil {
		t.Fatal(err)
	}
	fntest.WaitUpdated(t, k.client, "fn")
	for _, q := range []string{"$LATEST", aws.ToString(upd.Version)} {
		c, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("fn"), Qualifier: aws.String(q)})
		if err != nil || c.State != types.StateActive || aws.ToString(c.CodeSha256) != codeSha(next) {
			t.Fatalf("%s after the update: %+v %v", q, c, err)
		}
	}
}

// TestZipImportResumes: a function left Pending by a control plane that
// died after storing its zip (its import's owner silent past ImportStale)
// is taken over and unpacked by another.
func TestZipImportResumes(t *testing.T) {
	ctx := context.Background()
	var cfg controlplane.Config
	k := start(t, "", func(c *controlplane.Config) { c.ImportStale = 2 * time.Second; cfg = *c })
	defer k.stop()
	zip := bootstrapZip(t, "orphan")
	code, err := cfg.Code.Stage(ctx, zip)
	if err != nil {
		t.Fatal(err)
	}
	cfgn := api.FunctionConfiguration{FunctionName: "orphan", FunctionArn: fnARN("orphan"), Version: metadata.Latest, PackageType: "Zip",
		Runtime: "provided.al2023", Handler: "bootstrap", Role: role, CodeSha256: code.Sha256, CodeSize: code.Size,
		State: "Pending", StateReasonCode: "Creating", LastUpdateStatus: "InProgress", RevisionId: api.NewUUID()}
	f := &metadata.Function{Account: account, Name: "orphan", Latest: cfgn, Import: &metadata.CodeImport{Token: api.NewUUID(),
		Zip: true, Digest: code.Sha256, Size: code.Size, Creating: true, Owner: "dead", Beat: k.clock.now().Add(-time.Minute)}}
	if err := cfg.Store.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	fntest.WaitActive(t, k.client, "orphan")
	if _, err := k.code.Dir(ctx, code.Sha256); err != nil {
		t.Fatal(err)
	}
}
