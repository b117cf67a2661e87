package controlplane_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/controlplane"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	account  = "123456789012"
	account2 = "210987654321"
	region   = "us-east-1"
	role     = "arn:aws:iam::123456789012:role/kiln-test"
	keyID    = "AKIDKILNTEST"
	secret   = "kiln-test-secret"
	keyID2   = "AKIDKILNOTHER"
	secret2  = "kiln-other-secret"
)

var urlSecret = []byte("fixed url secret for tests")

// kiln is a control plane on real components: embedded NATS JetStream,
// the metadata store, the code store, SigV4 authentication, an HTTP server.
type kiln struct {
	t      *testing.T
	dir    string
	nats   *natsd.Server
	nc     *nats.Conn
	code   *codestore.Store
	svc    *controlplane.Service
	srv    *httptest.Server
	client *lambda.Client // account
	other  *lambda.Client // account2
	clock  *clock
}

// clock is the control plane's clock; tests move it forward.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }
func newClient(endpoint, id, key string) *lambda.Client {
	return lambda.New(lambda.Options{
		Region:           region,
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(id, key, ""),
		RetryMaxAttempts: 1,
	})
}

// start runs a control plane with its data in dir (a new temporary
// directory when empty); edit adjusts the configuration.
func start(t *testing.T, dir string, edit func(*controlplane.Config)) *kiln {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	k := &kiln{t: t, dir: dir, clock: &clock{}}
	var err error
	if k.nats, err = natsd.Start(natsd.Config{Dir: dir + "/nats"}); err != nil {
		t.Fatal(err)
	}
	if k.nc, err = k.nats.Connect(); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(k.nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := metadata.Open(context.Background(), js, metadata.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if k.code, err = codestore.Open(codestore.Config{Dir: dir + "/code"}); err != nil {
		t.Fatal(err)
	}
	cfg := controlplane.Config{Store: store, Code: k.code, Region: region, URLSecret: urlSecret, Now: k.clock.now}
	if edit != nil {
		edit(&cfg)
	}
	k.svc = controlplane.New(cfg)
	k.srv = serve(k.svc)
	k.client = newClient(k.srv.URL, keyID, secret)
	k.other = newClient(k.srv.URL, keyID2, secret2)
	t.Cleanup(k.stop)
	return k
}

// serve runs a control plane's API behind SigV4 on an HTTP test server.
func serve(svc *controlplane.Service) *httptest.Server {
	mux := http.NewServeMux()
	svc.Register(mux)
	keyring := auth.NewKeyring(
		auth.Credential{AccessKeyID: keyID, SecretAccessKey: secret, Account: account},
		auth.Credential{AccessKeyID: keyID2, SecretAccessKey: secret2, Account: account2})
	limit := func(*http.Request) (int64, *api.Error) {
		return 70 << 20, api.Errorf(api.RequestEntityTooLarge, "Request must be smaller than %d bytes for the operation", 70<<20)
	}
	root := http.NewServeMux()
	root.Handle("/kiln/code/", svc.CodeHandler())
	root.Handle("/", auth.Middleware(keyring, limit, mux))
	return httptest.NewServer(root)
}

// twin runs a second control plane on the same JetStream and code store,
// with its own connection (a cluster's other control plane), configured
// by edit, and returns a client of it.
func (k *kiln) twin(edit func(*controlplane.Config)) *lambda.Client {
	k.t.Helper()
	nc, err := k.nats.Connect()
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	store, err := metadata.Open(context.Background(), js, metadata.Config{})
	if err != nil {
		k.t.Fatal(err)
	}
	cfg := controlplane.Config{Store: store, Code: k.code, Region: region, URLSecret: urlSecret, Now: k.clock.now}
	edit(&cfg)
	srv := serve(controlplane.New(cfg))
	k.t.Cleanup(srv.Close)
	return newClient(srv.URL, keyID, secret)
}

func (k *kiln) stop() {
	if k.srv == nil {
		return
	}
	k.srv.Close()
	k.svc.Close()
	k.nc.Close()
	k.nats.Shutdown()
	k.srv = nil
}

// makeZip packs name → content; "bootstrap" is executable.
func makeZip(t testing.TB, files map[string]string) []byte {
	t.Helper()
	b := make(map[string][]byte, len(files))
	for n, c := range files {
		b[n] = []byte(c)
	}
	return fntest.Zip(t, b)
}

func codeSha(zip []byte) string {
	sum := sha256.Sum256(zip)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func bootstrapZip(t testing.TB, content string) []byte {
	return makeZip(t, map[string]string{"bootstrap": "#!/bin/sh\n# " + content + "\n"})
}

func createInput(name string, zip []byte) *lambda.CreateFunctionInput {
	return &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Role:         aws.String(role),
		Runtime:      types.Runtime("provided.al2023"),
		Handler:      aws.String("bootstrap"),
		Code:         &types.FunctionCode{ZipFile: zip},
	}
}

func (k *kiln) create(name string, zip []byte) *lambda.CreateFunctionOutput {
	k.t.Helper()
	out, err := k.client.CreateFunction(context.Background(), createInput(name, zip))
	if err != nil {
		k.t.Fatalf("CreateFunction %s: %v", name, err)
	}
	fntest.WaitActive(k.t, k.client, name)
	return out
}

func fnARN(name string) string { return "arn:aws:lambda:us-east-1:" + account + ":function:" + name }

// status is the HTTP status of a successful SDK call.
func status(md middleware.Metadata) int {
	if r, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok {
		return r.StatusCode
	}
	return 0
}

// wantErr checks an SDK error's type (from X-Amzn-ErrorType), HTTP status and message.
func wantErr(t *testing.T, err error, code string, httpStatus int, message string) {
	t.Helper()
	if msg := kilntest.APIError(t, err, code, httpStatus); !strings.Contains(msg, message) {
		t.Fatalf("message %q; want it to contain %q", msg, message)
	}
}

// raw sends a signed request the SDK would refuse to build (missing required
// members, wrong types) and returns the status, error type and body.
func (k *kiln) raw(method, path, body string) (int, string, string) {
	k.t.Helper()
	resp := k.send(method, path, body)
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), string(b)
}

// send signs a request as the SDKs do and returns the answer, its body read
// and closed.
func (k *kiln) send(method, path, body string) *http.Response {
	k.t.Helper()
	req, _ := http.NewRequest(method, k.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256([]byte(body))
	err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret},
		req, hex.EncodeToString(sum[:]), "lambda", region, time.Now())
	if err != nil {
		k.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func TestFunctionLifecycle(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	zip1 := bootstrapZip(t, "one")
	in := createInput("hello", zip1)
	in.Description = aws.String("first")
	in.Tags = map[string]string{"team": "kiln"}
	created, err := k.client.CreateFunction(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if s := status(created.ResultMetadata); s != http.StatusCreated {
		t.Fatalf("CreateFunction status %d", s)
	}
	if aws.ToString(created.FunctionArn) != fnARN("hello") || aws.ToString(created.Version) != "$LATEST" ||
		aws.ToString(created.CodeSha256) != codeSha(zip1) || created.CodeSize != int64(len(zip1)) ||
		aws.ToInt32(created.Timeout) != 3 || aws.ToInt32(created.MemorySize) != 128 ||
		created.State != types.StatePending || created.StateReasonCode != types.StateReasonCodeCreating ||
		created.LastUpdateStatus != types.LastUpdateStatusInProgress ||
		created.PackageType != types.PackageTypeZip || created.TracingConfig.Mode != types.TracingModePassThrough ||
		aws.ToInt32(created.EphemeralStorage.Size) != 512 || len(created.Architectures) != 1 ||
		created.Architectures[0] != types.ArchitectureX8664 || aws.ToString(created.RevisionId) == "" ||
		aws.ToString(created.Description) != "first" || aws.ToString(created.Role) != role {
		t.Fatalf("created: %+v", created)
	}
	// Pending while its zip is unpacked, then Active.
	fntest.WaitActive(t, k.client, "hello")
	active, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("hello")})
	if err != nil || active.Configuration.State != types.StateActive || active.Configuration.LastUpdateStatus != types.LastUpdateStatusSuccessful ||
		aws.ToString(active.Configuration.RevisionId) == aws.ToString(created.RevisionId) { // a new revision, as on Lambda
		t.Fatalf("after the waiter: %+v %v", active, err)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000-0700", aws.ToString(created.LastModified)); err != nil ||
		!strings.HasSuffix(aws.ToString(created.LastModified), "+0000") {
		t.Fatalf("LastModified %q: %v", aws.ToString(created.LastModified), err)
	}

	// GetFunction by name, partial ARN and full ARN.
	for _, ref := range []string{"hello", account + ":function:hello", fnARN("hello")} {
		got, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(ref)})
		if err != nil {
			t.Fatalf("GetFunction %s: %v", ref, err)
		}
		if aws.ToString(got.Configuration.RevisionId) != aws.ToString(active.Configuration.RevisionId) ||
			aws.ToString(got.Code.RepositoryType) != "S3" || got.Tags["team"] != "kiln" || got.Concurrency != nil {
			t.Fatalf("GetFunction %s: %+v", ref, got)
		}
		u, _ := url.Parse(aws.ToString(got.Code.Location))
		if "http://"+u.Host != k.srv.URL || !strings.HasPrefix(u.Path, "/kiln/code/") {
			t.Fatalf("Code.Location %s not on %s", u, k.srv.URL)
		}
	}

	// UpdateFunctionConfiguration: every field.
	updated, err := k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{
		FunctionName:     aws.String("hello"),
		Description:      aws.String("second"),
		Timeout:          aws.Int32(900),
		MemorySize:       aws.Int32(10240),
		Handler:          aws.String("main.handler"),
		Runtime:          types.Runtime("provided.al2"),
		Role:             aws.String("arn:aws:iam::999999999999:role/path/other"),
		Environment:      &types.Environment{Variables: map[string]string{"GREETING": "hi", "LOG_LEVEL": "debug"}},
		EphemeralStorage: &types.EphemeralStorage{Size: aws.Int32(10240)},
		TracingConfig:    &types.TracingConfig{Mode: types.TracingModeActive},
		DeadLetterConfig: &types.DeadLetterConfig{TargetArn: aws.String("arn:aws:sqs:us-east-1:123456789012:dlq")},
		RevisionId:       active.Configuration.RevisionId,
	})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(updated.Description) != "second" || aws.ToInt32(updated.Timeout) != 900 ||
		aws.ToInt32(updated.MemorySize) != 10240 || aws.ToString(updated.Handler) != "main.handler" ||
		updated.Runtime != "provided.al2" || aws.ToString(updated.Role) != "arn:aws:iam::999999999999:role/path/other" ||
		updated.Environment.Variables["GREETING"] != "hi" || aws.ToInt32(updated.EphemeralStorage.Size) != 10240 ||
		updated.TracingConfig.Mode != types.TracingModeActive ||
		aws.ToString(updated.DeadLetterConfig.TargetArn) != "arn:aws:sqs:us-east-1:123456789012:dlq" ||
		aws.ToString(updated.RevisionId) == aws.ToString(active.Configuration.RevisionId) ||
		aws.ToString(updated.CodeSha256) != codeSha(zip1) {
		t.Fatalf("updated: %+v", updated)
	}
	// A partial update keeps the rest; clearing the environment.
	updated2, err := k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{
		FunctionName: aws.String("hello"), Environment: &types.Environment{Variables: map[string]string{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if updated2.Environment != nil || aws.ToInt32(updated2.Timeout) != 900 || aws.ToString(updated2.Description) != "second" {
		t.Fatalf("partial update: %+v", updated2)
	}
	// A stale RevisionId is refused.
	_, err = k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{
		FunctionName: aws.String("hello"), Timeout: aws.Int32(5), RevisionId: created.RevisionId})
	var pre *types.PreconditionFailedException
	if !errors.As(err, &pre) {
		t.Fatalf("stale RevisionId: %v", err)
	}
	wantErr(t, err, "PreconditionFailedException", 412, "The Revision Id provided does not match the latest Revision Id")

	// UpdateFunctionCode.
	zip2 := bootstrapZip(t, "two")
	_, err = k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("hello"), ZipFile: zip2, RevisionId: created.RevisionId})
	wantErr(t, err, "PreconditionFailedException", 412, "Revision Id")
	dry, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("hello"), ZipFile: zip2, DryRun: true})
	if err != nil || aws.ToString(dry.CodeSha256) != codeSha(zip2) {
		t.Fatalf("DryRun: %+v %v", dry, err)
	}
	if cfg, _ := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("hello")}); aws.ToString(cfg.CodeSha256) != codeSha(zip1) {
		t.Fatal("DryRun changed the code")
	}
	newCode, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{
		FunctionName: aws.String("hello"), ZipFile: zip2, RevisionId: updated2.RevisionId,
		Architectures: []types.Architecture{types.ArchitectureArm64}})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(newCode.CodeSha256) != codeSha(zip2) || newCode.CodeSize != int64(len(zip2)) ||
		newCode.Architectures[0] != types.ArchitectureArm64 || aws.ToString(newCode.RevisionId) == aws.ToString(updated2.RevisionId) ||
		newCode.LastUpdateStatus != types.LastUpdateStatusInProgress {
		t.Fatalf("UpdateFunctionCode: %+v", newCode)
	}
	fntest.WaitUpdated(t, k.client, "hello")
	got, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("hello")})
	if err != nil {
		t.Fatal(err)
	}
	if b := download(t, aws.ToString(got.Code.Location)); !bytes.Equal(b, zip2) {
		t.Fatal("downloaded code differs from the uploaded zip")
	}

	// DeleteFunction.
	del, err := k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("hello")})
	if err != nil {
		t.Fatal(err)
	}
	if s := status(del.ResultMetadata); s != http.StatusNoContent {
		t.Fatalf("DeleteFunction status %d", s)
	}
	_, err = k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("hello")})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("after delete: %v", err)
	}
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found: "+fnARN("hello"))
	_, err = k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("hello")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found: "+fnARN("hello"))
	// The name is free again.
	if again := k.create("hello", zip1); aws.ToString(again.RevisionId) == aws.ToString(created.RevisionId) {
		t.Fatal("re-created function kept the old RevisionId")
	}
	for _, call := range []func() error{
		func() error {
			_, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("nope")})
			return err
		},
		func() error {
			_, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("nope"), ZipFile: zip1})
			return err
		},
		func() error {
			_, err := k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("nope"), Timeout: aws.Int32(4)})
			return err
		},
		func() error {
			_, err := k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("nope")})
			return err
		},
		func() error {
			_, err := k.client.ListVersionsByFunction(ctx, &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("nope")})
			return err
		},
		func() error {
			_, err := k.client.ListAliases(ctx, &lambda.ListAliasesInput{FunctionName: aws.String("nope")})
			return err
		},
	} {
		wantErr(t, call(), "ResourceNotFoundException", 404, "Function not found: "+fnARN("nope"))
	}
}

