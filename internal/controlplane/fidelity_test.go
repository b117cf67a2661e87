package controlplane_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/nats-io/nats.go/jetstream"
)

// TestUnknownOperationAndRequestIDs: a path of no operation answers in
// Lambda's error shape, and every answer, good or bad, has a request ID.
func TestUnknownOperationAndRequestIDs(t *testing.T) {
	k := start(t, "", nil)
	k.create("rid", bootstrapZip(t, "rid"))
	for _, tc := range []struct {
		method, path, typ string
		status            int
	}{
		{"GET", "/2099-01-01/nothing-here", "UnknownOperationException", 404},
		{"POST", "/2015-03-31/functions/rid/nope", "UnknownOperationException", 404},
		{"GET", "/2015-03-31/functions/rid", "", 200},
		{"GET", "/2015-03-31/functions/ghost", "ResourceNotFoundException", 404},
		{"GET", "/2015-03-31/functions/?FunctionVersion=ALLX", "ValidationException", 400},
	} {
		resp := k.send(tc.method, tc.path, "")
		if resp.StatusCode != tc.status || resp.Header.Get("X-Amzn-ErrorType") != tc.typ {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), tc.status, tc.typ)
		}
		if len(resp.Header.Get("X-Amzn-RequestId")) != 36 {
			t.Errorf("%s %s: X-Amzn-RequestId %q", tc.method, tc.path, resp.Header.Get("X-Amzn-RequestId"))
		}
		if tc.typ != "" && !strings.Contains(resp.Header.Get("Content-Type"), "json") {
			t.Errorf("%s %s: content type %q", tc.method, tc.path, resp.Header.Get("Content-Type"))
		}
	}
}

// TestConstraintFailuresAreValidationExceptions: breaking a constraint of
// the model is Lambda's ValidationException, not InvalidParameterValue.
func TestConstraintFailuresAreValidationExceptions(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	k.create("val", bootstrapZip(t, "val"))
	_, err := k.client.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("val"), Name: aws.String("2024"), FunctionVersion: aws.String("$LATEST")})
	wantErr(t, err, "ValidationException", 400, "Value '2024' at 'name' failed to satisfy constraint")
	_, err = k.client.ListFunctions(ctx, &lambda.ListFunctionsInput{FunctionVersion: types.FunctionVersion("ALLX")})
	wantErr(t, err, "ValidationException", 400, "Value 'ALLX' at 'functionVersion' failed to satisfy constraint")
	_, err = k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("val"), Timeout: aws.Int32(901)})
	wantErr(t, err, "ValidationException", 400, "Member must have value less than or equal to 900")
}

// TestVersionsUpdateStatusAndRevision: a published version says its last
// update succeeded (boto3's function_updated waiter reads it), and
// publishing gives $LATEST a new RevisionId, as in Lambda.
func TestVersionsUpdateStatusAndRevision(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	created := k.create("pub", bootstrapZip(t, "pub"))
	v, err := k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("pub")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("pub"), Qualifier: v.Version})
	if err != nil || got.LastUpdateStatus != types.LastUpdateStatusSuccessful || got.State != types.StateActive {
		t.Fatalf("version 1: %v %q %q", err, got.LastUpdateStatus, got.State)
	}
	latest, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("pub")})
	if err != nil || aws.ToString(latest.RevisionId) == aws.ToString(created.RevisionId) {
		t.Fatalf("$LATEST's RevisionId after PublishVersion: %v %s (was %s)", err, aws.ToString(latest.RevisionId), aws.ToString(created.RevisionId))
	}
	// Publishing again with nothing changed is still version 1.
	again, err := k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("pub")})
	if err != nil || aws.ToString(again.Version) != "1" {
		t.Fatalf("unchanged publish: %v %s", err, aws.ToString(again.Version))
	}
}

