package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/credentials"
	cwl "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/nats-io/nats.go/jetstream"
)

// The checks here use aws-sdk-go-v2 (and the AWS CLI for logs tail), each
// written once and run against every target.

var ctx = context.Background()

func creds() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(accessKeyID, secretAccessKey, "")
}

// lambdaAt is a Lambda client of one endpoint, retries off.
func lambdaAt(endpoint string) *lambda.Client {
	return lambda.New(lambda.Options{Region: region, BaseEndpoint: aws.String(endpoint), Credentials: creds(), RetryMaxAttempts: 1})
}

func logsAt(endpoint string) *cwl.Client {
	return cwl.New(cwl.Options{Region: region, BaseEndpoint: aws.String(endpoint), Credentials: creds(), RetryMaxAttempts: 1})
}

func (tg *target) functionARN(name string) string {
	return "arn:aws:lambda:" + region + ":" + tg.accountID + ":function:" + name
}

func (tg *target) queueARN(name string) string {
	return eventinvoke.QueueARN(region, tg.accountID, name)
}

// createToolkit creates the aws-lambda-go toolkit function through c and
// waits until it is Active.
func createToolkit(t *testing.T, c *lambda.Client, name string) {
	t.Helper()
	createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String(name), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: fntest.GoFunctionZip(t, fntest.ToolkitGo)},
		Timeout: aws.Int32(10)})
}

func createFn(t *testing.T, c *lambda.Client, in *lambda.CreateFunctionInput) {
	t.Helper()
	in.Role = aws.String("arn:aws:iam::123456789012:role/kiln-e2e")
	if _, err := c.CreateFunction(ctx, in); err != nil {
		t.Fatalf("create %s: %v", aws.ToString(in.FunctionName), err)
	}
	if err := lambda.NewFunctionActiveV2Waiter(c).Wait(ctx, &lambda.GetFunctionInput{FunctionName: in.FunctionName}, time.Minute); err != nil {
		t.Fatalf("%s not active: %v", aws.ToString(in.FunctionName), err)
	}
}

func invoke(t *testing.T, c *lambda.Client, in *lambda.InvokeInput) *lambda.InvokeOutput {
	t.Helper()
	out, err := c.Invoke(ctx, in)
	if err != nil {
		t.Fatalf("invoke %s: %v", aws.ToString(in.FunctionName), err)
	}
	return out
}

// Create through one endpoint, invoke through every one; versions and a
// weighted alias, their executed versions.
func TestInvokeVersionsAliases(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		createToolkit(t, c, "par-alias")
		for i, ep := range tg.endpoints {
			out := invoke(t, lambdaAt(ep), &lambda.InvokeInput{FunctionName: aws.String("par-alias"), Payload: []byte(`{"action":"version"}`)})
			if out.FunctionError != nil || string(out.Payload) != `"v1"` || aws.ToString(out.ExecutedVersion) != "$LATEST" {
				t.Fatalf("invoke via %s: %v %s %s", ep, out.FunctionError, out.Payload, aws.ToString(out.ExecutedVersion))
			}
			if h, ok := kilntest.ColdStart(out); i == 0 && !ok { // the function's first invoke starts its environment
				t.Fatalf("first invoke: X-Kiln-Cold-Start %q", h)
			}
		}
		v1, err := c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("par-alias")})
		if err != nil {
			t.Fatal(err)
		}
		v2zip := fntest.GoFunctionZip(t, strings.Replace(fntest.ToolkitGo, `VERSION = "v1"`, `VERSION = "v2"`, 1))
		if _, err := c.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("par-alias"), ZipFile: v2zip}); err != nil {
			t.Fatal(err)
		}
		if err := lambda.NewFunctionUpdatedV2Waiter(c).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("par-alias")}, time.Minute); err != nil {
			t.Fatal(err)
		}
		v2, err := c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("par-alias")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("par-alias"), Name: aws.String("live"),
			FunctionVersion: v1.Version, RoutingConfig: &types.AliasRoutingConfiguration{
				AdditionalVersionWeights: map[string]float64{aws.ToString(v2.Version): 0.5}}}); err != nil {
			t.Fatal(err)
		}
		// Every frontend sees the alias (the control plane's change reaches
		// their caches); both versions run, each its own code.
		seen := map[string]bool{}
		for i := 0; i < 40 && len(seen) < 2; i++ {
			out := invoke(t, lambdaAt(tg.endpoints[i%len(tg.endpoints)]), &lambda.InvokeInput{FunctionName: aws.String("par-alias:live"),
				Payload: []byte(`{"action":"version"}`)})
			ev := aws.ToString(out.ExecutedVersion)
			want := map[string]string{aws.ToString(v1.Version): `"v1"`, aws.ToString(v2.Version): `"v2"`}[ev]
			if out.FunctionError != nil || want == "" || string(out.Payload) != want {
				t.Fatalf("alias invoke: version %q payload %s error %v", ev, out.Payload, out.FunctionError)
			}
			seen[ev] = true
		}
		if len(seen) != 2 {
			t.Fatalf("a 50%% weighted alias ran only versions %v in 40 invokes", seen)
		}
	})
}

