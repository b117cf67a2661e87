package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/controlplane"
)

func layerARN(acct, name string, v int64) string {
	return fmt.Sprintf("arn:aws:lambda:us-east-1:%s:layer:%s:%d", acct, name, v)
}

func (k *kiln) publishLayer(c *lambda.Client, name string, files map[string]string) *lambda.PublishLayerVersionOutput {
	k.t.Helper()
	out, err := c.PublishLayerVersion(context.Background(), &lambda.PublishLayerVersionInput{LayerName: aws.String(name),
		Content: &types.LayerVersionContentInput{ZipFile: makeZip(k.t, files)}, Description: aws.String("layer " + name),
		CompatibleRuntimes: []types.Runtime{types.RuntimePython312}, CompatibleArchitectures: []types.Architecture{types.ArchitectureX8664},
		LicenseInfo: aws.String("MIT")})
	if err != nil {
		k.t.Fatalf("PublishLayerVersion %s: %v", name, err)
	}
	return out
}

// TestLayerVersions: publishing, reading, listing and deleting layer
// versions with the Go SDK, as Lambda answers them.
func TestLayerVersions(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	zip := makeZip(t, map[string]string{"python/lib.py": "X = 1\n"})
	v1 := k.publishLayer(k.client, "lib", map[string]string{"python/lib.py": "X = 1\n"})
	if aws.ToString(v1.LayerVersionArn) != layerARN(account, "lib", 1) || aws.ToString(v1.LayerArn) != "arn:aws:lambda:us-east-1:"+account+":layer:lib" ||
		v1.Version != 1 || aws.ToString(v1.Content.CodeSha256) != codeSha(zip) || v1.Content.CodeSize != int64(len(zip)) ||
		aws.ToString(v1.LicenseInfo) != "MIT" || len(v1.CompatibleRuntimes) != 1 || aws.ToString(v1.CreatedDate) == "" {
		t.Fatalf("v1: %+v %+v", v1, v1.Content)
	}
	if got := download(t, aws.ToString(v1.Content.Location)); string(got) != string(zip) {
		t.Fatal("Content.Location does not download the layer's zip")
	}
	v2 := k.publishLayer(k.client, "lib", map[string]string{"python/lib.py": "X = 2\n"})
	k.publishLayer(k.client, "other", map[string]string{"bin/tool": "#!/bin/sh\n"})
	if v2.Version != 2 {
		t.Fatalf("v2: %d", v2.Version)
	}
	got, err := k.client.GetLayerVersion(ctx, &lambda.GetLayerVersionInput{LayerName: aws.String("lib"), VersionNumber: aws.Int64(1)})
	if err != nil || aws.ToString(got.Description) != "layer lib" || got.Version != 1 {
		t.Fatalf("GetLayerVersion: %+v %v", got, err)
	}
	byArn, err := k.client.GetLayerVersionByArn(ctx, &lambda.GetLayerVersionByArnInput{Arn: v2.LayerVersionArn})
	if err != nil || byArn.Version != 2 {
		t.Fatalf("GetLayerVersionByArn: %+v %v", byArn, err)
	}
	byName, err := k.client.GetLayerVersion(ctx, &lambda.GetLayerVersionInput{LayerName: v1.LayerArn, VersionNumber: aws.Int64(2)})
	if err != nil || byName.Version != 2 {
		t.Fatalf("GetLayerVersion by layer ARN: %+v %v", byName, err)
	}
	_, err = k.client.GetLayerVersion(ctx, &lambda.GetLayerVersionInput{LayerName: aws.String("lib"), VersionNumber: aws.Int64(9)})
	wantErr(t, err, "ResourceNotFoundException", 404, "")
	_, err = k.client.GetLayerVersionByArn(ctx, &lambda.GetLayerVersionByArnInput{Arn: aws.String("arn:aws:lambda:us-east-1:" + account + ":layer:lib")})
	wantErr(t, err, "ValidationException", 400, "")

	layers, err := k.client.ListLayers(ctx, &lambda.ListLayersInput{})
	if err != nil || len(layers.Layers) != 2 || aws.ToString(layers.Layers[0].LayerName) != "lib" || layers.Layers[0].LatestMatchingVersion.Version != 2 {
		t.Fatalf("ListLayers: %+v %v", layers, err)
	}
	none, err := k.client.ListLayers(ctx, &lambda.ListLayersInput{CompatibleRuntime: types.RuntimeNodejs20x})
	if err != nil || len(none.Layers) != 0 {
		t.Fatalf("ListLayers for nodejs20.x: %+v %v", none, err)
	}
	var versions []int64
	pages := lambda.NewListLayerVersionsPaginator(k.client, &lambda.ListLayerVersionsInput{LayerName: aws.String("lib"), MaxItems: aws.Int32(1)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.LayerVersions {
			versions = append(versions, v.Version)
		}
	}
	if fmt.Sprint(versions) != "[2 1]" {
		t.Fatalf("ListLayerVersions: %v, want newest first", versions)
	}

	// Deleting is idempotent and numbers are not reused.
	for range 2 {
		if _, err := k.client.DeleteLayerVersion(ctx, &lambda.DeleteLayerVersionInput{LayerName: aws.String("lib"), VersionNumber: aws.Int64(2)}); err != nil {
			t.Fatal(err)
		}
	}
	if v3 := k.publishLayer(k.client, "lib", map[string]string{"python/lib.py": "X = 3\n"}); v3.Version != 3 {
		t.Fatalf("after a delete: version %d, want 3", v3.Version)
	}

	// Hostile archives are refused as functions' are.
	_, err = k.client.PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("evil"),
		Content: &types.LayerVersionContentInput{ZipFile: makeZip(t, map[string]string{"../../etc/passwd": "x"})}})
	wantErr(t, err, "InvalidParameterValueException", 400, "Could not unzip uploaded file")
	_, err = k.client.PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("s3"),
		Content: &types.LayerVersionContentInput{S3Bucket: aws.String("b"), S3Key: aws.String("k")}})
	wantErr(t, err, "InvalidParameterValueException", 400, "ZipFile")
	_, err = k.client.PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("bad name!"),
		Content: &types.LayerVersionContentInput{ZipFile: zip}})
	wantErr(t, err, "ValidationException", 400, "layerName")
	_, err = k.client.PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("rt"),
		Content: &types.LayerVersionContentInput{ZipFile: zip}, CompatibleRuntimes: []types.Runtime{"cobol85"}})
	wantErr(t, err, "ValidationException", 400, "compatibleRuntimes")
	// Layers are not taggable.
	_, err = k.client.TagResource(ctx, &lambda.TagResourceInput{Resource: v1.LayerArn, Tags: map[string]string{"a": "b"}})
	wantErr(t, err, "InvalidParameterValueException", 400, "not a taggable resource")
}