// TestUnhonouredSettingsRefused: LoggingConfig and the other settings Kiln
// does not honour are refused with a clear error; RuntimeVersionConfig is
// returned.
func TestUnhonouredSettingsRefused(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	in := createInput("logcfg", bootstrapZip(t, "logcfg"))
	in.LoggingConfig = &types.LoggingConfig{LogFormat: types.LogFormatJson}
	_, err := k.client.CreateFunction(ctx, in)
	wantErr(t, err, "InvalidParameterValueException", 400, "LoggingConfig")
	k.create("logcfg", bootstrapZip(t, "logcfg"))
	_, err = k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("logcfg"),
		LoggingConfig: &types.LoggingConfig{LogGroup: aws.String("/elsewhere")}})
	wantErr(t, err, "InvalidParameterValueException", 400, "LoggingConfig")
	// Lambda's defaults are what Kiln does, so asking for them is fine.
	if _, err = k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("logcfg"),
		LoggingConfig: &types.LoggingConfig{LogFormat: types.LogFormatText, LogGroup: aws.String("/aws/lambda/logcfg")}}); err != nil {
		t.Fatal(err)
	}
	got, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("logcfg")})
	if err != nil {
		t.Fatal(err)
	}
	if got.RuntimeVersionConfig == nil || !strings.HasPrefix(aws.ToString(got.RuntimeVersionConfig.RuntimeVersionArn), "arn:aws:lambda:us-east-1::runtime:") {
		t.Errorf("RuntimeVersionConfig: %+v", got.RuntimeVersionConfig)
	}
	if got.LoggingConfig == nil || got.LoggingConfig.LogFormat != types.LogFormatText || aws.ToString(got.LoggingConfig.LogGroup) != "/aws/lambda/logcfg" {
		t.Errorf("LoggingConfig: %+v", got.LoggingConfig)
	}
}

// TestDeletedAliasForgetsEventInvokeConfig: an alias created again under a
// deleted one's name does not inherit its asynchronous-invoke settings.
func TestDeletedAliasForgetsEventInvokeConfig(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	k.create("eic", bootstrapZip(t, "eic"))
	alias := func() {
		if _, err := k.client.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("eic"), Name: aws.String("live"), FunctionVersion: aws.String("$LATEST")}); err != nil {
			t.Fatal(err)
		}
	}
	alias()
	if _, err := k.client.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("eic"),
		Qualifier: aws.String("live"), MaximumRetryAttempts: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.DeleteAlias(ctx, &lambda.DeleteAliasInput{FunctionName: aws.String("eic"), Name: aws.String("live")}); err != nil {
		t.Fatal(err)
	}
	alias()
	_, err := k.client.GetFunctionEventInvokeConfig(ctx, &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String("eic"), Qualifier: aws.String("live")})
	wantErr(t, err, "ResourceNotFoundException", 404, "")
	f := k.stored("eic")
	if _, ok := f.EventInvokeConfigs["live"]; ok {
		t.Fatalf("the deleted alias's config is still stored: %+v", f.EventInvokeConfigs)
	}
}

// TestProvisionedConcurrencyFidelity: reserved concurrency cannot go below
// what is provisioned; lookups on $LATEST and unknown aliases answer as
// Lambda does.
func TestProvisionedConcurrencyFidelity(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	in := createInput("pc", bootstrapZip(t, "pc"))
	in.Publish = true
	k.client.CreateFunction(ctx, in)
	if _, err := k.client.PutProvisionedConcurrencyConfig(ctx, &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"),
		Qualifier: aws.String("1"), ProvisionedConcurrentExecutions: aws.Int32(5)}); err != nil {
		t.Fatal(err)
	}
	_, err := k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("pc"), ReservedConcurrentExecutions: aws.Int32(4)})
	wantErr(t, err, "InvalidParameterValueException", 400, "provisioned concurrency")
	if _, err := k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("pc"), ReservedConcurrentExecutions: aws.Int32(5)}); err != nil {
		t.Fatal(err)
	}
	_, err = k.client.GetProvisionedConcurrencyConfig(ctx, &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"), Qualifier: aws.String("$LATEST")})
	wantErr(t, err, "InvalidParameterValueException", 400, "")
	_, err = k.client.GetProvisionedConcurrencyConfig(ctx, &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"), Qualifier: aws.String("nosuch")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found: "+fnARN("pc")+":nosuch")
	_, err = k.client.DeleteProvisionedConcurrencyConfig(ctx, &lambda.DeleteProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"), Qualifier: aws.String("nosuch")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found")
	// A version without a config is still ProvisionedConcurrencyConfigNotFound.
	k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("pc"), Timeout: aws.Int32(9)})
	k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("pc")})
	_, err = k.client.GetProvisionedConcurrencyConfig(ctx, &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: aws.String("pc"), Qualifier: aws.String("2")})
	wantErr(t, err, "ProvisionedConcurrencyConfigNotFoundException", 404, "")
}

