package logs_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	cwl "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	ltypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/agent"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/server"
)

// TestMain lets this test binary be the agent of the environments its
// tests start (the worker re-executes its own binary as the agent).
func TestMain(m *testing.M) {
	agent.Reexec()
	os.Exit(m.Run())
}

const awsCLI = "/usr/bin/aws"

// kiln is a real in-process Kiln with the toolkit function deployed.
type kiln struct {
	s      *server.Server
	lambda *lambda.Client
	logs   *cwl.Client
	fn     string
	group  string
}

func startKiln(t *testing.T, fn string) *kiln {
	t.Helper()
	s := kilntest.Start(t, server.Config{})
	k := &kiln{s: s, lambda: kilntest.Lambda(s), fn: fn, group: "/aws/lambda/" + fn,
		logs: cwl.New(cwl.Options{
			Region:           s.Region,
			BaseEndpoint:     aws.String(s.Endpoint),
			Credentials:      credentials.NewStaticCredentialsProvider(s.Identity.AccessKeyID, s.Identity.SecretAccessKey, ""),
			RetryMaxAttempts: 1,
		})}
	kilntest.MustCreate(t, k.lambda, &lambda.CreateFunctionInput{
		FunctionName: aws.String(fn),
		Runtime:      ltypes.RuntimeProvidedal2023,
		Handler:      aws.String("bootstrap"),
		Code:         &ltypes.FunctionCode{ZipFile: fntest.GoFunctionZip(t, fntest.ToolkitGo)},
		Timeout:      aws.Int32(3),
	})
	return k
}

func (k *kiln) print(t *testing.T, lines int, text string) {
	t.Helper()
	out, err := k.lambda.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(k.fn),
		Payload: fmt.Appendf(nil, `{"action":"print","lines":%d,"text":%q}`, lines, text)})
	if err != nil || out.FunctionError != nil || string(out.Payload) != `"done"` {
		t.Fatalf("invoke: %v %s", err, out.Payload)
	}
}

