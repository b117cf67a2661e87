package bench

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// URLs measures warm invokes of one function through a function URL
// (AuthType NONE, unsigned POST to its path form) against the same
// function through the invoke API (SigV4) and the plain-HTTP floor, in the
// same interleaved rounds.
func URLs(ctx context.Context, cfg Config, out io.Writer) error {
	if cfg.Invokes == 0 {
		cfg.Invokes = 5000
	}
	if cfg.Clients == nil {
		cfg.Clients = []int{1, 2, 8}
	}
	if cfg.Payload == nil {
		cfg.Payload = []byte(echoPayload)
	}
	dir, err := os.MkdirTemp("", "kiln-bench-url-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, _, err := echoKiln(ctx, out, cfg.Kiln, dir, cfg.Sandbox, "bench-url")
	if err != nil {
		return err
	}
	defer s.stop()
	cu, err := s.lambda.CreateFunctionUrlConfig(ctx, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("bench-url"),
		AuthType: types.FunctionUrlAuthTypeNone})
	if err == nil { // a public URL answers once a statement lets anyone invoke it
		_, err = s.lambda.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: aws.String("bench-url"), StatementId: aws.String("public-url"),
			Action: aws.String("lambda:InvokeFunctionUrl"), Principal: aws.String("*"), FunctionUrlAuthType: types.FunctionUrlAuthTypeNone})
	}
	if err != nil {
		return err
	}
	u, err := url.Parse(aws.ToString(cu.FunctionUrl))
	if err != nil {
		return err
	}
	id, _, _ := strings.Cut(u.Host, ".")
	floorURL, floorPID, stopFloor, err := startChild(ctx, []string{"floor"}, "floor: ")
	if err != nil {
		return err
	}
	defer stopFloor()
	floor := &client{url: floorURL, payload: cfg.Payload}
	api := signedClient(s.endpoint, "bench-url", cfg.Payload, 1)
	fu := &client{url: s.endpoint + "/lambda-url/" + id + "/", payload: cfg.Payload}
	targets := []target{floor.target("plain HTTP"), api.target("invoke API"), fu.target("function URL")}
	targets[0].cpu = func() cpuSplit { return treeCPU(floorPID) }
	targets[1].cpu = func() cpuSplit { return treeCPU(s.pid) }
	targets[2].cpu = targets[1].cpu // one kiln: its time during each target's own rounds
	fmt.Fprintf(out, "\nfunction URL vs invoke API: %d warm invokes per level in %d interleaved rounds, payload %d bytes\n", cfg.Invokes, rounds, len(cfg.Payload))
	return measureLevels(ctx, out, targets, cfg.Clients, cfg.Invokes, func(c int, st []Stats) {
		printRatio(out, c, "URL/floor", st[2], st[0])
		printRatio(out, c, "URL/API", st[2], st[1])
		fmt.Fprintf(out, "%-8d cpu per invoke: invoke API kiln %s + runtime %s; function URL kiln %s + runtime %s; plain HTTP server %s\n",
			c, round(st[1].CPU.Platform), round(st[1].CPU.Runtime), round(st[2].CPU.Platform), round(st[2].CPU.Runtime), round(st[0].CPU.Platform))
	})
}
