package cluster_test

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// A worker killed mid-stream: the caller of InvokeWithResponseStream has
// the chunk written before, then an InvokeComplete naming the failure (no
// hang, no silent end); the next streamed invoke runs on another worker.
func TestKillWorkerMidStream(t *testing.T) {
	out, err := exec.Command("/usr/bin/node", "--version").Output()
	if err != nil {
		t.Skip("no /usr/bin/node")
	}
	major, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(string(out)), "v"), ".")
	f := up(t, cluster.UpConfig{})
	c := client(f, 0)
	const app = `export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write('before\n');
  await new Promise((r) => setTimeout(r, event.wait));
  responseStream.write('after\n');
  responseStream.end();
});
`
	if _, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("streamer"), Runtime: types.Runtime("nodejs" + major + ".x"),
		Handler: aws.String("index.handler"), Role: aws.String(fntest.Role), Timeout: aws.Int32(30),
		Code: &types.FunctionCode{ZipFile: fntest.Zip(t, map[string][]byte{"index.mjs": []byte(app)})}}); err != nil {
		t.Fatal(err)
	}
	if err := lambda.NewFunctionActiveV2Waiter(c).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("streamer")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	stream := func(wait int) (*lambda.InvokeWithResponseStreamOutput, error) {
		return c.InvokeWithResponseStream(ctx, &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String("streamer"),
			Payload: []byte(`{"wait":` + strconv.Itoa(wait) + `}`)})
	}
	res, err := stream(20000)
	if err != nil {
		t.Fatal(err)
	}
	events := res.GetStream().Events()
	first := <-events
	if e, ok := first.(*types.InvokeWithResponseStreamResponseEventMemberPayloadChunk); !ok || string(e.Value.Payload) != "before\n" {
		t.Fatalf("first event %#v", first)
	}
	st, err := f.StatusWithEnvs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var workerName string
	for _, m := range st.Members {
		for _, ps := range m.Partitions {
			for _, e := range ps.EnvList {
				if ps.Leading && e.Key.Function == "streamer" {
					workerName = e.Worker
				}
			}
		}
	}
	if workerName == "" {
		t.Fatal("the streaming environment is not in the status")
	}
	if _, err := f.Kill(workerName); err != nil {
		t.Fatal(err)
	}
	var rest bytes.Buffer
	var complete *types.InvokeWithResponseStreamCompleteEvent
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case ev, ok := <-events:
			if !ok {
				done = true
				break
			}
			switch e := ev.(type) {
			case *types.InvokeWithResponseStreamResponseEventMemberPayloadChunk:
				rest.Write(e.Value.Payload)
			case *types.InvokeWithResponseStreamResponseEventMemberInvokeComplete:
				complete = &e.Value
			}
		case <-timeout:
			t.Fatal("the stream did not end after its worker was killed")
		}
	}
	if complete == nil {
		t.Fatalf("the stream ended without InvokeComplete after %q", rest.String())
	}
	t.Logf("killed %s mid-stream; complete: %s %s", workerName, aws.ToString(complete.ErrorCode), aws.ToString(complete.ErrorDetails))
	if rest.Len() != 0 || aws.ToString(complete.ErrorCode) != "Runtime.ExitError" ||
		!strings.Contains(aws.ToString(complete.ErrorDetails), "failed before the function returned") {
		t.Fatalf("after the kill: %q, %+v", rest.String(), complete)
	}
	// Served again, by another worker.
	res, err = stream(0)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for ev := range res.GetStream().Events() {
		if e, ok := ev.(*types.InvokeWithResponseStreamResponseEventMemberPayloadChunk); ok {
			all.Write(e.Value.Payload)
		}
	}
	if all.String() != "before\nafter\n" {
		t.Fatalf("after the worker's death: %q", all.String())
	}
}
