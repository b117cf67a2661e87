package controlplane_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/nats-io/nats.go/jetstream"
)

// The function URL operations, through aws-sdk-go-v2: shapes, status codes
// and errors as the API model gives them, the id index kept in step.
func TestFunctionURLConfigs(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	k.create("web", bootstrapZip(t, "web"))
	c := k.client

	// Create on $LATEST: 201, a URL of Lambda's shape on this host.
	out, err := c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"),
		AuthType: types.FunctionUrlAuthTypeNone, Cors: &types.Cors{AllowOrigins: []string{"https://a.example"}, MaxAge: aws.Int32(60)}})
	if err != nil {
		t.Fatal(err)
	}
	if status(out.ResultMetadata) != http.StatusCreated {
		t.Fatalf("create answered %d", status(out.ResultMetadata))
	}
	host := strings.TrimPrefix(k.srv.URL, "http://")
	urlRe := regexp.MustCompile(`^http://([a-z0-9]{32})\.lambda-url\.us-east-1\.on\.` + regexp.QuoteMeta(host) + `/$`)
	m := urlRe.FindStringSubmatch(aws.ToString(out.FunctionUrl))
	if m == nil || aws.ToString(out.FunctionArn) != fnARN("web") || out.InvokeMode != types.InvokeModeBuffered ||
		aws.ToInt32(out.Cors.MaxAge) != 60 || aws.ToString(out.CreationTime) == "" {
		t.Fatalf("create: %+v", out)
	}
	id := m[1]
	ref, err := k.store(t).URL(ctx, id)
	if err != nil || ref != (metadata.URLRef{Account: account, Name: "web", Qualifier: "$LATEST"}) {
		t.Fatalf("index of %s: %+v %v", id, ref, err)
	}
	_, err = c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), AuthType: types.FunctionUrlAuthTypeNone})
	wantErr(t, err, "ResourceConflictException", 409, "FunctionUrlConfig exists")

	// Validation, before anything is written.
	st, typ, _ := k.raw("POST", "/2021-10-31/functions/web/url?Qualifier=live", `{}`)
	if st != 400 || typ != "ValidationException" {
		t.Fatalf("missing AuthType: %d %s", st, typ)
	}
	_, err = c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), AuthType: "OPEN"})
	wantErr(t, err, "ValidationException", 400, "authType")
	_, err = c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), Qualifier: aws.String("1"),
		AuthType: types.FunctionUrlAuthTypeNone})
	wantErr(t, err, "ValidationException", 400, "qualifier")
	_, err = c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), Qualifier: aws.String("nope"),
		AuthType: types.FunctionUrlAuthTypeNone})
	wantErr(t, err, "ResourceNotFoundException", 404, "web:nope")
	_, err = c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"),
		AuthType: types.FunctionUrlAuthTypeNone, Cors: &types.Cors{MaxAge: aws.Int32(86401)}})
	wantErr(t, err, "ValidationException", 400, "maxAge")
	_, err = c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("ghost"), AuthType: types.FunctionUrlAuthTypeNone})
	wantErr(t, err, "ResourceNotFoundException", 404, "ghost")

	// An alias's URL, streaming and signed.
	if _, err := c.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("web"), Name: aws.String("live"), FunctionVersion: aws.String("$LATEST")}); err != nil {
		t.Fatal(err)
	}
	live, err := c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), Qualifier: aws.String("live"),
		AuthType: types.FunctionUrlAuthTypeAwsIam, InvokeMode: types.InvokeModeResponseStream})
	if err != nil || aws.ToString(live.FunctionArn) != fnARN("web")+":live" || live.InvokeMode != types.InvokeModeResponseStream {
		t.Fatalf("alias url: %+v %v", live, err)
	}

	// Get and Update (a partial update keeps what it does not name).
	got, err := c.GetFunctionUrlConfig(ctx, &lambda.GetFunctionUrlConfigInput{FunctionName: aws.String("web")})
	if err != nil || aws.ToString(got.FunctionUrl) != aws.ToString(out.FunctionUrl) || aws.ToString(got.LastModifiedTime) == "" {
		t.Fatalf("get: %+v %v", got, err)
	}
	k.clock.advance(2e9)
	up, err := c.UpdateFunctionUrlConfig(ctx, &lambda.UpdateFunctionUrlConfigInput{FunctionName: aws.String("web"), AuthType: types.FunctionUrlAuthTypeAwsIam})
	if err != nil || up.AuthType != types.FunctionUrlAuthTypeAwsIam || aws.ToInt32(up.Cors.MaxAge) != 60 || up.InvokeMode != types.InvokeModeBuffered ||
		aws.ToString(up.LastModifiedTime) == aws.ToString(got.LastModifiedTime) || aws.ToString(up.CreationTime) != aws.ToString(out.CreationTime) {
		t.Fatalf("update: %+v %v", up, err)
	}
	_, err = c.UpdateFunctionUrlConfig(ctx, &lambda.UpdateFunctionUrlConfigInput{FunctionName: aws.String("web"), InvokeMode: "FAST"})
	wantErr(t, err, "ValidationException", 400, "invokeMode")

	// List, paged.
	l1, err := c.ListFunctionUrlConfigs(ctx, &lambda.ListFunctionUrlConfigsInput{FunctionName: aws.String("web"), MaxItems: aws.Int32(1)})
	if err != nil || len(l1.FunctionUrlConfigs) != 1 || l1.NextMarker == nil {
		t.Fatalf("list page 1: %+v %v", l1, err)
	}
	l2, err := c.ListFunctionUrlConfigs(ctx, &lambda.ListFunctionUrlConfigsInput{FunctionName: aws.String("web"), Marker: l1.NextMarker})
	if err != nil || len(l2.FunctionUrlConfigs) != 1 || l2.NextMarker != nil ||
		aws.ToString(l1.FunctionUrlConfigs[0].FunctionArn) == aws.ToString(l2.FunctionUrlConfigs[0].FunctionArn) {
		t.Fatalf("list page 2: %+v %v", l2, err)
	}
	_, err = c.ListFunctionUrlConfigs(ctx, &lambda.ListFunctionUrlConfigsInput{FunctionName: aws.String("web"), MaxItems: aws.Int32(51)})
	wantErr(t, err, "ValidationException", 400, "maxItems")

	// Another account sees nothing of it.
	_, err = k.other.GetFunctionUrlConfig(ctx, &lambda.GetFunctionUrlConfigInput{FunctionName: aws.String(fnARN("web"))})
	wantErr(t, err, "AccessDeniedException", 403, "")

	// Deleting the alias deletes its URL, index entry included; deleting
	// the URL answers 204, then ResourceNotFoundException.
	liveID := urlRe.FindStringSubmatch(aws.ToString(live.FunctionUrl))[1]
	if _, err := c.DeleteAlias(ctx, &lambda.DeleteAliasInput{FunctionName: aws.String("web"), Name: aws.String("live")}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.store(t).URL(ctx, liveID); err == nil {
		t.Fatal("the deleted alias's URL is still indexed")
	}
	del, err := c.DeleteFunctionUrlConfig(ctx, &lambda.DeleteFunctionUrlConfigInput{FunctionName: aws.String("web")})
	if err != nil || status(del.ResultMetadata) != http.StatusNoContent {
		t.Fatalf("delete: %v", err)
	}
	if _, err := k.store(t).URL(ctx, id); err == nil {
		t.Fatal("the deleted URL is still indexed")
	}
	_, err = c.GetFunctionUrlConfig(ctx, &lambda.GetFunctionUrlConfigInput{FunctionName: aws.String("web")})
	wantErr(t, err, "ResourceNotFoundException", 404, "does not exist")
	_, err = c.DeleteFunctionUrlConfig(ctx, &lambda.DeleteFunctionUrlConfigInput{FunctionName: aws.String("web")})
	wantErr(t, err, "ResourceNotFoundException", 404, "does not exist")

	// Deleting the function drops its URLs' index entries.
	again, err := c.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("web"), AuthType: types.FunctionUrlAuthTypeNone})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("web")}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.store(t).URL(ctx, urlRe.FindStringSubmatch(aws.ToString(again.FunctionUrl))[1]); err == nil {
		t.Fatal("a deleted function's URL is still indexed")
	}
}

// store opens the control plane's metadata store, to read the URL index.
func (k *kiln) store(t *testing.T) *metadata.Store {
	t.Helper()
	js, err := jetstream.New(k.nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := metadata.Open(context.Background(), js, metadata.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
