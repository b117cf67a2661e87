package controlplane_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// AddPermission, GetPolicy and RemovePermission with aws-sdk-go-v2: the
// statement and document as Lambda writes them, a policy per qualifier,
// RevisionId checks, Lambda's errors; another account can neither read
// nor change the policy.
func TestResourcePolicy(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	k.create("pol", bootstrapZip(t, "pol"))
	fn := aws.String("pol")

	_, err := k.client.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: fn})
	wantErr(t, err, "ResourceNotFoundException", 404, "The resource you requested does not exist.")

	out, err := k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: fn, StatementId: aws.String("other"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String(account2)})
	if err != nil {
		t.Fatal(err)
	}
	if st := status(out.ResultMetadata); st != http.StatusCreated {
		t.Errorf("AddPermission status %d; want 201", st)
	}
	var stmt map[string]any
	if err := json.Unmarshal([]byte(aws.ToString(out.Statement)), &stmt); err != nil {
		t.Fatalf("Statement %q: %v", aws.ToString(out.Statement), err)
	}
	want := map[string]any{"Sid": "other", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": fnARN("pol"),
		"Principal": map[string]any{"AWS": "arn:aws:iam::" + account2 + ":root"}}
	if b1, b2 := jsonOf(stmt), jsonOf(want); b1 != b2 {
		t.Errorf("Statement %s; want %s", b1, b2)
	}

	_, err = k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: fn, StatementId: aws.String("other"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("*")})
	wantErr(t, err, "ResourceConflictException", 409, "The statement id (other) provided already exists")
	_, err = k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: fn, StatementId: aws.String("s3"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("s3.amazonaws.com"),
		SourceArn: aws.String("arn:aws:s3:::bucket"), SourceAccount: aws.String(account), RevisionId: aws.String("stale")})
	wantErr(t, err, "PreconditionFailedException", 412, "Revision Id")
	_, err = k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: fn, StatementId: aws.String("bad"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("someone")})
	wantErr(t, err, "InvalidParameterValueException", 400, "The provided principal was invalid")
	_, err = k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String("missing"), StatementId: aws.String("x"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("*")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found")
	_, err = k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: fn, StatementId: aws.String("x"), Qualifier: aws.String("7"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("*")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found: "+fnARN("pol")+":7")

	cur, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: fn})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: fn, StatementId: aws.String("s3"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("s3.amazonaws.com"),
		SourceArn: aws.String("arn:aws:s3:::bucket"), SourceAccount: aws.String(account), RevisionId: cur.Configuration.RevisionId}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: fn, StatementId: aws.String("url"),
		Action: aws.String("lambda:InvokeFunctionUrl"), Principal: aws.String("*"), FunctionUrlAuthType: "NONE"}); err != nil {
		t.Fatal(err)
	}
	got, err := k.client.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: aws.String(fnARN("pol"))})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(got.RevisionId) != aws.ToString(cur.Configuration.RevisionId) {
		t.Errorf("GetPolicy RevisionId %s; want the function's %s", aws.ToString(got.RevisionId), aws.ToString(cur.Configuration.RevisionId))
	}
	var doc struct {
		Version, Id string
		Statement   []map[string]any
	}
	if err := json.Unmarshal([]byte(aws.ToString(got.Policy)), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != "2012-10-17" || doc.Id != "default" || len(doc.Statement) != 3 {
		t.Fatalf("policy %s", aws.ToString(got.Policy))
	}
	wantS3 := `{"Action":"lambda:InvokeFunction","Condition":{"ArnLike":{"AWS:SourceArn":"arn:aws:s3:::bucket"},"StringEquals":{"AWS:SourceAccount":"123456789012"}},"Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Resource":"` + fnARN("pol") + `","Sid":"s3"}`
	wantURL := `{"Action":"lambda:InvokeFunctionUrl","Condition":{"StringEquals":{"lambda:FunctionUrlAuthType":"NONE"}},"Effect":"Allow","Principal":"*","Resource":"` + fnARN("pol") + `","Sid":"url"}`
	if s := jsonOf(doc.Statement[1]); s != wantS3 {
		t.Errorf("statement %s\nwant %s", s, wantS3)
	}
	if s := jsonOf(doc.Statement[2]); s != wantURL {
		t.Errorf("statement %s\nwant %s", s, wantURL)
	}

	// A version's policy is its own.
	v, err := k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: fn})
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.client.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: fn, Qualifier: v.Version})
	wantErr(t, err, "ResourceNotFoundException", 404, "The resource you requested does not exist.")
	if _, err := k.client.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String("pol:" + aws.ToString(v.Version)),
		StatementId: aws.String("v"), Action: aws.String("lambda:InvokeFunction"), Principal: aws.String("*")}); err != nil {
		t.Fatal(err)
	}
	vp, err := k.client.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: fn, Qualifier: v.Version})
	if err != nil || !json.Valid([]byte(aws.ToString(vp.Policy))) {
		t.Fatalf("version policy: %v", err)
	}

	// Another account reads and changes nothing.
	_, err = k.other.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: aws.String(fnARN("pol"))})
	wantErr(t, err, "AccessDeniedException", 403, "is not authorized to perform: lambda:GetPolicy")
	_, err = k.other.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String(fnARN("pol")), StatementId: aws.String("mine"),
		Action: aws.String("lambda:InvokeFunction"), Principal: aws.String(account2)})
	wantErr(t, err, "AccessDeniedException", 403, "is not authorized to perform: lambda:AddPermission")
	_, err = k.other.RemovePermission(ctx, &lambda.RemovePermissionInput{FunctionName: aws.String(fnARN("pol")), StatementId: aws.String("other")})
	wantErr(t, err, "AccessDeniedException", 403, "is not authorized to perform: lambda:RemovePermission")

	_, err = k.client.RemovePermission(ctx, &lambda.RemovePermissionInput{FunctionName: fn, StatementId: aws.String("nope")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Statement nope is not found")
	_, err = k.client.RemovePermission(ctx, &lambda.RemovePermissionInput{FunctionName: fn, StatementId: aws.String("other"), RevisionId: aws.String("stale")})
	wantErr(t, err, "PreconditionFailedException", 412, "Revision Id")
	for _, sid := range []string{"other", "s3", "url"} {
		if _, err := k.client.RemovePermission(ctx, &lambda.RemovePermissionInput{FunctionName: fn, StatementId: aws.String(sid)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = k.client.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: fn})
	wantErr(t, err, "ResourceNotFoundException", 404, "The resource you requested does not exist.")
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
