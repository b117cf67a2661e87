package eventinvoke_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest"
)

func TestEventInvokeConfigAPI(t *testing.T) {
	k := start(t, fast)
	k.toolkit("cfg")
	k.toolkit("other")
	if _, err := k.c.PublishVersion(ctx, &lambda.PublishVersionInput{FunctionName: aws.String("cfg")}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.c.CreateAlias(ctx, &lambda.CreateAliasInput{FunctionName: aws.String("cfg"), Name: aws.String("live"), FunctionVersion: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	fn := aws.String("cfg")

	// None yet.
	_, err := k.c.GetFunctionEventInvokeConfig(ctx, &lambda.GetFunctionEventInvokeConfigInput{FunctionName: fn})
	if msg := kilntest.APIError(t, err, "ResourceNotFoundException", 404); msg != "The function "+k.functionARN("cfg")+":$LATEST doesn't have an EventInvokeConfig" {
		t.Fatalf("message %q", msg)
	}
	_, err = k.c.UpdateFunctionEventInvokeConfig(ctx, &lambda.UpdateFunctionEventInvokeConfigInput{FunctionName: fn, MaximumRetryAttempts: aws.Int32(1)})
	kilntest.APIError(t, err, "ResourceNotFoundException", 404)
	_, err = k.c.DeleteFunctionEventInvokeConfig(ctx, &lambda.DeleteFunctionEventInvokeConfigInput{FunctionName: fn})
	kilntest.APIError(t, err, "ResourceNotFoundException", 404)

	// Put: what is sent, DestinationConfig always with both members.
	before := time.Now().Add(-time.Second)
	put, err := k.c.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, MaximumRetryAttempts: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt32(put.MaximumRetryAttempts) != 1 || put.MaximumEventAgeInSeconds != nil || aws.ToString(put.FunctionArn) != k.functionARN("cfg")+":$LATEST" ||
		put.DestinationConfig == nil || put.DestinationConfig.OnSuccess == nil || put.DestinationConfig.OnFailure == nil ||
		put.LastModified == nil || put.LastModified.Before(before) {
		t.Fatalf("put: %+v", put)
	}
	// Update changes what it is given and keeps the rest.
	up, err := k.c.UpdateFunctionEventInvokeConfig(ctx, &lambda.UpdateFunctionEventInvokeConfigInput{FunctionName: fn,
		MaximumEventAgeInSeconds: aws.Int32(120),
		DestinationConfig:        &types.DestinationConfig{OnFailure: &types.OnFailure{Destination: aws.String(k.queueARN("failures"))}}})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt32(up.MaximumRetryAttempts) != 1 || aws.ToInt32(up.MaximumEventAgeInSeconds) != 120 ||
		aws.ToString(up.DestinationConfig.OnFailure.Destination) != k.queueARN("failures") || aws.ToString(up.DestinationConfig.OnSuccess.Destination) != "" {
		t.Fatalf("update: %+v %+v", up, up.DestinationConfig)
	}
	got, err := k.c.GetFunctionEventInvokeConfig(ctx, &lambda.GetFunctionEventInvokeConfigInput{FunctionName: aws.String(k.functionARN("cfg"))})
	if err != nil || aws.ToInt32(got.MaximumEventAgeInSeconds) != 120 || aws.ToString(got.DestinationConfig.OnFailure.Destination) != k.queueARN("failures") {
		t.Fatalf("get: %+v %v", got, err)
	}
	// Put replaces: what it does not send is gone.
	put, err = k.c.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, MaximumEventAgeInSeconds: aws.Int32(60)})
	if err != nil || put.MaximumRetryAttempts != nil || aws.ToString(put.DestinationConfig.OnFailure.Destination) != "" {
		t.Fatalf("put again: %+v %v", put, err)
	}

	// Per qualifier: the version and the alias have their own.
	for _, q := range []*lambda.PutFunctionEventInvokeConfigInput{
		{FunctionName: fn, Qualifier: aws.String("1"), MaximumRetryAttempts: aws.Int32(0)},
		{FunctionName: aws.String("cfg:live"), MaximumRetryAttempts: aws.Int32(2),
			DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(k.functionARN("other"))}}},
	} {
		if _, err := k.c.PutFunctionEventInvokeConfig(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	list, err := k.c.ListFunctionEventInvokeConfigs(ctx, &lambda.ListFunctionEventInvokeConfigsInput{FunctionName: fn})
	if err != nil || len(list.FunctionEventInvokeConfigs) != 3 || list.NextMarker != nil {
		t.Fatalf("list: %+v %v", list, err)
	}
	var arns []string
	p := lambda.NewListFunctionEventInvokeConfigsPaginator(k.c, &lambda.ListFunctionEventInvokeConfigsInput{FunctionName: fn, MaxItems: aws.Int32(1)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page.FunctionEventInvokeConfigs {
			arns = append(arns, aws.ToString(c.FunctionArn))
		}
	}
	if strings.Join(arns, " ") != k.functionARN("cfg")+":$LATEST "+k.functionARN("cfg")+":1 "+k.functionARN("cfg")+":live" {
		t.Fatalf("paged list: %v", arns)
	}
	_, err = k.c.ListFunctionEventInvokeConfigs(ctx, &lambda.ListFunctionEventInvokeConfigsInput{FunctionName: fn, MaxItems: aws.Int32(51)})
	kilntest.APIError(t, err, "ValidationException", 400)

	// Delete one qualifier's.
	if _, err := k.c.DeleteFunctionEventInvokeConfig(ctx, &lambda.DeleteFunctionEventInvokeConfigInput{FunctionName: fn, Qualifier: aws.String("1")}); err != nil {
		t.Fatal(err)
	}
	_, err = k.c.GetFunctionEventInvokeConfig(ctx, &lambda.GetFunctionEventInvokeConfigInput{FunctionName: fn, Qualifier: aws.String("1")})
	kilntest.APIError(t, err, "ResourceNotFoundException", 404)

	// Invalid configs, with Lambda's errors.
	dest := func(onSuccess, onFailure string) *types.DestinationConfig {
		d := &types.DestinationConfig{}
		if onSuccess != "" {
			d.OnSuccess = &types.OnSuccess{Destination: aws.String(onSuccess)}
		}
		if onFailure != "" {
			d.OnFailure = &types.OnFailure{Destination: aws.String(onFailure)}
		}
		return d
	}
	for _, tc := range []struct {
		in       lambda.PutFunctionEventInvokeConfigInput
		typ      string
		status   int
		contains string
	}{
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn}, "InvalidParameterValueException", 400, "You must specify at least one of error handling or destination setting."},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, MaximumRetryAttempts: aws.Int32(3)}, "ValidationException", 400, "Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: Member must have value less than or equal to 2"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, MaximumRetryAttempts: aws.Int32(-1)}, "ValidationException", 400, "greater than or equal to 0"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, MaximumEventAgeInSeconds: aws.Int32(59)}, "ValidationException", 400, "Value '59' at 'maximumEventAgeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 60"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, MaximumEventAgeInSeconds: aws.Int32(21601)}, "ValidationException", 400, "less than or equal to 21600"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, DestinationConfig: dest("not-an-arn", "")}, "ValidationException", 400, "at 'destinationConfig.onSuccess.destination' failed to satisfy constraint: Member must satisfy regular expression pattern"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, DestinationConfig: dest("", "arn:aws:sns:us-east-1:"+k.s.Identity.AccountID+":topic")}, "InvalidParameterValueException", 400,
			"The provided destination config DestinationConfig(onSuccess=null, onFailure=OnFailure(destination=arn:aws:sns:us-east-1:" + k.s.Identity.AccountID + ":topic)) is invalid. Kiln delivers to Kiln functions"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, DestinationConfig: dest("arn:aws:events:us-east-1:"+k.s.Identity.AccountID+":event-bus/default", "")}, "InvalidParameterValueException", 400, "not to events ARNs"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, DestinationConfig: dest(k.queueARN("q.fifo"), "")}, "InvalidParameterValueException", 400, "not FIFO queues"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, DestinationConfig: dest("arn:aws:sqs:us-east-1:999999999999:elsewhere", "")}, "InvalidParameterValueException", 400, "only to destinations in the function's own account"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, DestinationConfig: dest("", k.functionARN("cfg"))}, "InvalidParameterValueException", 400, "You can't specify the function as a destination for itself."},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, DestinationConfig: dest(k.functionARN("nobody"), "")}, "InvalidParameterValueException", 400, "The destination ARN " + k.functionARN("nobody") + " is invalid."},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("nobody"), MaximumRetryAttempts: aws.Int32(1)}, "ResourceNotFoundException", 404, "Function not found"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, Qualifier: aws.String("7"), MaximumRetryAttempts: aws.Int32(1)}, "ResourceNotFoundException", 404, "Function not found"},
		{lambda.PutFunctionEventInvokeConfigInput{FunctionName: fn, Qualifier: aws.String("nolias"), MaximumRetryAttempts: aws.Int32(1)}, "ResourceNotFoundException", 404, "Function not found"},
	} {
		_, err := k.c.PutFunctionEventInvokeConfig(ctx, &tc.in)
		if msg := kilntest.APIError(t, err, tc.typ, tc.status); !strings.Contains(msg, tc.contains) {
			t.Errorf("message %q lacks %q", msg, tc.contains)
		}
	}

	// Dead-letter queues: Kiln queues only.
	_, err = k.c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: fn,
		DeadLetterConfig: &types.DeadLetterConfig{TargetArn: aws.String("arn:aws:sns:us-east-1:" + k.s.Identity.AccountID + ":topic")}})
	if msg := kilntest.APIError(t, err, "InvalidParameterValueException", 400); !strings.Contains(msg, "Kiln delivers to") {
		t.Errorf("dead-letter message %q", msg)
	}
	_, err = k.c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: fn,
		DeadLetterConfig: &types.DeadLetterConfig{TargetArn: aws.String(k.functionARN("other"))}})
	if msg := kilntest.APIError(t, err, "InvalidParameterValueException", 400); !strings.Contains(msg, "must be a Kiln queue") {
		t.Errorf("dead-letter message %q", msg)
	}
	cfg, err := k.c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: fn,
		DeadLetterConfig: &types.DeadLetterConfig{TargetArn: aws.String(k.queueARN("dlq"))}})
	if err != nil || aws.ToString(cfg.DeadLetterConfig.TargetArn) != k.queueARN("dlq") {
		t.Fatalf("dead-letter queue: %+v %v", cfg, err)
	}

	// Deleting the function deletes its configs.
	if _, err := k.c.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: fn}); err != nil {
		t.Fatal(err)
	}
	_, err = k.c.GetFunctionEventInvokeConfig(ctx, &lambda.GetFunctionEventInvokeConfigInput{FunctionName: fn})
	kilntest.APIError(t, err, "ResourceNotFoundException", 404)
	_, err = k.c.ListFunctionEventInvokeConfigs(ctx, &lambda.ListFunctionEventInvokeConfigsInput{FunctionName: fn})
	kilntest.APIError(t, err, "ResourceNotFoundException", 404)
}