// sinkApp prints each event it gets (an invocation record) on one line.
const sinkApp = `import json


def handler(event, context):
    print("RECORD " + json.dumps(event))
    return "ok"
`

// Event invokes through every endpoint: a success goes to the OnSuccess
// destination (a function, which prints the record to its log), a failure
// with no retries left to OnFailure (the same function) and to the
// dead-letter queue (a Kiln queue, read from JetStream).
func TestEventInvokeDestinations(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("par-sink"), Runtime: pythonRuntime(t),
			Handler: aws.String("app.handler"), Code: &types.FunctionCode{ZipFile: fntest.Zip(t, map[string][]byte{"app.py": []byte(sinkApp)})}})
		createToolkit(t, c, "par-async")
		if _, err := c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("par-async"),
			DeadLetterConfig: &types.DeadLetterConfig{TargetArn: aws.String(tg.queueARN("par-dead"))}}); err != nil {
			t.Fatal(err)
		}
		if err := lambda.NewFunctionUpdatedV2Waiter(c).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("par-async")}, time.Minute); err != nil {
			t.Fatal(err)
		}
		sink := aws.String(tg.functionARN("par-sink"))
		if _, err := c.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("par-async"),
			MaximumRetryAttempts: aws.Int32(0), DestinationConfig: &types.DestinationConfig{
				OnSuccess: &types.OnSuccess{Destination: sink}, OnFailure: &types.OnFailure{Destination: sink}}}); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{} // request id → condition
		for i, ep := range tg.endpoints {
			ec := lambdaAt(ep)
			for _, ev := range []struct{ payload, condition string }{
				{fmt.Sprintf(`{"action":"echo","i":%d}`, i), eventinvoke.ConditionSuccess},
				{`{"action":"error","msg":"par fails"}`, eventinvoke.ConditionRetriesExhausted},
			} {
				out := invoke(t, ec, &lambda.InvokeInput{FunctionName: aws.String("par-async"), InvocationType: types.InvocationTypeEvent,
					Payload: []byte(ev.payload)})
				if out.StatusCode != 202 {
					t.Fatalf("Event invoke via %s: status %d", ep, out.StatusCode)
				}
				want[requestIDOf(t, out)] = ev.condition
			}
		}
		// The sink's log, read through the last endpoint.
		got := map[string]string{}
		logs := logsAt(tg.endpoints[len(tg.endpoints)-1])
		for deadline := time.Now().Add(90 * time.Second); len(got) < len(want); time.Sleep(500 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("records for %d of %d events after 90 s: %v (want %v)\n%s", len(got), len(want), got, want, tg.log())
			}
			p := cwl.NewFilterLogEventsPaginator(logs, &cwl.FilterLogEventsInput{LogGroupName: aws.String("/aws/lambda/par-sink")})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					break // the group appears with the sink's first invoke
				}
				for _, e := range page.Events {
					line, ok := strings.CutPrefix(aws.ToString(e.Message), "RECORD ")
					if !ok {
						continue
					}
					var r eventinvoke.Record
					if err := json.Unmarshal([]byte(line), &r); err != nil {
						t.Fatalf("record %q: %v", line, err)
					}
					if r.RequestContext.FunctionArn != tg.functionARN("par-async")+":$LATEST" {
						t.Fatalf("record's function %s", r.RequestContext.FunctionArn)
					}
					got[r.RequestContext.RequestID] = r.RequestContext.Condition
				}
			}
		}
		for id, cond := range want {
			if got[id] != cond {
				t.Errorf("event %s: condition %q, want %q", id, got[id], cond)
			}
		}
		// Each failed event is in the dead-letter queue too.
		nc, err := tg.connect()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		dead := map[string]bool{}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			msgs, err := eventinvoke.ReadQueue(ctx, js, tg.queueARN("par-dead"), 1, 0)
			if err != nil { // JetStream may be electing the stream's leader
				if time.Now().After(deadline) {
					t.Fatal(err)
				}
				continue
			}
			for _, m := range msgs {
				if m.Header.Get("ErrorMessage") != "par fails" {
					t.Fatalf("dead letter headers %v", m.Header)
				}
				dead[m.Header.Get("RequestID")] = true
			}
			if len(dead) == len(tg.endpoints) || time.Now().After(deadline) {
				break
			}
		}
		for id, cond := range want {
			if dead[id] != (cond == eventinvoke.ConditionRetriesExhausted) {
				t.Errorf("event %s (%s): in the dead-letter queue: %v", id, cond, dead[id])
			}
		}
	})
}