// TestTags: TagResource, UntagResource and ListTags on a function, Tags on
// CreateFunction and in GetFunction.
func TestTags(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	in := createInput("tagged", bootstrapZip(t, "tagged"))
	in.Tags = map[string]string{"team": "kiln"}
	if _, err := k.client.CreateFunction(ctx, in); err != nil {
		t.Fatal(err)
	}
	arn := aws.String(fnARN("tagged"))
	if _, err := k.client.TagResource(ctx, &lambda.TagResourceInput{Resource: arn, Tags: map[string]string{"env": "test", "team": "core"}}); err != nil {
		t.Fatal(err)
	}
	list, err := k.client.ListTags(ctx, &lambda.ListTagsInput{Resource: arn})
	if err != nil || len(list.Tags) != 2 || list.Tags["team"] != "core" || list.Tags["env"] != "test" {
		t.Fatalf("ListTags: %v %v", list, err)
	}
	if _, err := k.client.UntagResource(ctx, &lambda.UntagResourceInput{Resource: arn, TagKeys: []string{"team", "absent"}}); err != nil {
		t.Fatal(err)
	}
	got, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("tagged")})
	if err != nil || len(got.Tags) != 1 || got.Tags["env"] != "test" {
		t.Fatalf("GetFunction's tags: %v %v", got, err)
	}
	_, err = k.client.TagResource(ctx, &lambda.TagResourceInput{Resource: arn, Tags: map[string]string{"aws:x": "y"}})
	wantErr(t, err, "InvalidParameterValueException", 400, "reserved")
	_, err = k.client.ListTags(ctx, &lambda.ListTagsInput{Resource: aws.String(fnARN("ghost"))})
	wantErr(t, err, "ResourceNotFoundException", 404, "")
	_, err = k.client.ListTags(ctx, &lambda.ListTagsInput{Resource: aws.String(fnARN("tagged") + ":1")})
	wantErr(t, err, "InvalidParameterValueException", 400, "")
	_, err = k.client.ListTags(ctx, &lambda.ListTagsInput{Resource: aws.String("arn:aws:lambda:us-east-1:" + account + ":layer:lib:1")})
	wantErr(t, err, "InvalidParameterValueException", 400, "")
	// Another account's function is not its to read or tag.
	_, err = k.other.ListTags(ctx, &lambda.ListTagsInput{Resource: arn})
	wantErr(t, err, "AccessDeniedException", 403, "")
	_, err = k.other.TagResource(ctx, &lambda.TagResourceInput{Resource: arn, Tags: map[string]string{"a": "b"}})
	wantErr(t, err, "AccessDeniedException", 403, "")
	many := map[string]string{}
	for i := range 50 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	_, err = k.client.TagResource(ctx, &lambda.TagResourceInput{Resource: arn, Tags: many})
	wantErr(t, err, "InvalidParameterValueException", 400, "tag limit")
}

