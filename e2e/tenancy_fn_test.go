package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// callerApp calls Kiln with unmodified boto3, from the credentials and
// endpoint of its environment, as a function calls AWS in Lambda.
const callerApp = `import json
import os

import boto3


def handler(event, context):
    out = {"endpoint": os.environ.get("AWS_ENDPOINT_URL"), "key": os.environ.get("AWS_ACCESS_KEY_ID", "")[:4],
           "token": bool(os.environ.get("AWS_SESSION_TOKEN"))}
    ident = boto3.client("sts").get_caller_identity()
    out["account"], out["arn"] = ident["Account"], ident["Arn"]
    r = boto3.client("lambda").invoke(FunctionName=event["target"], Payload=b'{"action":"version"}')
    out["invoked"] = r["Payload"].read().decode()
    if event.get("queue"):
        sqs = boto3.client("sqs")
        url = sqs.get_queue_url(QueueName=event["queue"])["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="from " + context.function_name)
        out["sent"] = True
    try:
        boto3.client("lambda").get_function(FunctionName=event["foreign"])
        out["foreign"] = "allowed"
    except Exception as e:
        out["foreign"] = type(e).__name__ + ": " + str(e)
    return out
`

// A function calls Kiln with boto3 and its environment's temporary
// credentials, through the one socket of Kiln's its sandbox has: STS
// names its account and role session, it invokes another function and (in
// kiln up, which serves queues) sends to a Kiln queue; another account's
// function stays out of its reach.
func TestFunctionCallsKiln(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		createToolkit(t, c, "fncall-target")
		zip, err := fntest.ZipFiles(map[string][]byte{"app.py": []byte(callerApp)})
		if err != nil {
			t.Fatal(err)
		}
		createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("fncall"), Runtime: pythonRuntime(t),
			Handler: aws.String("app.handler"), Code: &types.FunctionCode{ZipFile: zip}, Timeout: aws.Int32(60), MemorySize: aws.Int32(256)})
		event := map[string]string{"target": "fncall-target",
			"foreign": "arn:aws:lambda:" + region + ":999999999999:function:elsewhere"}
		var q *sqs.Client
		if tg.up != nil {
			q = sqs.New(sqs.Options{Region: region, BaseEndpoint: aws.String(tg.endpoints[0]), Credentials: creds(), RetryMaxAttempts: 1})
			if _, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("fncall-q")}); err != nil {
				t.Fatal(err)
			}
			event["queue"] = "fncall-q"
		}
		payload, _ := json.Marshal(event)
		out := invoke(t, c, &lambda.InvokeInput{FunctionName: aws.String("fncall"), Payload: payload})
		if out.FunctionError != nil {
			t.Fatalf("the function failed: %s\n%s", out.Payload, tg.log())
		}
		var got struct {
			Endpoint, Key, Account, Arn, Invoked, Foreign string
			Token, Sent                                   bool
		}
		if err := json.Unmarshal(out.Payload, &got); err != nil {
			t.Fatalf("%s: %v", out.Payload, err)
		}
		if got.Endpoint != "http://127.0.0.1:9002" || got.Key != "ASIA" || !got.Token {
			t.Errorf("environment: endpoint %q, key %q..., session token %v", got.Endpoint, got.Key, got.Token)
		}
		if got.Account != tg.accountID || got.Arn != "arn:aws:sts::"+tg.accountID+":assumed-role/kiln-function/fncall" {
			t.Errorf("STS from inside: account %s arn %s", got.Account, got.Arn)
		}
		if got.Invoked != `"v1"` {
			t.Errorf("invoke from inside: %q", got.Invoked)
		}
		if !strings.Contains(got.Foreign, "AccessDenied") {
			t.Errorf("another account's function from inside: %s", got.Foreign)
		}
		if q == nil {
			return
		}
		if !got.Sent {
			t.Fatalf("the function did not send: %s", out.Payload)
		}
		url, err := q.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("fncall-q")})
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			m, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: url.QueueUrl, WaitTimeSeconds: 2})
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Messages) > 0 {
				if body := aws.ToString(m.Messages[0].Body); body != "from fncall" {
					t.Fatalf("message %q", body)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the function's message is not in the queue")
			}
		}
	})
}