func download(t *testing.T, location string) []byte {
	t.Helper()
	resp, err := http.Get(location)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", location, resp.StatusCode, b)
	}
	return b
}

func TestCreateFunctionValidation(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	zip := bootstrapZip(t, "v")
	k.create("taken", zip)
	bad := func(edit func(*lambda.CreateFunctionInput)) error {
		in := createInput("fresh", zip)
		edit(in)
		_, err := k.client.CreateFunction(ctx, in)
		return err
	}
	const ipve = "InvalidParameterValueException"
	cases := []struct {
		name    string
		edit    func(*lambda.CreateFunctionInput)
		code    string
		status  int
		message string
	}{
		{"duplicate", func(in *lambda.CreateFunctionInput) { in.FunctionName = aws.String("taken") },
			"ResourceConflictException", 409, "Function already exist: taken"},
		{"bad name", func(in *lambda.CreateFunctionInput) { in.FunctionName = aws.String("no spaces") }, ipve, 400, "at 'functionName'"},
		{"role", func(in *lambda.CreateFunctionInput) { in.Role = aws.String("arn:aws:iam::123:user/bob") }, "ValidationException", 400, "at 'role' failed to satisfy constraint"},
		{"unknown runtime", func(in *lambda.CreateFunctionInput) { in.Runtime = "cobol85" }, ipve, 400,
			"Value cobol85 at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [provided"},
		{"runtime not on this host", func(in *lambda.CreateFunctionInput) { in.Runtime = "java21" }, ipve, 400, "Kiln cannot run it on this host"},
		{"no runtime", func(in *lambda.CreateFunctionInput) { in.Runtime = "" }, ipve, 400, "Runtime and Handler are mandatory parameters"},
		{"no handler", func(in *lambda.CreateFunctionInput) { in.Handler = nil }, ipve, 400, "Runtime and Handler are mandatory parameters"},
		{"handler spaces", func(in *lambda.CreateFunctionInput) { in.Handler = aws.String("a b") }, "ValidationException", 400, "at 'handler'"},
		{"memory low", func(in *lambda.CreateFunctionInput) { in.MemorySize = aws.Int32(127) }, "ValidationException", 400,
			"Value '127' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal to 128"},
		{"memory high", func(in *lambda.CreateFunctionInput) { in.MemorySize = aws.Int32(10241) }, "ValidationException", 400, "less than or equal to 10240"},
		{"timeout low", func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(0) }, "ValidationException", 400, "at 'timeout'"},
		{"timeout high", func(in *lambda.CreateFunctionInput) { in.Timeout = aws.Int32(901) }, "ValidationException", 400, "less than or equal to 900"},
		{"ephemeral", func(in *lambda.CreateFunctionInput) {
			in.EphemeralStorage = &types.EphemeralStorage{Size: aws.Int32(511)}
		}, "ValidationException", 400, "at 'ephemeralStorage.size'"},
		{"description", func(in *lambda.CreateFunctionInput) { in.Description = aws.String(strings.Repeat("d", 257)) }, "ValidationException", 400, "at 'description'"},
		{"env key", func(in *lambda.CreateFunctionInput) {
			in.Environment = &types.Environment{Variables: map[string]string{"1BAD": "x"}}
		}, "ValidationException", 400, "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]"},
		{"env key of one letter", func(in *lambda.CreateFunctionInput) { // refused by Lambda too
			in.Environment = &types.Environment{Variables: map[string]string{"V": "x"}}
		}, "ValidationException", 400, "at 'environment.variables' failed to satisfy constraint"},
		{"env reserved", func(in *lambda.CreateFunctionInput) {
			in.Environment = &types.Environment{Variables: map[string]string{"AWS_REGION": "x", "AWS_ACCESS_KEY_ID": "y", "OK": "z"}}
		}, ipve, 400, "contains reserved keys that are currently not supported for modification. Reserved keys used in this request: AWS_ACCESS_KEY_ID, AWS_REGION"},
		{"env size", func(in *lambda.CreateFunctionInput) {
			in.Environment = &types.Environment{Variables: map[string]string{"BIG": strings.Repeat("x", 4090)}}
		}, ipve, 400, "exceeded the 4KB limit"},
		{"architecture", func(in *lambda.CreateFunctionInput) { in.Architectures = []types.Architecture{"sparc"} }, "ValidationException", 400, "at 'architectures'"},
		{"two architectures", func(in *lambda.CreateFunctionInput) {
			in.Architectures = []types.Architecture{types.ArchitectureX8664, types.ArchitectureArm64}
		}, "ValidationException", 400, "Member must have length less than or equal to 1"},
		{"tracing", func(in *lambda.CreateFunctionInput) { in.TracingConfig = &types.TracingConfig{Mode: "Loud"} }, "ValidationException", 400, "at 'tracingConfig.mode'"},
		{"layers", func(in *lambda.CreateFunctionInput) {
			in.Layers = []string{"arn:aws:lambda:us-east-1:123456789012:layer:l:1"}
		}, ipve, 400, "Layer version arn:aws:lambda:us-east-1:123456789012:layer:l:1 does not exist."},
		{"image with a runtime", func(in *lambda.CreateFunctionInput) { in.PackageType = types.PackageTypeImage }, ipve, 400, "Runtime is not supported"},
		{"s3", func(in *lambda.CreateFunctionInput) {
			in.Code = &types.FunctionCode{S3Bucket: aws.String("bucket"), S3Key: aws.String("key")}
		}, ipve, 400, "ZipFile"},
		{"no code", func(in *lambda.CreateFunctionInput) { in.Code = &types.FunctionCode{} }, ipve, 400, "provide a source for function code"},
		{"not a zip", func(in *lambda.CreateFunctionInput) { in.Code.ZipFile = []byte("plain text") }, ipve, 400,
			"Could not unzip uploaded file. Please check your file, then try to upload again."},
		{"traversal", func(in *lambda.CreateFunctionInput) {
			in.Code.ZipFile = makeZip(t, map[string]string{"../../etc/cron.d/evil": "x"})
		}, ipve, 400, "Could not unzip uploaded file."},
		{"other region", func(in *lambda.CreateFunctionInput) {
			in.FunctionName = aws.String("arn:aws:lambda:eu-west-1:" + account + ":function:fresh")
		}, "ResourceNotFoundException", 404, "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"},
		{"other account", func(in *lambda.CreateFunctionInput) {
			in.FunctionName = aws.String(account2 + ":function:fresh")
		}, "AccessDeniedException", 403, "is not authorized to perform: lambda:CreateFunction"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := bad(tc.edit)
			wantErr(t, err, tc.code, tc.status, tc.message)
			if tc.code == ipve {
				var typed *types.InvalidParameterValueException
				if !errors.As(err, &typed) {
					t.Fatalf("not a *types.InvalidParameterValueException: %T", err)
				}
			}
		})
	}
	if _, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("fresh")}); err == nil {
		t.Fatal("a refused CreateFunction created the function")
	}

	// What the SDK would not send: missing members, wrong types, bad JSON.
	body := func(extra string) string {
		return fmt.Sprintf(`{"FunctionName":"fresh","Runtime":"provided.al2023","Handler":"bootstrap","Code":{"ZipFile":%q}%s}`,
			base64.StdEncoding.EncodeToString(zip), extra)
	}
	for _, tc := range []struct{ name, body, typ, message string }{
		{"no role", body(""), "ValidationException", "Value null at 'role' failed to satisfy constraint: Member must not be null"},
		{"no code", `{"FunctionName":"fresh","Role":"` + role + `","Runtime":"provided.al2023","Handler":"bootstrap"}`, "ValidationException", "Value null at 'code'"},
		{"no name", `{"Role":"` + role + `"}`, "ValidationException", "Value null at 'functionName'"},
		{"wrong type", body(`,"Role":"` + role + `","Timeout":"ten"`), "SerializationException", "Timeout"},
		{"bad base64", `{"FunctionName":"fresh","Role":"` + role + `","Runtime":"provided.al2023","Handler":"bootstrap","Code":{"ZipFile":"!!!"}}`, "SerializationException", ""},
		{"malformed json", `{"FunctionName": "fresh",`, "InvalidRequestContentException", "Could not parse request body into json"},
		{"unknown members ignored", body(`,"Role":"` + role + `","Unknown":{"x":1},"KMSKeyArn":""`), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, typ, b := k.raw("POST", "/2015-03-31/functions", tc.body)
			if tc.typ == "" {
				if st != http.StatusCreated {
					t.Fatalf("status %d %s: %s", st, typ, b)
				}
				return
			}
			if st != http.StatusBadRequest || typ != tc.typ || !strings.Contains(b, tc.message) {
				t.Fatalf("got %d %s %s; want 400 %s %q", st, typ, b, tc.typ, tc.message)
			}
		})
	}
}

