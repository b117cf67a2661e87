package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	cwl "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// goCallerSource is a Go function calling Kiln as code on Lambda calls AWS
// with aws-sdk-go-v2: the default configuration chain, which finds the
// environment's temporary credentials and AWS_ENDPOINT_URL; nothing set by
// hand. "list" lists the functions and invokes another; "loop" invokes
// itself with an Event invoke, one hop further.
const goCallerSource = `package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awslambda "github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

type event struct {
	Action, Target string
	Hop            int
}

func handle(ctx context.Context, ev event) (any, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, err
	}
	c := awslambda.NewFromConfig(cfg)
	switch ev.Action {
	case "list":
		out, err := c.ListFunctions(ctx, &awslambda.ListFunctionsInput{})
		if err != nil {
			return nil, err
		}
		var names []string
		for _, f := range out.Functions {
			names = append(names, aws.ToString(f.FunctionName))
		}
		inv, err := c.Invoke(ctx, &awslambda.InvokeInput{FunctionName: aws.String(ev.Target), Payload: []byte("{\"action\":\"version\"}")})
		if err != nil {
			return nil, err
		}
		return map[string]any{"functions": names, "invoked": string(inv.Payload)}, nil
	case "loop":
		fmt.Printf("HOP %d\n", ev.Hop)
		next, _ := json.Marshal(event{Action: "loop", Hop: ev.Hop + 1})
		_, err := c.Invoke(ctx, &awslambda.InvokeInput{FunctionName: aws.String(os.Getenv("AWS_LAMBDA_FUNCTION_NAME")),
			InvocationType: types.InvocationTypeEvent, Payload: next})
		return nil, err
	}
	return nil, fmt.Errorf("unknown action %q", ev.Action)
}

func main() { lambda.Start(handle) }
`

// A Go function with aws-sdk-go-v2 calls Kiln (ListFunctions, an invoke of
// another function) from its environment's credentials and endpoint; and
// a loop of Event invokes through it is stopped as on Lambda: the chain's
// Lineage travels with each queued event, so its 17th invoke is refused
// and the event goes to the OnFailure destination. The host side is set
// up as a Go user would: the default chain reading the files Kiln wrote.
func TestGoFunctionCallsKiln(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		cfg, err := config.LoadDefaultConfig(ctx, config.WithSharedConfigFiles([]string{filepath.Join(tg.dir, "config")}),
			config.WithSharedCredentialsFiles([]string{filepath.Join(tg.dir, "credentials")}))
		if err != nil {
			t.Fatal(err)
		}
		c := lambda.NewFromConfig(cfg)
		createToolkit(t, c, "gofn-target")
		zip := fntest.GoFunctionZip(t, goCallerSource)
		createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("gofn-call"), Runtime: types.RuntimeProvidedal2023,
			Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: zip}, Timeout: aws.Int32(30)})
		out := invoke(t, c, &lambda.InvokeInput{FunctionName: aws.String("gofn-call"), Payload: []byte(`{"action":"list","target":"gofn-target"}`)})
		var got struct {
			Functions []string
			Invoked   string
		}
		if out.FunctionError != nil || json.Unmarshal(out.Payload, &got) != nil {
			t.Fatalf("the function failed: %s\n%s", out.Payload, tg.log())
		}
		if !slices.Contains(got.Functions, "gofn-target") || !slices.Contains(got.Functions, "gofn-call") || got.Invoked != `"v1"` {
			t.Fatalf("from inside: functions %v, invoke %s", got.Functions, got.Invoked)
		}

		// The loop, its stopped event sent to a sink function's log.
		createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("gofn-sink"), Runtime: pythonRuntime(t),
			Handler: aws.String("app.handler"), Code: &types.FunctionCode{ZipFile: fntest.Zip(t, map[string][]byte{"app.py": []byte(sinkApp)})}})
		createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("gofn-loop"), Runtime: types.RuntimeProvidedal2023,
			Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: zip}, Timeout: aws.Int32(30)})
		if _, err := c.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("gofn-loop"),
			DestinationConfig: &types.DestinationConfig{OnFailure: &types.OnFailure{Destination: aws.String(tg.functionARN("gofn-sink"))}}}); err != nil {
			t.Fatal(err)
		}
		if out := invoke(t, c, &lambda.InvokeInput{FunctionName: aws.String("gofn-loop"), Payload: []byte(`{"action":"loop","hop":1}`)}); out.FunctionError != nil {
			t.Fatalf("the loop's first hop failed: %s\n%s", out.Payload, tg.log())
		}
		logs := cwl.NewFromConfig(cfg)
		lines := func(group, prefix string) []string {
			var out []string
			for p := cwl.NewFilterLogEventsPaginator(logs, &cwl.FilterLogEventsInput{LogGroupName: aws.String(group)}); p.HasMorePages(); {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil // the group appears with the function's first invoke
				}
				for _, e := range page.Events {
					if l, ok := strings.CutPrefix(strings.TrimSpace(aws.ToString(e.Message)), prefix); ok {
						out = append(out, l)
					}
				}
			}
			return out
		}
		var stopped *eventinvoke.Record
		for deadline := time.Now().Add(2 * time.Minute); stopped == nil; time.Sleep(500 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no record of the stopped loop after 2 minutes; hops %v\n%s", lines("/aws/lambda/gofn-loop", "HOP "), tg.log())
			}
			for _, l := range lines("/aws/lambda/gofn-sink", "RECORD ") {
				var r eventinvoke.Record
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatalf("record %q: %v", l, err)
				}
				stopped = &r
			}
		}
		var ev struct{ Hop int }
		json.Unmarshal(stopped.RequestPayload, &ev)
		if stopped.RequestContext.Condition != eventinvoke.ConditionRecursiveInvocation || ev.Hop != frontend.MaxRecursion+1 {
			t.Fatalf("record: condition %s, hop %d; want %s, %d", stopped.RequestContext.Condition, ev.Hop, eventinvoke.ConditionRecursiveInvocation, frontend.MaxRecursion+1)
		}
		// Every hop up to the 16th ran (an event may run twice, as on
		// Lambda), the 17th never did.
		seen := map[string]bool{}
		for deadline := time.Now().Add(time.Minute); len(seen) < frontend.MaxRecursion; time.Sleep(500 * time.Millisecond) {
			for _, h := range lines("/aws/lambda/gofn-loop", "HOP ") {
				seen[h] = true
			}
			if time.Now().After(deadline) {
				break
			}
		}
		for i := 1; i <= frontend.MaxRecursion+1; i++ {
			if ran := seen[fmt.Sprint(i)]; ran != (i <= frontend.MaxRecursion) {
				t.Errorf("hop %d ran: %v", i, ran)
			}
		}
	})
}