// TestLayerPermissions: a layer version is another account's to read and
// use only once its policy grants it; only its owner changes it.
func TestLayerPermissions(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	v := k.publishLayer(k.client, "shared", map[string]string{"python/shared.py": "S = 1\n"})
	in := createInput("theirs", bootstrapZip(t, "theirs"))
	in.Layers = []string{aws.ToString(v.LayerVersionArn)}
	_, err := k.other.CreateFunction(ctx, in)
	wantErr(t, err, "AccessDeniedException", 403, "lambda:GetLayerVersion")
	_, err = k.other.GetLayerVersionByArn(ctx, &lambda.GetLayerVersionByArnInput{Arn: v.LayerVersionArn})
	wantErr(t, err, "AccessDeniedException", 403, "")
	_, err = k.client.GetLayerVersionPolicy(ctx, &lambda.GetLayerVersionPolicyInput{LayerName: aws.String("shared"), VersionNumber: aws.Int64(1)})
	wantErr(t, err, "ResourceNotFoundException", 404, "No policy is associated with the given resource.")

	add, err := k.client.AddLayerVersionPermission(ctx, &lambda.AddLayerVersionPermissionInput{LayerName: aws.String("shared"), VersionNumber: aws.Int64(1),
		StatementId: aws.String("xaccount"), Action: aws.String("lambda:GetLayerVersion"), Principal: aws.String(account2)})
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(aws.ToString(add.Statement)), &st); err != nil || st["Sid"] != "xaccount" || st["Resource"] != aws.ToString(v.LayerVersionArn) ||
		fmt.Sprint(st["Principal"]) != "map[AWS:arn:aws:iam::"+account2+":root]" {
		t.Fatalf("statement: %s %v", aws.ToString(add.Statement), err)
	}
	_, err = k.client.AddLayerVersionPermission(ctx, &lambda.AddLayerVersionPermissionInput{LayerName: aws.String("shared"), VersionNumber: aws.Int64(1),
		StatementId: aws.String("xaccount"), Action: aws.String("lambda:GetLayerVersion"), Principal: aws.String("*")})
	wantErr(t, err, "ResourceConflictException", 409, "already exists")
	_, err = k.client.AddLayerVersionPermission(ctx, &lambda.AddLayerVersionPermissionInput{LayerName: aws.String("shared"), VersionNumber: aws.Int64(1),
		StatementId: aws.String("bad"), Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("*")})
	wantErr(t, err, "ValidationException", 400, "action")
	_, err = k.client.AddLayerVersionPermission(ctx, &lambda.AddLayerVersionPermissionInput{LayerName: aws.String("shared"), VersionNumber: aws.Int64(1),
		StatementId: aws.String("stale"), Action: aws.String("lambda:GetLayerVersion"), Principal: aws.String("*"), RevisionId: aws.String("nope")})
	wantErr(t, err, "PreconditionFailedException", 412, "")
	_, err = k.other.AddLayerVersionPermission(ctx, &lambda.AddLayerVersionPermissionInput{LayerName: v.LayerArn, VersionNumber: aws.Int64(1),
		StatementId: aws.String("mine"), Action: aws.String("lambda:GetLayerVersion"), Principal: aws.String("*")})
	wantErr(t, err, "AccessDeniedException", 403, "")

	policy, err := k.client.GetLayerVersionPolicy(ctx, &lambda.GetLayerVersionPolicyInput{LayerName: aws.String("shared"), VersionNumber: aws.Int64(1)})
	if err != nil || !strings.Contains(aws.ToString(policy.Policy), `"Sid":"xaccount"`) || aws.ToString(policy.RevisionId) != aws.ToString(add.RevisionId) {
		t.Fatalf("policy: %+v %v", policy, err)
	}
	// Granted: the other account reads the version and builds a function on it.
	if _, err := k.other.GetLayerVersionByArn(ctx, &lambda.GetLayerVersionByArnInput{Arn: v.LayerVersionArn}); err != nil {
		t.Fatal(err)
	}
	created, err := k.other.CreateFunction(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(created.Layers) != 1 || aws.ToString(created.Layers[0].Arn) != aws.ToString(v.LayerVersionArn) || created.Layers[0].CodeSize != v.Content.CodeSize {
		t.Fatalf("function's layers: %+v", created.Layers)
	}
	// Revoked: no new use.
	if _, err := k.client.RemoveLayerVersionPermission(ctx, &lambda.RemoveLayerVersionPermissionInput{LayerName: aws.String("shared"),
		VersionNumber: aws.Int64(1), StatementId: aws.String("xaccount")}); err != nil {
		t.Fatal(err)
	}
	_, err = k.client.RemoveLayerVersionPermission(ctx, &lambda.RemoveLayerVersionPermissionInput{LayerName: aws.String("shared"),
		VersionNumber: aws.Int64(1), StatementId: aws.String("xaccount")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Statement xaccount is not found in resource policy.")
	in.FunctionName = aws.String("theirs2")
	_, err = k.other.CreateFunction(ctx, in)
	wantErr(t, err, "AccessDeniedException", 403, "")
	// The other account lists only its own layers.
	if list, err := k.other.ListLayers(ctx, &lambda.ListLayersInput{}); err != nil || len(list.Layers) != 0 {
		t.Fatalf("account 2's ListLayers: %+v %v", list, err)
	}
}

// TestFunctionLayers: a function names up to five layers, no two versions
// of one; GetFunction shows them as Lambda does; code and layers together
// stay under the unzipped limit; a deleted layer version's content stays
// for the functions using it.
func TestFunctionLayers(t *testing.T) {
	small, err := codestore.Open(codestore.Config{Dir: t.TempDir(), MaxUnzipped: 4096})
	if err != nil {
		t.Fatal(err)
	}
	k := start(t, "", func(cfg *controlplane.Config) { cfg.Code = small })
	ctx := context.Background()
	var arns []string
	for i := range 6 {
		v := k.publishLayer(k.client, fmt.Sprintf("l%d", i), map[string]string{fmt.Sprintf("f%d", i): strings.Repeat("x", 500)})
		arns = append(arns, aws.ToString(v.LayerVersionArn))
	}
	in := createInput("layered", bootstrapZip(t, "layered"))
	in.Layers = arns[:5]
	created, err := k.client.CreateFunction(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(created.Layers) != 5 || aws.ToString(created.Layers[4].Arn) != arns[4] {
		t.Fatalf("created: %+v", created.Layers)
	}
	got, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("layered")})
	if err != nil || len(got.Configuration.Layers) != 5 {
		t.Fatalf("GetFunction: %+v %v", got, err)
	}
	st, _, body := k.raw("GET", "/2015-03-31/functions/layered", "")
	if st != 200 || strings.Contains(body, "Kiln") {
		t.Fatalf("GetFunction shows Kiln's members: %s", body)
	}
	in.FunctionName, in.Layers = aws.String("six"), arns
	_, err = k.client.CreateFunction(ctx, in)
	wantErr(t, err, "InvalidParameterValueException", 400, "more than 5 layers")
	v2 := k.publishLayer(k.client, "l0", map[string]string{"f0": "y"})
	in.Layers = []string{arns[0], aws.ToString(v2.LayerVersionArn)}
	_, err = k.client.CreateFunction(ctx, in)
	wantErr(t, err, "InvalidParameterValueException", 400, "Two different versions of the same layer")
	in.Layers = []string{"arn:aws:lambda:eu-west-1:" + account + ":layer:l0:1"}
	_, err = k.client.CreateFunction(ctx, in)
	wantErr(t, err, "InvalidParameterValueException", 400, "same region")

	// 4096 bytes unzipped at most: five 500-byte layers fit with the code;
	// code of 2000 bytes more does not.
	_, err = k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("layered"),
		ZipFile: makeZip(t, map[string]string{"bootstrap": strings.Repeat("#", 2000)})})
	wantErr(t, err, "InvalidParameterValueException", 400, "Function code combined with layers exceeds the maximum allowed size of 4096 bytes.")
	// Clearing the layers (an empty list) makes room.
	if _, err := k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("layered"), Layers: []string{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("layered"),
		ZipFile: makeZip(t, map[string]string{"bootstrap": strings.Repeat("#", 2000)})}); err != nil {
		t.Fatal(err)
	}
	_, err = k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("layered"), Layers: arns[:5]})
	wantErr(t, err, "InvalidParameterValueException", 400, "The actual size is 4500 bytes")
	out, err := k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("layered"), Layers: arns[:1]})
	if err != nil || len(out.Layers) != 1 {
		t.Fatalf("one layer: %+v %v", out, err)
	}

	// A deleted version's content stays for its function; unused, it goes.
	sha := func(arn string) string {
		v, err := k.client.GetLayerVersionByArn(ctx, &lambda.GetLayerVersionByArnInput{Arn: aws.String(arn)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(v.Content.CodeSha256)
	}
	used, unused := sha(arns[0]), sha(arns[5])
	for _, n := range []int64{0, 5} {
		k.client.DeleteLayerVersion(ctx, &lambda.DeleteLayerVersionInput{LayerName: aws.String(fmt.Sprintf("l%d", n)), VersionNumber: aws.Int64(1)})
	}
	if _, err := k.svc.CollectCode(ctx, -time.Hour); err != nil {
		t.Fatal(err)
	}
	if !small.Has(used) || small.Has(unused) {
		t.Fatalf("after collection: used layer kept %v, unused layer kept %v", small.Has(used), small.Has(unused))
	}
	// Account usage counts layer archives too.
	settings, err := k.client.GetAccountSettings(ctx, &lambda.GetAccountSettingsInput{})
	if err != nil || settings.AccountUsage.TotalCodeSize <= out.CodeSize {
		t.Fatalf("account usage: %+v %v", settings.AccountUsage, err)
	}
}
