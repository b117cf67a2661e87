package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

const VERSION = "v1"

type event struct {
	Action string `json:"action"`
	Ms     int    `json:"ms"`
	Msg    string `json:"msg"`
	Code   int    `json:"code"`
	Bytes  int    `json:"bytes"`
	Name   string `json:"name"`
	Lines  int    `json:"lines"`
	Text   string `json:"text"`
}

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var e event
	json.Unmarshal(raw, &e)
	switch e.Action {
	case "sleep":
		time.Sleep(time.Duration(e.Ms) * time.Millisecond)
		return e, nil
	case "error":
		return nil, errors.New(e.Msg)
	case "panic":
		panic("toolkit panic")
	case "exit":
		os.Exit(e.Code)
	case "big":
		return strings.Repeat("x", e.Bytes), nil
	case "env":
		return os.Getenv(e.Name), nil
	case "context":
		lc, _ := lambdacontext.FromContext(ctx)
		deadline, _ := ctx.Deadline()
		return map[string]any{
			"requestId":    lc.AwsRequestID,
			"functionArn":  lc.InvokedFunctionArn,
			"functionName": lambdacontext.FunctionName,
			"version":      lambdacontext.FunctionVersion,
			"memory":       lambdacontext.MemoryLimitInMB,
			"logGroup":     lambdacontext.LogGroupName,
			"logStream":    lambdacontext.LogStreamName,
			"clientCustom": lc.ClientContext.Custom,
			"remainingMs":  time.Until(deadline).Milliseconds(),
		}, nil
	case "print":
		for i := 0; i < e.Lines; i++ {
			fmt.Println(e.Text)
		}
		return "done", nil
	case "version":
		return VERSION, nil
	}
	return raw, nil
}

func main() { lambda.Start(handle) }