// Event payloads are limited to 1 MB (RequestEntityTooLargeException, 413), sync
// ones to 6 MB; a payload at the limit is queued and run.
func TestEventPayloadLimit(t *testing.T) {
	k := start(t, fast)
	k.toolkit("big")
	k.putConfig(&lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("big"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(k.queueARN("big-done"))}}})
	payload := func(n int) []byte { // a JSON string of n bytes
		b := bytes.Repeat([]byte("x"), n)
		b[0], b[n-1] = '"', '"'
		return b
	}
	_, err := k.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("big"), InvocationType: types.InvocationTypeEvent, Payload: payload(1<<20 + 1)})
	kilntest.APIError(t, err, "RequestEntityTooLargeException", 413)

	out, err := k.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("big"), InvocationType: types.InvocationTypeEvent, Payload: payload(1 << 20)})
	if err != nil || out.StatusCode != 202 {
		t.Fatalf("1 MB event: %v", err)
	}
	r := k.records("big-done", 1)[0]
	if len(r.RequestPayload) != 1<<20 || len(r.ResponsePayload) != 1<<20 {
		t.Fatalf("record of the 1 MB event: request %d bytes, response %d", len(r.RequestPayload), len(r.ResponsePayload))
	}
	// Malformed JSON is refused before it is queued, as for sync invokes.
	_, err = k.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("big"), InvocationType: types.InvocationTypeEvent, Payload: []byte("{nope")})
	kilntest.APIError(t, err, "InvalidRequestContentException", 400)
	_, err = k.c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("missing"), InvocationType: types.InvocationTypeEvent})
	kilntest.APIError(t, err, "ResourceNotFoundException", 404)
}