func TestVersionsAndAliases(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	in := createInput("ver", bootstrapZip(t, "v1"))
	in.Publish = true
	in.Description = aws.String("v1 description")
	created, err := k.client.CreateFunction(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(created.Version) != "1" {
		t.Fatalf("CreateFunction with Publish: version %q", aws.ToString(created.Version))
	}
	fntest.WaitActive(t, k.client, "ver")
	// Nothing changed: publishing again returns version 1.
	same, err := k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("ver")})
	if err != nil || aws.ToString(same.Version) != "1" || status(same.ResultMetadata) != http.StatusCreated {
		t.Fatalf("unchanged publish: %+v %v", same, err)
	}
	latest, err := k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("ver"), Timeout: aws.Int32(10)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("ver"), CodeSha256: aws.String("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")})
	wantErr(t, err, "InvalidParameterValueException", 400,
		"CodeSHA256 (AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=) is different from current CodeSHA256 in $LATEST ("+aws.ToString(latest.CodeSha256)+"). Please try again with the CodeSHA256 in $LATEST.")
	_, err = k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("ver"), RevisionId: created.RevisionId})
	wantErr(t, err, "PreconditionFailedException", 412, "Revision Id")
	v2, err := k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("ver"),
		CodeSha256: latest.CodeSha256, RevisionId: latest.RevisionId, Description: aws.String("second")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(v2.Version) != "2" || aws.ToString(v2.FunctionArn) != fnARN("ver")+":2" ||
		aws.ToInt32(v2.Timeout) != 10 || aws.ToString(v2.Description) != "second" {
		t.Fatalf("v2: %+v", v2)
	}
	// UpdateFunctionCode with Publish makes version 3.
	v3, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("ver"), ZipFile: bootstrapZip(t, "v3"), Publish: true})
	if err != nil || aws.ToString(v3.Version) != "3" || aws.ToString(v3.FunctionArn) != fnARN("ver")+":3" {
		t.Fatalf("v3: %+v %v", v3, err)
	}

	// Versions: by qualifier, and listed with paging.
	c1, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("ver"), Qualifier: aws.String("1")})
	if err != nil || aws.ToString(c1.Version) != "1" || aws.ToInt32(c1.Timeout) != 3 || aws.ToString(c1.Description) != "v1 description" {
		t.Fatalf("version 1: %+v %v", c1, err)
	}
	c2, err := k.client.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("ver:2")})
	if err != nil || aws.ToString(c2.Version) != "2" {
		t.Fatalf("ver:2: %+v %v", c2, err)
	}
	_, err = k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("ver"), Qualifier: aws.String("9")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found: "+fnARN("ver")+":9")
	var versions []string
	pages := lambda.NewListVersionsByFunctionPaginator(k.client, &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("ver"), MaxItems: aws.Int32(1)})
	for n := 0; pages.HasMorePages(); n++ {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Versions) != 1 || n > 4 {
			t.Fatalf("page %d holds %d versions", n, len(page.Versions))
		}
		versions = append(versions, aws.ToString(page.Versions[0].Version))
		if page.Versions[0].State != "" {
			t.Fatal("listed versions carry State")
		}
	}
	if fmt.Sprint(versions) != "[$LATEST 1 2 3]" {
		t.Fatalf("versions %v", versions)
	}

	// Aliases.
	live, err := k.client.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("live"),
		FunctionVersion: aws.String("1"), Description: aws.String("prod"),
		RoutingConfig: &types.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"2": 0.25}}})
	if err != nil {
		t.Fatal(err)
	}
	if status(live.ResultMetadata) != http.StatusCreated || aws.ToString(live.AliasArn) != fnARN("ver")+":live" ||
		live.RoutingConfig.AdditionalVersionWeights["2"] != 0.25 || aws.ToString(live.RevisionId) == "" {
		t.Fatalf("CreateAlias: %+v", live)
	}
	if _, err := k.client.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("beta"), FunctionVersion: aws.String("$LATEST")}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("old"), FunctionVersion: aws.String("2")}); err != nil {
		t.Fatal(err)
	}
	got, err := k.client.GetAlias(ctx, &lambda.GetAliasInput{FunctionName: aws.String("ver"), Name: aws.String("live")})
	if err != nil || aws.ToString(got.RevisionId) != aws.ToString(live.RevisionId) || aws.ToString(got.Description) != "prod" {
		t.Fatalf("GetAlias: %+v %v", got, err)
	}
	viaAlias, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("ver"), Qualifier: aws.String("live")})
	if err != nil || aws.ToString(viaAlias.Configuration.Version) != "1" || aws.ToString(viaAlias.Configuration.FunctionArn) != fnARN("ver")+":live" {
		t.Fatalf("GetFunction via alias: %+v %v", viaAlias, err)
	}

	aliasErr := func(in *lambda.CreateAliasInput) error {
		in.FunctionName = aws.String("ver")
		if in.Name == nil {
			in.Name = aws.String("x")
		}
		_, err := k.client.CreateAlias(ctx, in)
		return err
	}
	weights := func(w map[string]float64) *types.AliasRoutingConfiguration {
		return &types.AliasRoutingConfiguration{AdditionalVersionWeights: w}
	}
	for _, tc := range []struct {
		name    string
		in      *lambda.CreateAliasInput
		code    string
		status  int
		message string
	}{
		{"numeric name", &lambda.CreateAliasInput{Name: aws.String("123"), FunctionVersion: aws.String("1")}, "ValidationException", 400, "at 'name'"},
		{"duplicate", &lambda.CreateAliasInput{Name: aws.String("live"), FunctionVersion: aws.String("1")}, "ResourceConflictException", 409, "Alias already exists: " + fnARN("ver") + ":live"},
		{"missing version", &lambda.CreateAliasInput{FunctionVersion: aws.String("7")}, "ResourceNotFoundException", 404, "Function not found: " + fnARN("ver") + ":7"},
		{"bad version", &lambda.CreateAliasInput{FunctionVersion: aws.String("one")}, "ValidationException", 400, "at 'functionVersion'"},
		{"two weights", &lambda.CreateAliasInput{FunctionVersion: aws.String("1"), RoutingConfig: weights(map[string]float64{"2": 0.1, "3": 0.1})},
			"InvalidParameterValueException", 400, "Number of items in AdditionalVersionWeights cannot be greater than 1"},
		{"weight above 1", &lambda.CreateAliasInput{FunctionVersion: aws.String("1"), RoutingConfig: weights(map[string]float64{"2": 1.5})},
			"InvalidParameterValueException", 400, "Member must have value less than or equal to 1.0"},
		{"weight below 0", &lambda.CreateAliasInput{FunctionVersion: aws.String("1"), RoutingConfig: weights(map[string]float64{"2": -0.1})},
			"InvalidParameterValueException", 400, "greater than or equal to 0.0"},
		{"weighted primary", &lambda.CreateAliasInput{FunctionVersion: aws.String("1"), RoutingConfig: weights(map[string]float64{"1": 0.5})},
			"InvalidParameterValueException", 400, "Function version 1 is already included in routing configuration"},
		{"latest with weights", &lambda.CreateAliasInput{FunctionVersion: aws.String("$LATEST"), RoutingConfig: weights(map[string]float64{"2": 0.5})},
			"InvalidParameterValueException", 400, "$LATEST is not supported for an alias pointing to more than 1 version"},
		{"weighted latest", &lambda.CreateAliasInput{FunctionVersion: aws.String("1"), RoutingConfig: weights(map[string]float64{"$LATEST": 0.5})},
			"InvalidParameterValueException", 400, "Member must satisfy regular expression pattern: [0-9]+"},
		{"weighted missing", &lambda.CreateAliasInput{FunctionVersion: aws.String("1"), RoutingConfig: weights(map[string]float64{"8": 0.5})},
			"ResourceNotFoundException", 404, "Function not found: " + fnARN("ver") + ":8"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, aliasErr(tc.in), tc.code, tc.status, tc.message) })
	}
	_, err = k.client.GetAlias(ctx, &lambda.GetAliasInput{FunctionName: aws.String("ver"), Name: aws.String("nope")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Cannot find alias arn: "+fnARN("ver")+":nope")

	// UpdateAlias: RevisionId, moving the primary, clearing the routing.
	_, err = k.client.UpdateAlias(ctx, &lambda.UpdateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("live"),
		FunctionVersion: aws.String("2"), RevisionId: aws.String("stale")})
	wantErr(t, err, "PreconditionFailedException", 412, "Revision Id")
	_, err = k.client.UpdateAlias(ctx, &lambda.UpdateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("live"), FunctionVersion: aws.String("2")})
	wantErr(t, err, "InvalidParameterValueException", 400, "Function version 2 is already included in routing configuration")
	_, err = k.client.UpdateAlias(ctx, &lambda.UpdateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("nope"), FunctionVersion: aws.String("2")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Cannot find alias arn")
	moved, err := k.client.UpdateAlias(ctx, &lambda.UpdateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("live"),
		FunctionVersion: aws.String("2"), RevisionId: live.RevisionId, RoutingConfig: weights(map[string]float64{"3": 0.5})})
	if err != nil || aws.ToString(moved.FunctionVersion) != "2" || moved.RoutingConfig.AdditionalVersionWeights["3"] != 0.5 ||
		aws.ToString(moved.RevisionId) == aws.ToString(live.RevisionId) || aws.ToString(moved.Description) != "prod" {
		t.Fatalf("UpdateAlias: %+v %v", moved, err)
	}
	cleared, err := k.client.UpdateAlias(ctx, &lambda.UpdateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("live"),
		RoutingConfig: weights(map[string]float64{})})
	if err != nil || cleared.RoutingConfig != nil || aws.ToString(cleared.FunctionVersion) != "2" {
		t.Fatalf("clearing routing: %+v %v", cleared, err)
	}
	k.client.UpdateAlias(ctx, &lambda.UpdateAliasInput{FunctionName: aws.String("ver"), Name: aws.String("live"),
		RoutingConfig: weights(map[string]float64{"3": 0.1})})

	// ListAliases: all, filtered by version, paged.
	names := func(in *lambda.ListAliasesInput) []string {
		in.FunctionName = aws.String("ver")
		var out []string
		p := lambda.NewListAliasesPaginator(k.client, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range page.Aliases {
				out = append(out, aws.ToString(a.Name))
			}
		}
		return out
	}
	if got := names(&lambda.ListAliasesInput{MaxItems: aws.Int32(1)}); fmt.Sprint(got) != "[beta live old]" {
		t.Fatalf("aliases %v", got)
	}
	if got := names(&lambda.ListAliasesInput{FunctionVersion: aws.String("2")}); fmt.Sprint(got) != "[live old]" {
		t.Fatalf("aliases of version 2: %v", got)
	}
	if got := names(&lambda.ListAliasesInput{FunctionVersion: aws.String("3")}); fmt.Sprint(got) != "[live]" {
		t.Fatalf("aliases routing to version 3: %v", got)
	}

	// DeleteFunction with a qualifier.
	_, err = k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("ver"), Qualifier: aws.String("2")})
	var conflict *types.ResourceConflictException
	if !errors.As(err, &conflict) {
		t.Fatalf("deleting an aliased version: %v", err)
	}
	wantErr(t, err, "ResourceConflictException", 409, "Unable to delete version because the following aliases reference it: [live, old]")
	_, err = k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("ver"), Qualifier: aws.String("3")})
	wantErr(t, err, "ResourceConflictException", 409, "[live]")
	_, err = k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("ver"), Qualifier: aws.String("$LATEST")})
	wantErr(t, err, "InvalidParameterValueException", 400, "$LATEST version cannot be deleted without deleting the function.")
	_, err = k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("ver"), Qualifier: aws.String("live")})
	wantErr(t, err, "InvalidParameterValueException", 400, "Deletion of aliases is not supported.")
	if _, err := k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("ver:1")}); err != nil {
		t.Fatal(err)
	}
	_, err = k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("ver:1")})
	wantErr(t, err, "ResourceNotFoundException", 404, fnARN("ver")+":1")

	// DeleteAlias, then the version it held can go.
	for _, a := range []string{"live", "old", "live"} { // the second "live" is a no-op
		out, err := k.client.DeleteAlias(ctx, &lambda.DeleteAliasInput{FunctionName: aws.String("ver"), Name: aws.String(a)})
		if err != nil || status(out.ResultMetadata) != http.StatusNoContent {
			t.Fatalf("DeleteAlias %s: %v", a, err)
		}
	}
	if _, err := k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("ver"), Qualifier: aws.String("2")}); err != nil {
		t.Fatal(err)
	}
	list, err := k.client.ListVersionsByFunction(ctx, &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("ver")})
	if err != nil || len(list.Versions) != 2 || aws.ToString(list.Versions[1].Version) != "3" {
		t.Fatalf("versions after deletes: %+v %v", list, err)
	}
	// Version numbers are never reused.
	k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("ver"), Timeout: aws.Int32(11)})
	v4, err := k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("ver")})
	if err != nil || aws.ToString(v4.Version) != "4" {
		t.Fatalf("next version: %+v %v", v4, err)
	}
}