// requestIDOf is the request id Lambda returns for an Event invoke.
func requestIDOf(t *testing.T, out *lambda.InvokeOutput) string {
	t.Helper()
	id, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata)
	if len(id) != 36 {
		t.Fatalf("Event invoke without a request id: %q", id)
	}
	return id
}

// pythonRuntime is the pythonX.Y runtime of /usr/bin/python3.
func pythonRuntime(t *testing.T) types.Runtime {
	out, err := exec.Command(python, "-c", `import sys; print("python%d.%d" % sys.version_info[:2])`).Output()
	if err != nil {
		t.Fatal(err)
	}
	return types.Runtime(strings.TrimSpace(string(out)))
}

// aws logs tail --follow against the last endpoint shows an invoke made
// through the first (in a cluster: another frontend, the log written by
// whichever worker ran it).
func TestLogsTailFollow(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		createToolkit(t, c, "par-logs")
		invoke(t, c, &lambda.InvokeInput{FunctionName: aws.String("par-logs"), Payload: []byte(`{"action":"print","lines":1,"text":"before follow"}`)})
		env := append(clientEnv(tg, t.TempDir(), nil), "PYTHONUNBUFFERED=1") // tail --follow's lines reach the pipe at once
		cmd := exec.Command(awsCLI, "logs", "tail", "/aws/lambda/par-logs", "--follow", "--since", "10m", "--format", "short",
			"--endpoint-url", tg.endpoints[len(tg.endpoints)-1])
		cmd.Env = env
		follow := kilntest.Follow(t, cmd)
		await := func(text string) { t.Helper(); follow(text, 60*time.Second) }
		await("before follow")
		invoke(t, c, &lambda.InvokeInput{FunctionName: aws.String("par-logs"), Payload: []byte(`{"action":"print","lines":1,"text":"while following"}`)})
		await("while following")
	})
}

// Provisioned concurrency on a version becomes READY, and invokes of that
// version through every endpoint run in its pre-initialized environments
// (AWS_LAMBDA_INITIALIZATION_TYPE), while $LATEST runs on demand.
func TestProvisionedConcurrency(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		name := aws.String("par-provisioned")
		createToolkit(t, c, *name)
		v, err := c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: name})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutProvisionedConcurrencyConfig(ctx, &lambda.PutProvisionedConcurrencyConfigInput{FunctionName: name,
			Qualifier: v.Version, ProvisionedConcurrentExecutions: aws.Int32(2)}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			pc, err := c.GetProvisionedConcurrencyConfig(ctx, &lambda.GetProvisionedConcurrencyConfigInput{FunctionName: name, Qualifier: v.Version})
			if err != nil {
				t.Fatal(err)
			}
			if pc.Status == types.ProvisionedConcurrencyStatusEnumReady && aws.ToInt32(pc.AvailableProvisionedConcurrentExecutions) == 2 {
				break
			}
			if pc.Status == types.ProvisionedConcurrencyStatusEnumFailed || time.Now().After(deadline) {
				t.Fatalf("provisioned concurrency: %s %s, %d of 2 available", pc.Status, aws.ToString(pc.StatusReason),
					aws.ToInt32(pc.AvailableProvisionedConcurrentExecutions))
			}
		}
		initType := func(ep, qualified string) string {
			out := invoke(t, lambdaAt(ep), &lambda.InvokeInput{FunctionName: aws.String(qualified),
				Payload: []byte(`{"action":"env","name":"AWS_LAMBDA_INITIALIZATION_TYPE"}`)})
			if out.FunctionError != nil {
				t.Fatalf("invoke %s via %s: %s", qualified, ep, out.Payload)
			}
			return string(out.Payload)
		}
		for _, ep := range tg.endpoints {
			for i := 0; i < 3; i++ {
				if got := initType(ep, *name+":"+aws.ToString(v.Version)); got != `"provisioned-concurrency"` {
					t.Fatalf("version %s via %s ran in an environment of type %s", aws.ToString(v.Version), ep, got)
				}
			}
		}
		if got := initType(tg.endpoints[0], *name); got != `"on-demand"` {
			t.Fatalf("$LATEST ran in an environment of type %s", got)
		}
	})
}
