package e2e

// These tests start the shared targets; their files sort after
// hostile_test.go, whose TestKilnUpLeavesNothingAfterSIGTERM counts every
// process under the test binary as left over.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	cwl "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// account is an account `kiln accounts create` made, with a data
// directory holding its AWS files (as an operator would hand them out).
type account struct {
	id, key, secret, dir string
}

// kilnAccounts runs `kiln accounts ARGS --data DIR` and returns its output.
func kilnAccounts(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite.bin, append(append([]string{"accounts"}, args...), "--data", dir)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// field is the value of a "name  value" line of kiln accounts' output.
func field(out, name string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name); ok {
			v, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
			return v
		}
	}
	return ""
}

func createAccount(t *testing.T, tg *target, name string) account {
	t.Helper()
	out, err := kilnAccounts(t, tg.dir, "create", "--name", name)
	if err != nil {
		t.Fatalf("kiln accounts create: %v\n%s", err, out)
	}
	a := account{id: field(out, "account"), key: field(out, "access key id"), secret: field(out, "secret access key"), dir: t.TempDir()}
	if len(a.id) != 12 || a.key == "" || a.secret == "" {
		t.Fatalf("kiln accounts create printed\n%s", out)
	}
	conf, _ := os.ReadFile(filepath.Join(tg.dir, "config"))
	os.WriteFile(filepath.Join(a.dir, "config"), conf, 0o600)
	os.WriteFile(filepath.Join(a.dir, "credentials"),
		[]byte("[default]\naws_access_key_id = "+a.key+"\naws_secret_access_key = "+a.secret+"\n"), 0o600)
	return a
}

func (a account) lambda(endpoint string) *lambda.Client {
	return lambda.New(lambda.Options{Region: region, BaseEndpoint: aws.String(endpoint), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(a.key, a.secret, "")})
}

func (a account) logs(endpoint string) *cwl.Client {
	return cwl.New(cwl.Options{Region: region, BaseEndpoint: aws.String(endpoint), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(a.key, a.secret, "")})
}

// eventually retries fn on every endpoint until it returns nil (a change
// reaches every frontend through the KV watches), for up to a minute.
func eventually(t *testing.T, tg *target, what string, fn func(endpoint string) error) {
	t.Helper()
	for _, ep := range tg.endpoints {
		var err error
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err = fn(ep); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s via %s: %v\n%s", what, ep, err, tg.log())
			}
		}
	}
}