func TestListFunctions(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	zip := bootstrapZip(t, "shared")
	var want []string
	for i := range 55 {
		name := fmt.Sprintf("fn-%02d", i)
		want = append(want, name)
		k.create(name, zip)
	}
	k.client.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("fn-03")})

	first, err := k.client.ListFunctions(ctx, &lambda.ListFunctionsInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Functions) != 50 || first.NextMarker == nil {
		t.Fatalf("first page: %d functions, marker %v", len(first.Functions), first.NextMarker)
	}
	big, err := k.client.ListFunctions(ctx, &lambda.ListFunctionsInput{MaxItems: aws.Int32(10000)})
	if err != nil || len(big.Functions) != 50 {
		t.Fatalf("MaxItems 10000 returns %d (at most 50 per page): %v", len(big.Functions), err)
	}
	var got []string
	pages := lambda.NewListFunctionsPaginator(k.client, &lambda.ListFunctionsInput{MaxItems: aws.Int32(7)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range page.Functions {
			got = append(got, aws.ToString(f.FunctionName))
			if aws.ToString(f.Version) != "$LATEST" || aws.ToString(f.FunctionArn) != fnARN(aws.ToString(f.FunctionName)) || f.State != "" {
				t.Fatalf("listed: %+v", f)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paged listing:\n%v\nwant\n%v", got, want)
	}
	all, err := k.client.ListFunctions(ctx, &lambda.ListFunctionsInput{FunctionVersion: types.FunctionVersionAll, MaxItems: aws.Int32(6)})
	if err != nil {
		t.Fatal(err)
	}
	var arns []string
	for _, f := range all.Functions {
		arns = append(arns, strings.TrimPrefix(aws.ToString(f.FunctionArn), "arn:aws:lambda:us-east-1:"+account+":function:"))
	}
	if fmt.Sprint(arns) != "[fn-00:$LATEST fn-01:$LATEST fn-02:$LATEST fn-03:$LATEST fn-03:1 fn-04:$LATEST]" {
		t.Fatalf("FunctionVersion=ALL: %v", arns)
	}
	_, err = k.client.ListFunctions(ctx, &lambda.ListFunctionsInput{MaxItems: aws.Int32(0)})
	wantErr(t, err, "ValidationException", 400, "at 'maxItems'")
	_, err = k.client.ListFunctions(ctx, &lambda.ListFunctionsInput{FunctionVersion: "SOME"})
	wantErr(t, err, "ValidationException", 400, "at 'functionVersion'")
	_, err = k.client.ListFunctions(ctx, &lambda.ListFunctionsInput{Marker: aws.String("%%%")})
	wantErr(t, err, "InvalidParameterValueException", 400, "Invalid marker")

	// Accounts are separate.
	other, err := k.other.ListFunctions(ctx, &lambda.ListFunctionsInput{})
	if err != nil || len(other.Functions) != 0 {
		t.Fatalf("other account sees %d functions: %v", len(other.Functions), err)
	}
	_, err = k.other.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(fnARN("fn-00"))})
	wantErr(t, err, "AccessDeniedException", 403, "lambda:GetFunction on resource: "+fnARN("fn-00"))
	_, err = k.other.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("fn-00")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found: arn:aws:lambda:us-east-1:"+account2+":function:fn-00")
}