// TestRecursionAndRuntimeManagementConfig: the recursion setting is kept
// (Terminate by default); the runtime follows Kiln's install, so only Auto
// is accepted.
func TestRecursionAndRuntimeManagementConfig(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	k.create("rec", bootstrapZip(t, "rec"))
	got, err := k.client.GetFunctionRecursionConfig(ctx, &lambda.GetFunctionRecursionConfigInput{FunctionName: aws.String("rec")})
	if err != nil || got.RecursiveLoop != types.RecursiveLoopTerminate {
		t.Fatalf("default: %v %v", got, err)
	}
	put, err := k.client.PutFunctionRecursionConfig(ctx, &lambda.PutFunctionRecursionConfigInput{FunctionName: aws.String("rec"), RecursiveLoop: types.RecursiveLoopAllow})
	if err != nil || put.RecursiveLoop != types.RecursiveLoopAllow {
		t.Fatalf("put: %v %v", put, err)
	}
	if got, err = k.client.GetFunctionRecursionConfig(ctx, &lambda.GetFunctionRecursionConfigInput{FunctionName: aws.String("rec")}); err != nil || got.RecursiveLoop != types.RecursiveLoopAllow {
		t.Fatalf("after put: %v %v", got, err)
	}
	if f := k.stored("rec"); f.RecursiveLoop != "Allow" {
		t.Fatalf("stored: %q", f.RecursiveLoop)
	}
	_, err = k.client.PutFunctionRecursionConfig(ctx, &lambda.PutFunctionRecursionConfigInput{FunctionName: aws.String("rec"), RecursiveLoop: "Sometimes"})
	wantErr(t, err, "ValidationException", 400, "recursiveLoop")
	_, err = k.client.GetFunctionRecursionConfig(ctx, &lambda.GetFunctionRecursionConfigInput{FunctionName: aws.String("ghost")})
	wantErr(t, err, "ResourceNotFoundException", 404, "")

	rm, err := k.client.GetRuntimeManagementConfig(ctx, &lambda.GetRuntimeManagementConfigInput{FunctionName: aws.String("rec")})
	if err != nil || rm.UpdateRuntimeOn != types.UpdateRuntimeOnAuto || aws.ToString(rm.FunctionArn) != fnARN("rec")+":$LATEST" {
		t.Fatalf("runtime management: %+v %v", rm, err)
	}
	if _, err := k.client.PutRuntimeManagementConfig(ctx, &lambda.PutRuntimeManagementConfigInput{FunctionName: aws.String("rec"), UpdateRuntimeOn: types.UpdateRuntimeOnAuto}); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []types.UpdateRuntimeOn{types.UpdateRuntimeOnFunctionUpdate, types.UpdateRuntimeOnManual} {
		_, err = k.client.PutRuntimeManagementConfig(ctx, &lambda.PutRuntimeManagementConfigInput{FunctionName: aws.String("rec"), UpdateRuntimeOn: mode,
			RuntimeVersionArn: aws.String("arn:aws:lambda:us-east-1::runtime:abc")})
		wantErr(t, err, "InvalidParameterValueException", 400, "only Auto")
	}
}

// stored reads a function's record from the metadata store.
func (k *kiln) stored(name string) *metadata.Function {
	k.t.Helper()
	js, err := jetstream.New(k.nc)
	if err != nil {
		k.t.Fatal(err)
	}
	store, err := metadata.Open(context.Background(), js, metadata.Config{})
	if err != nil {
		k.t.Fatal(err)
	}
	f, err := store.Get(context.Background(), account, name)
	if err != nil {
		k.t.Fatal(err)
	}
	return f
}

// TestAccountUsageCountsPerAccount: TotalCodeSize is each function's
// packages in the caller's account, however the store deduplicates them.
func TestAccountUsageCountsPerAccount(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	zip := bootstrapZip(t, "shared")
	k.create("one", zip)
	k.create("two", zip)
	if _, err := k.other.CreateFunction(ctx, createInput("theirs", zip)); err != nil {
		t.Fatal(err)
	}
	k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("one")})
	mine, err := k.client.GetAccountSettings(ctx, &lambda.GetAccountSettingsInput{})
	if err != nil || mine.AccountUsage.TotalCodeSize != 2*int64(len(zip)) {
		t.Fatalf("account 1: %v %+v, want %d", err, mine.AccountUsage, 2*len(zip))
	}
	theirs, err := k.other.GetAccountSettings(ctx, &lambda.GetAccountSettingsInput{})
	if err != nil || theirs.AccountUsage.TotalCodeSize != int64(len(zip)) {
		t.Fatalf("account 2: %v %+v, want %d", err, theirs.AccountUsage, len(zip))
	}
}

// TestOlderRecordsReadAsLambdaShows: a version published before Kiln
// recorded LastUpdateStatus, LoggingConfig and RuntimeVersionConfig (data
// kept across an upgrade) is read with them.
func TestOlderRecordsReadAsLambdaShows(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	in := createInput("old", bootstrapZip(t, "old"))
	in.Publish = true
	if _, err := k.client.CreateFunction(ctx, in); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(k.nc)
	store, err := metadata.Open(ctx, js, metadata.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Modify(ctx, account, "old", func(f *metadata.Function) error {
		for _, cfg := range []*api.FunctionConfiguration{&f.Latest, f.Versions["1"]} {
			cfg.LastUpdateStatus, cfg.LoggingConfig, cfg.RuntimeVersionConfig = "", nil, nil
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"1", "$LATEST"} {
		got, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("old"), Qualifier: aws.String(q)})
		if err != nil || got.LastUpdateStatus != types.LastUpdateStatusSuccessful || got.LoggingConfig == nil || got.RuntimeVersionConfig == nil {
			t.Errorf("%s: %v %+v", q, err, got)
		}
	}
}