// A second account made with `kiln accounts` works at once on every
// frontend, sees none of the first account's functions, logs or policies,
// cannot invoke them until a permission grants it; its key removed, it is
// refused everywhere. STS tells each key's account; the code URL of
// GetFunction downloads with plain HTTP and refuses forgeries.
func TestAccountsAndPermissions(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		owner := lambdaAt(tg.endpoints[0])
		createToolkit(t, owner, "acct-fn")
		invoke(t, owner, &lambda.InvokeInput{FunctionName: aws.String("acct-fn"), Payload: []byte(`{"action":"print","lines":1,"text":"owner's secret line"}`)})

		layerZip, err := fntest.ZipFiles(map[string][]byte{"python/acct_layer.py": []byte("X = 1\n")})
		if err != nil {
			t.Fatal(err)
		}
		layer, err := owner.PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("acct-layer"),
			Content: &types.LayerVersionContentInput{ZipFile: layerZip}})
		if err != nil {
			t.Fatal(err)
		}
		layerARN := aws.ToString(layer.LayerVersionArn)

		b := createAccount(t, tg, "second")
		out, err := kilnAccounts(t, tg.dir, "list")
		if err != nil || !strings.Contains(out, b.id) || !strings.Contains(out, b.key) || !strings.Contains(out, tg.accountID) || strings.Contains(out, b.secret) {
			t.Fatalf("kiln accounts list: %v\n%s", err, out)
		}
		// Only the admin manages accounts.
		if out, err := kilnAccounts(t, b.dir, "create"); err == nil || !strings.Contains(out, "AccessDeniedException") {
			t.Fatalf("the second account created an account: %v\n%s", err, out)
		}

		arn := tg.functionARN("acct-fn")
		eventually(t, tg, "the new key", func(ep string) error {
			_, err := b.lambda(ep).ListFunctions(ctx, &lambda.ListFunctionsInput{})
			return err
		})
		for _, ep := range tg.endpoints {
			c := b.lambda(ep)
			list, err := c.ListFunctions(ctx, &lambda.ListFunctionsInput{})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range list.Functions {
				if strings.HasPrefix(aws.ToString(f.FunctionArn), "arn:aws:lambda:"+region+":"+tg.accountID+":") {
					t.Fatalf("the second account lists the first's %s", aws.ToString(f.FunctionArn))
				}
			}
			denied := map[string]error{}
			_, denied["Invoke"] = c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(arn)})
			_, denied["Invoke Event"] = c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(arn), InvocationType: types.InvocationTypeEvent})
			_, denied["Invoke of a missing function"] = c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(tg.functionARN("acct-none"))})
			_, denied["GetFunction"] = c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(arn)})
			_, denied["UpdateFunctionConfiguration"] = c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String(arn), Timeout: aws.Int32(3)})
			_, denied["DeleteFunction"] = c.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String(arn)})
			_, denied["GetPolicy"] = c.GetPolicy(ctx, &lambda.GetPolicyInput{FunctionName: aws.String(arn)})
			_, denied["TagResource"] = c.TagResource(ctx, &lambda.TagResourceInput{Resource: aws.String(arn), Tags: map[string]string{"by": "second"}})
			_, denied["ListTags"] = c.ListTags(ctx, &lambda.ListTagsInput{Resource: aws.String(arn)})
			_, denied["GetLayerVersionByArn"] = c.GetLayerVersionByArn(ctx, &lambda.GetLayerVersionByArnInput{Arn: aws.String(layerARN)})
			_, denied["AddPermission"] = c.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String(arn), StatementId: aws.String("self"),
				Action: aws.String("lambda:InvokeFunction"), Principal: aws.String(b.id)})
			for op, err := range denied {
				if kilntest.ErrorCode(err) != "AccessDeniedException" {
					t.Errorf("second account's %s of the first's function via %s: %v; want AccessDeniedException", op, ep, err)
				}
			}
			// Its own function of the same name is another function.
			if _, err := c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("acct-fn")}); kilntest.ErrorCode(err) != "ResourceNotFoundException" {
				t.Errorf("the second account's GetFunction acct-fn: %v; want ResourceNotFoundException", err)
			}
			layers, err := c.ListLayers(ctx, &lambda.ListLayersInput{})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range layers.Layers {
				if aws.ToString(l.LayerName) == "acct-layer" {
					t.Errorf("the second account lists the first's layer %s", aws.ToString(l.LayerArn))
				}
			}
			// Logs: the group is not listed, its events not readable.
			groups, err := b.logs(ep).DescribeLogGroups(ctx, &cwl.DescribeLogGroupsInput{})
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range groups.LogGroups {
				if aws.ToString(g.LogGroupName) == "/aws/lambda/acct-fn" {
					t.Errorf("the second account lists the first's log group")
				}
			}
			ev, err := b.logs(ep).FilterLogEvents(ctx, &cwl.FilterLogEventsInput{LogGroupName: aws.String("/aws/lambda/acct-fn")})
			if err == nil && len(ev.Events) > 0 {
				t.Errorf("the second account reads the first's log events: %v", ev.Events)
			}
		}
		if t.Failed() {
			t.FailNow()
		}

		// A permission for the second account: its invokes work, sync and
		// Event, on every frontend; its management calls are still refused.
		if _, err := owner.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String("acct-fn"), StatementId: aws.String("second"),
			Action: aws.String("lambda:InvokeFunction"), Principal: aws.String(b.id)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, tg, "an invoke the permission allows", func(ep string) error {
			out, err := b.lambda(ep).Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(arn), Payload: []byte(`{"action":"version"}`)})
			if err == nil && (out.FunctionError != nil || string(out.Payload) != `"v1"`) {
				t.Fatalf("cross-account invoke: %v %s", out.FunctionError, out.Payload)
			}
			return err
		})
		c := b.lambda(tg.endpoints[len(tg.endpoints)-1])
		if out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(arn), InvocationType: types.InvocationTypeEvent}); err != nil || out.StatusCode != 202 {
			t.Fatalf("cross-account Event invoke: %v", err)
		}
		if _, err := c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(arn)}); kilntest.ErrorCode(err) != "AccessDeniedException" {
			t.Fatalf("GetFunction with an invoke permission: %v; want AccessDeniedException", err)
		}
		// A layer version's own permission lets the second account read it.
		if _, err := owner.AddLayerVersionPermission(ctx, &lambda.AddLayerVersionPermissionInput{LayerName: aws.String("acct-layer"),
			VersionNumber: aws.Int64(layer.Version), StatementId: aws.String("second"), Action: aws.String("lambda:GetLayerVersion"),
			Principal: aws.String(b.id)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetLayerVersionByArn(ctx, &lambda.GetLayerVersionByArnInput{Arn: aws.String(layerARN)}); err != nil {
			t.Fatalf("GetLayerVersionByArn with a layer permission: %v", err)
		}
		if _, err := owner.RemovePermission(ctx, &lambda.RemovePermissionInput{FunctionName: aws.String("acct-fn"), StatementId: aws.String("second")}); err != nil {
			t.Fatal(err)
		}
		eventually(t, tg, "an invoke refused again", func(ep string) error {
			_, err := b.lambda(ep).Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(arn)})
			if kilntest.ErrorCode(err) != "AccessDeniedException" {
				return errors.New("not refused: " + kilntest.ErrorCode(err))
			}
			return nil
		})

		// STS: each key's account, as the AWS CLI asks it (Debian's 2.9
		// reads no endpoint_url from the config file).
		for _, a := range []account{{id: tg.accountID, dir: tg.dir}, b} {
			out, err := awsWithFiles(t, a.dir, "sts", "get-caller-identity", "--endpoint-url", tg.endpoints[len(tg.endpoints)-1])
			var id struct{ Account, Arn, UserId string }
			if err != nil || json.Unmarshal([]byte(out), &id) != nil || id.Account != a.id || id.Arn != "arn:aws:iam::"+a.id+":root" {
				conf, _ := os.ReadFile(filepath.Join(a.dir, "config"))
				t.Fatalf("aws sts get-caller-identity (%s): %v\n%s\n%s", a.dir, err, out, conf)
			}
		}

		// The code URL: plain HTTP downloads the package; forged or
		// altered URLs are refused.
		fn, err := owner.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("acct-fn")})
		if err != nil {
			t.Fatal(err)
		}
		loc := aws.ToString(fn.Code.Location)
		resp, err := http.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		zip, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		sum := sha256.Sum256(zip)
		if resp.StatusCode != 200 || base64.StdEncoding.EncodeToString(sum[:]) != aws.ToString(fn.Configuration.CodeSha256) {
			t.Fatalf("GET %s: %s, %d bytes not the package", loc, resp.Status, len(zip))
		}
		u, _ := url.Parse(loc)
		q := u.Query()
		for name, edit := range map[string]func(url.Values){
			"forged signature": func(v url.Values) { v.Set("Signature", strings.Repeat("0", 64)) },
			"later expiry":     func(v url.Values) { v.Set("Expires", "9999999999") },
			"no signature":     func(v url.Values) { v.Del("Signature") },
		} {
			v := url.Values{}
			for k, vs := range q {
				v[k] = vs
			}
			edit(v)
			forged := *u
			forged.RawQuery = v.Encode()
			resp, err := http.Get(forged.String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("code URL with a %s: %s; want 403", name, resp.Status)
			}
		}

		// The key removed: refused on every frontend.
		if out, err := kilnAccounts(t, tg.dir, "keys", "add", b.id); err != nil || field(out, "access key id") == "" {
			t.Fatalf("kiln accounts keys add: %v\n%s", err, out)
		}
		if out, err := kilnAccounts(t, tg.dir, "keys", "remove", b.id, b.key); err != nil {
			t.Fatalf("kiln accounts keys remove: %v\n%s", err, out)
		}
		eventually(t, tg, "the removed key refused", func(ep string) error {
			_, err := b.lambda(ep).ListFunctions(ctx, &lambda.ListFunctionsInput{})
			if kilntest.ErrorCode(err) != "UnrecognizedClientException" {
				return errors.New("not refused: " + kilntest.ErrorCode(err))
			}
			return nil
		})
	})
}