func TestReservedConcurrency(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	zip := bootstrapZip(t, "c")
	k.create("a", zip)
	k.create("b", zip)
	got, err := k.client.GetFunctionConcurrency(ctx, &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String("a")})
	if err != nil || got.ReservedConcurrentExecutions != nil {
		t.Fatalf("unset concurrency: %+v %v", got, err)
	}
	put, err := k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("a"), ReservedConcurrentExecutions: aws.Int32(850)})
	if err != nil || aws.ToInt32(put.ReservedConcurrentExecutions) != 850 {
		t.Fatalf("PutFunctionConcurrency: %+v %v", put, err)
	}
	const rule = "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100]."
	_, err = k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("b"), ReservedConcurrentExecutions: aws.Int32(51)})
	wantErr(t, err, "InvalidParameterValueException", 400, rule)
	if _, err := k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("b"), ReservedConcurrentExecutions: aws.Int32(50)}); err != nil {
		t.Fatal(err)
	}
	// Changing a's own reservation counts a's old value out.
	if _, err := k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("a"), ReservedConcurrentExecutions: aws.Int32(850)}); err != nil {
		t.Fatal(err)
	}
	_, err = k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("a"), ReservedConcurrentExecutions: aws.Int32(2000)})
	wantErr(t, err, "InvalidParameterValueException", 400, rule)
	_, err = k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("a"), ReservedConcurrentExecutions: aws.Int32(-1)})
	wantErr(t, err, "ValidationException", 400, "at 'reservedConcurrentExecutions'")
	_, err = k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("nope"), ReservedConcurrentExecutions: aws.Int32(1)})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found: "+fnARN("nope"))
	fn, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("a")})
	if err != nil || fn.Concurrency == nil || aws.ToInt32(fn.Concurrency.ReservedConcurrentExecutions) != 850 {
		t.Fatalf("GetFunction Concurrency: %+v %v", fn.Concurrency, err)
	}
	// Zero is a valid reservation (the function is throttled entirely).
	if _, err := k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("b"), ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := k.client.GetFunctionConcurrency(ctx, &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String("b")}); got.ReservedConcurrentExecutions == nil || *got.ReservedConcurrentExecutions != 0 {
		t.Fatalf("zero reservation: %+v", got)
	}
	del, err := k.client.DeleteFunctionConcurrency(ctx, &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String("a")})
	if err != nil || status(del.ResultMetadata) != http.StatusNoContent {
		t.Fatalf("DeleteFunctionConcurrency: %v", err)
	}
	if got, _ := k.client.GetFunctionConcurrency(ctx, &lambda.GetFunctionConcurrencyInput{FunctionName: aws.String("a")}); got.ReservedConcurrentExecutions != nil {
		t.Fatal("concurrency still set after delete")
	}
	_, err = k.client.DeleteFunctionConcurrency(ctx, &lambda.DeleteFunctionConcurrencyInput{FunctionName: aws.String("nope")})
	wantErr(t, err, "ResourceNotFoundException", 404, "Function not found")

	// A small account keeps its whole limit below 100 unreserved.
	small := start(t, "", func(c *controlplane.Config) { c.AccountConcurrency = 10 })
	small.create("s", zip)
	_, err = small.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("s"), ReservedConcurrentExecutions: aws.Int32(1)})
	wantErr(t, err, "InvalidParameterValueException", 400, "below its minimum value of [10].")
}