// waitFor polls FilterLogEvents until an event contains want (logs are
// stored asynchronously) and returns the group's events.
func (k *kiln) waitFor(t *testing.T, want string) []types.FilteredLogEvent {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		evs := filterAll(t, k.logs, &cwl.FilterLogEventsInput{LogGroupName: aws.String(k.group)})
		for _, e := range evs {
			if strings.Contains(aws.ToString(e.Message), want) {
				return evs
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event with %q in %s after 60 s: %q", want, k.group, messages(evs, filtMsg))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// endedLines checks that every message keeps its line's newline, as Lambda's
// do, and returns them without it.
func endedLines(t *testing.T, msgs []string) []string {
	t.Helper()
	out := make([]string, len(msgs))
	for i, m := range msgs {
		var ok bool
		if out[i], ok = strings.CutSuffix(m, "\n"); !ok {
			t.Fatalf("message %q does not end its line", m)
		}
	}
	return out
}

// checkInvokeLog asserts msgs are exactly one invoke's log: START, the
// printed lines, END and REPORT.
func checkInvokeLog(t *testing.T, msgs []string, printed ...string) {
	t.Helper()
	if len(msgs) != len(printed)+3 {
		t.Fatalf("log has %d lines, want %d: %q", len(msgs), len(printed)+3, msgs)
	}
	id, ok := strings.CutPrefix(msgs[0], "START RequestId: ")
	id, _, _ = strings.Cut(id, " ")
	if !ok || !strings.HasSuffix(msgs[0], " Version: $LATEST") {
		t.Fatalf("first line %q", msgs[0])
	}
	if !slices.Equal(msgs[1:len(msgs)-2], printed) {
		t.Fatalf("printed lines %q, want %q", msgs[1:len(msgs)-2], printed)
	}
	if msgs[len(msgs)-2] != "END RequestId: "+id {
		t.Fatalf("END line %q", msgs[len(msgs)-2])
	}
	report := msgs[len(msgs)-1]
	for _, want := range []string{"REPORT RequestId: " + id + "\t", "Duration: ", "Billed Duration: ", "Memory Size: 128 MB", "Max Memory Used: ", "Init Duration: "} {
		if !strings.Contains(report, want) {
			t.Fatalf("REPORT line %q lacks %q", report, want)
		}
	}
}

func TestLambdaLogsThroughSDK(t *testing.T) {
	k := startKiln(t, "logs-sdk")
	k.print(t, 3, "hello")
	evs := k.waitFor(t, "REPORT RequestId")
	checkInvokeLog(t, endedLines(t, messages(evs, filtMsg)), "hello", "hello", "hello")

	ds, err := k.logs.DescribeLogStreams(ctx, &cwl.DescribeLogStreamsInput{LogGroupName: aws.String(k.group),
		OrderBy: types.OrderByLastEventTime, Descending: aws.Bool(true)})
	if err != nil || len(ds.LogStreams) != 1 {
		t.Fatalf("streams: %v %+v", err, ds)
	}
	stream := aws.ToString(ds.LogStreams[0].LogStreamName)
	if want := time.Now().UTC().Format("2006/01/02") + "/[$LATEST]"; !strings.HasPrefix(stream, want) || aws.ToString(evs[0].LogStreamName) != stream {
		t.Fatalf("stream name %q, want %s...", stream, want)
	}
	got := getAll(t, k.logs, &cwl.GetLogEventsInput{LogGroupName: aws.String(k.group), LogStreamName: aws.String(stream), StartFromHead: aws.Bool(true)})
	checkInvokeLog(t, endedLines(t, got), "hello", "hello", "hello")
	// Without startFromHead: the newest events, in order.
	tail, err := k.logs.GetLogEvents(ctx, &cwl.GetLogEventsInput{LogGroupName: aws.String(k.group), LogStreamName: aws.String(stream), Limit: aws.Int32(2)})
	if err != nil || len(tail.Events) != 2 || !strings.HasPrefix(aws.ToString(tail.Events[1].Message), "REPORT ") {
		t.Fatalf("tail: %v %+v", err, tail)
	}
	hello := filterAll(t, k.logs, &cwl.FilterLogEventsInput{LogGroupName: aws.String(k.group), FilterPattern: aws.String("hello")})
	if len(hello) != 3 {
		t.Fatalf("filter hello: %q", messages(hello, filtMsg))
	}
	dg, err := k.logs.DescribeLogGroups(ctx, &cwl.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String("/aws/lambda/")})
	if err != nil || len(dg.LogGroups) != 1 || aws.ToString(dg.LogGroups[0].LogGroupName) != k.group || aws.ToInt64(dg.LogGroups[0].StoredBytes) == 0 {
		t.Fatalf("groups: %v %+v", err, dg)
	}

	// POST / with a target no service of Kiln serves (signed for Lambda,
	// the service Kiln checks the scope against when no target names one).
	req, _ := http.NewRequest("POST", k.s.Endpoint+"/", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810.ListTables")
	sum := sha256.Sum256([]byte("{}"))
	creds := aws.Credentials{AccessKeyID: k.s.Identity.AccessKeyID, SecretAccessKey: k.s.Identity.SecretAccessKey}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "lambda", k.s.Region, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"__type":"UnknownOperationException"`) {
		t.Fatalf("unknown target: %d %s", resp.StatusCode, body)
	}
}

// requireCLI skips without Debian's AWS CLI, except in CI, which must have it.
func requireCLI(t *testing.T) {
	t.Helper()
	if fi, err := os.Stat(awsCLI); err == nil && fi.Mode()&0o111 != 0 {
		return
	}
	msg := "missing awscli (" + awsCLI + "); install it with: apt-get install -y awscli"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI must install it)")
	}
	t.Skip(msg)
}

// cliEnv is the CLI's whole environment: credentials, region and endpoint
// from the files Kiln wrote, nothing of the caller's AWS settings.
func cliEnv(t *testing.T, s *server.Server) []string {
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + t.TempDir(),
		"LANG=C.UTF-8",
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(s.DataDir, "credentials"),
		"AWS_CONFIG_FILE=" + filepath.Join(s.DataDir, "config"),
		"AWS_PAGER=",
		"AWS_EC2_METADATA_DISABLED=true",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1", // tail --follow's lines reach the pipe at once
	}
}

func TestLambdaLogsThroughCLI(t *testing.T) {
	requireCLI(t)
	k := startKiln(t, "logs-cli")
	env := cliEnv(t, k.s)
	aws := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(awsCLI, append(args, "--endpoint-url", k.s.Endpoint)...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("aws %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
		return string(out)
	}
	k.print(t, 3, "hello")
	k.waitFor(t, "REPORT RequestId")

	// aws logs tail: the invoke's log, one event a line (short format:
	// "2026-01-02T03:04:05 message").
	out := aws("logs", "tail", k.group, "--format", "short")
	var msgs []string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		_, m, _ := strings.Cut(l, " ")
		msgs = append(msgs, m)
	}
	// The CLI strips each message's trailing whitespace (REPORT ends in a tab).
	checkInvokeLog(t, msgs, "hello", "hello", "hello")

	// aws logs filter-log-events
	var fle struct {
		Events []struct {
			LogStreamName string `json:"logStreamName"`
			Message       string `json:"message"`
			EventID       string `json:"eventId"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(aws("logs", "filter-log-events", "--log-group-name", k.group, "--filter-pattern", `"hello"`, "--output", "json")), &fle); err != nil {
		t.Fatal(err)
	}
	if len(fle.Events) != 3 || fle.Events[0].Message != "hello\n" || !strings.Contains(fle.Events[0].LogStreamName, "/[$LATEST]") {
		t.Fatalf("filter-log-events: %+v", fle)
	}

	// aws logs describe-log-streams and get-log-events
	var dls struct {
		LogStreams []struct {
			LogStreamName      string `json:"logStreamName"`
			LastEventTimestamp int64  `json:"lastEventTimestamp"`
		} `json:"logStreams"`
	}
	if err := json.Unmarshal([]byte(aws("logs", "describe-log-streams", "--log-group-name", k.group, "--order-by", "LastEventTime", "--descending", "--output", "json")), &dls); err != nil {
		t.Fatal(err)
	}
	if len(dls.LogStreams) != 1 || dls.LogStreams[0].LastEventTimestamp == 0 {
		t.Fatalf("describe-log-streams: %+v", dls)
	}
	var gle struct {
		Events []struct {
			Message string `json:"message"`
		} `json:"events"`
		NextForwardToken string `json:"nextForwardToken"`
	}
	if err := json.Unmarshal([]byte(aws("logs", "get-log-events", "--log-group-name", k.group, "--log-stream-name", dls.LogStreams[0].LogStreamName, "--start-from-head", "--output", "json")), &gle); err != nil {
		t.Fatal(err)
	}
	msgs = msgs[:0]
	for _, e := range gle.Events {
		msgs = append(msgs, e.Message)
	}
	checkInvokeLog(t, endedLines(t, msgs), "hello", "hello", "hello")

	// aws logs tail --follow, while invoking: it shows what is there, then
	// polls (every 5 s) and shows the new invoke's lines.
	cmd := exec.Command(awsCLI, "logs", "tail", k.group, "--follow", "--since", "5m", "--format", "short", "--endpoint-url", k.s.Endpoint)
	cmd.Env = env
	follow := kilntest.Follow(t, cmd)
	await := func(want string) { t.Helper(); follow(want, 20*time.Second) }
	await("hello")
	t0 := time.Now()
	k.print(t, 1, "followed")
	await("followed")
	t.Logf("tail --follow showed a new invoke's line after %v", time.Since(t0).Round(time.Millisecond))
}