// TestReservationsAcrossControlPlanes: reservations racing through two
// control planes never reserve more than the account allows together.
func TestReservationsAcrossControlPlanes(t *testing.T) {
	limit := func(c *controlplane.Config) { c.AccountConcurrency = 200 }
	k := start(t, "", limit)
	clients := []*lambda.Client{k.client, k.twin(limit)}
	zip := bootstrapZip(t, "c")
	const n = 8
	for i := 0; i < n; i++ {
		k.create(fmt.Sprintf("r%d", i), zip)
	}
	// 100 reservable (200 less 100 unreserved); each asks for 30: three fit.
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := clients[i%2].PutFunctionConcurrency(context.Background(), &lambda.PutFunctionConcurrencyInput{
				FunctionName: aws.String(fmt.Sprintf("r%d", i)), ReservedConcurrentExecutions: aws.Int32(30)})
			if err == nil {
				ok.Add(1)
			} else if !strings.Contains(err.Error(), "InvalidParameterValueException") {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 3 {
		t.Fatalf("%d reservations of 30 succeeded with 100 reservable", ok.Load())
	}
}

func TestCodeDownload(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	zip := makeZip(t, map[string]string{"bootstrap": "#!/bin/sh\n", "lib/data.json": strings.Repeat(`{"k":"v"}`, 1000)})
	k.create("dl", zip)
	fn, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("dl")})
	if err != nil {
		t.Fatal(err)
	}
	loc := aws.ToString(fn.Code.Location)
	if !bytes.Equal(download(t, loc), zip) {
		t.Fatal("downloaded bytes differ")
	}
	refused := func(u, want string) {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), want) {
			t.Fatalf("GET %s: %d %s; want 403 %s", u, resp.StatusCode, b, want)
		}
	}
	u, _ := url.Parse(loc)
	q := u.Query()
	tampered := *u
	q2 := url.Values{"Expires": q["Expires"], "Signature": {strings.Repeat("0", 64)}}
	tampered.RawQuery = q2.Encode()
	refused(tampered.String(), "SignatureDoesNotMatch")
	// A later expiry needs a new signature.
	var exp int64
	fmt.Sscan(q.Get("Expires"), &exp)
	q3 := url.Values{"Expires": {fmt.Sprint(exp + 3600)}, "Signature": q["Signature"]}
	tampered.RawQuery = q3.Encode()
	refused(tampered.String(), "SignatureDoesNotMatch")
	// Another package with the same signature.
	other := *u
	other.Path = "/kiln/code/" + strings.Repeat("ab", 32)
	refused(other.String(), "SignatureDoesNotMatch")
	stripped := *u
	stripped.RawQuery = ""
	refused(stripped.String(), "AccessDenied")
	// Ten minutes later the URL has expired.
	k.clock.advance(11 * time.Minute)
	refused(loc, "Request has expired")
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	k.create("busy", bootstrapZip(t, "base"))
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	shas := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			_, err := k.client.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("busy"),
				Name: aws.String(fmt.Sprintf("a%02d", i)), FunctionVersion: aws.String("$LATEST")})
			if err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			for { // one update at a time, as on Lambda: the others wait for it and try again
				v, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("busy"),
					ZipFile: bootstrapZip(t, fmt.Sprint("code ", i)), Publish: true})
				var conflict *types.ResourceConflictException
				if errors.As(err, &conflict) && strings.Contains(conflict.ErrorMessage(), "update is in progress") {
					fntest.WaitUpdated(t, k.client, "busy")
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				shas <- aws.ToString(v.CodeSha256)
				return
			}
		})
	}
	wg.Wait()
	close(errs)
	close(shas)
	for err := range errs {
		t.Fatal(err)
	}
	aliases, err := k.client.ListAliases(ctx, &lambda.ListAliasesInput{FunctionName: aws.String("busy")})
	if err != nil || len(aliases.Aliases) != n {
		t.Fatalf("%d aliases after %d concurrent CreateAlias: %v", len(aliases.Aliases), n, err)
	}
	versions, err := k.client.ListVersionsByFunction(ctx, &lambda.ListVersionsByFunctionInput{FunctionName: aws.String("busy")})
	if err != nil || len(versions.Versions) != n+1 {
		t.Fatalf("%d versions after %d concurrent publishes: %v", len(versions.Versions)-1, n, err)
	}
	published := map[string]bool{}
	for _, v := range versions.Versions[1:] {
		published[aws.ToString(v.CodeSha256)] = true
	}
	for sha := range shas {
		if !published[sha] {
			t.Fatalf("published code %s is in no version", sha)
		}
	}
}

func TestDataSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	k := start(t, dir, nil)
	zip := bootstrapZip(t, "persist")
	in := createInput("keep", zip)
	in.Publish = true
	in.Environment = &types.Environment{Variables: map[string]string{"KEY": "V"}}
	if _, err := k.client.CreateFunction(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("keep"), Name: aws.String("prod"), FunctionVersion: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.client.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("keep"), ReservedConcurrentExecutions: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	before, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("keep")})
	if err != nil {
		t.Fatal(err)
	}
	k.stop()

	k = start(t, dir, nil)
	after, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("keep")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(after.Configuration.RevisionId) != aws.ToString(before.Configuration.RevisionId) ||
		after.Configuration.Environment.Variables["KEY"] != "V" || aws.ToInt32(after.Concurrency.ReservedConcurrentExecutions) != 7 {
		t.Fatalf("after restart: %+v", after)
	}
	alias, err := k.client.GetAlias(ctx, &lambda.GetAliasInput{FunctionName: aws.String("keep"), Name: aws.String("prod")})
	if err != nil || aws.ToString(alias.FunctionVersion) != "1" {
		t.Fatalf("alias after restart: %+v %v", alias, err)
	}
	if !bytes.Equal(download(t, aws.ToString(after.Code.Location)), zip) {
		t.Fatal("code after restart differs")
	}
	dirOf, err := k.code.Dir(ctx, codeSha(zip))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dirOf + "/bootstrap"); err != nil || fi.Mode().Perm() != 0o555 {
		t.Fatalf("unpacked bootstrap: %v %v", fi, err)
	}
}

func TestCodeStorageLimitAndCollection(t *testing.T) {
	ctx := context.Background()
	zip1 := bootstrapZip(t, "first")
	zip2 := bootstrapZip(t, "second")
	k := start(t, "", func(c *controlplane.Config) { c.MaxCodeStorage = int64(len(zip1) + len(zip2)/2) })
	k.create("one", zip1)
	k.create("same", zip1) // already stored: does not count again
	_, err := k.client.CreateFunction(ctx, createInput("two", zip2))
	var cse *types.CodeStorageExceededException
	if !errors.As(err, &cse) {
		t.Fatalf("over the limit: %v", err)
	}
	wantErr(t, err, "CodeStorageExceededException", 400, "Code storage limit exceeded.")
	_, err = k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("one"), ZipFile: zip2})
	wantErr(t, err, "CodeStorageExceededException", 400, "Code storage limit exceeded.")

	// Once nothing references zip1 it can be collected, making room.
	k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("one")})
	if n, err := k.svc.CollectCode(ctx, time.Hour); err != nil || n.Code.Blobs != 0 {
		t.Fatalf("CollectCode with grace: %+v %v", n, err)
	}
	if n, err := k.svc.CollectCode(ctx, 0); err != nil || n.Code.Blobs != 0 {
		t.Fatalf("CollectCode while 'same' uses it: %+v %v", n, err)
	}
	k.client.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("same")})
	if n, err := k.svc.CollectCode(ctx, 0); err != nil || n.Code.Blobs != 1 || n.Code.Bytes != int64(len(zip1)) {
		t.Fatalf("CollectCode: %+v %v", n, err)
	}
	if k.code.Has(codeSha(zip1)) || k.code.TotalSize() != 0 {
		t.Fatal("collected code still stored")
	}
	k.create("two", zip2)
}

func TestOversizedPackages(t *testing.T) {
	k := start(t, "", nil)
	ctx := context.Background()
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i>>8*13 + i>>16*31)
		}
		return b
	}
	// Over 50 MB zipped but within the request limit: refused by the code store.
	_, err := k.client.CreateFunction(ctx, createInput("big", random(51<<20)))
	wantErr(t, err, "RequestEntityTooLargeException", 413, "exceeds the maximum of 52428800 bytes")
	// Beyond the request limit: refused before the body is read.
	_, err = k.client.CreateFunction(ctx, createInput("bigger", random(60<<20)))
	wantErr(t, err, "RequestEntityTooLargeException", 413, "Request must be smaller than")
	// A zip bomb: 300 MB of zeros in a few hundred KB.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("zeros")
	chunk := make([]byte, 1<<20)
	for range 300 {
		w.Write(chunk)
	}
	zw.Close()
	start := time.Now()
	_, err = k.client.CreateFunction(ctx, createInput("bomb", buf.Bytes()))
	wantErr(t, err, "InvalidParameterValueException", 400, "Unzipped size must be smaller than 262144000 bytes")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusing the bomb took %v", d)
	}
	if k.code.TotalSize() != 0 {
		t.Fatalf("refused packages were stored: %d bytes", k.code.TotalSize())
	}
}
