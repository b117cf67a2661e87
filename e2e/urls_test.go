package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
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
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// nodeURLs is the Node function behind the function URL tests: a buffered
// echo of the URL event, and streaming handlers (awslambda.streamifyResponse).
const nodeURLs = `
export const echo = async (event) => ({
  statusCode: 201,
  headers: { 'content-type': 'application/json', 'x-path': event.rawPath },
  cookies: ['a=1', 'b=2; Path=/'],
  body: JSON.stringify(event),
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A function URL response with a prelude: status, headers, cookies; two
// chunks 2 s apart; an error after them when asked.
export const stream = awslambda.streamifyResponse(async (event, responseStream) => {
  const fail = (event.rawQueryString || '').includes('fail') || event.fail;
  if (event.requestContext) {
    responseStream = awslambda.HttpResponseStream.from(responseStream,
      { statusCode: 202, headers: { 'content-type': 'text/plain', 'x-streamed': 'yes' }, cookies: ['s=1'] });
  } else {
    responseStream.setContentType('text/plain');
  }
  responseStream.write('chunk 0\n');
  await sleep(2000);
  responseStream.write('chunk 1\n');
  if (fail) throw new Error('failed mid-stream');
  responseStream.end();
});

export const oops = async () => { throw new Error('oops'); };

// 25 MiB, past the 20 MiB a stream may carry.
export const big = awslambda.streamifyResponse(async (event, responseStream) => {
  const mb = Buffer.alloc(1 << 20, 120);
  for (let i = 0; i < 25; i++) {
    if (!responseStream.write(mb)) await new Promise((r) => responseStream.once('drain', r));
  }
  responseStream.end();
});
`

// goStreamer is an aws-lambda-go function URL handler that streams: two
// lines 2 s apart, behind a prelude the library writes.
const goStreamer = `package main

import (
	"context"
	"io"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, req events.LambdaFunctionURLRequest) (*events.LambdaFunctionURLStreamingResponse, error) {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte("go 0\n"))
			time.Sleep(2 * time.Second)
			pw.Write([]byte("go 1 " + req.RawPath + "\n"))
			pw.Close()
		}()
		return &events.LambdaFunctionURLStreamingResponse{StatusCode: 203, Headers: map[string]string{"content-type": "text/plain"},
			Cookies: []string{"g=1"}, Body: pr}, nil
	})
}
`

// expectStreamed reads a streamed function URL with curl as it arrives:
// two lines starting with prefix, the second (at least) the function's 2 s
// pause after the first (a buffered path would hand both over at once), and
// a chunked head holding want.
func expectStreamed(t *testing.T, url, prefix string, want []string) {
	t.Helper()
	cmd := exec.Command("curl", "-sS", "-N", "-i", "--max-time", "60", url)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	r := bufio.NewReader(stdout)
	var head strings.Builder
	var seen []time.Time
	for len(seen) < 2 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended early: %v; got %q after %d lines", err, head.String(), len(seen))
		}
		if strings.HasPrefix(line, prefix) {
			seen = append(seen, time.Now())
		} else {
			head.WriteString(line)
		}
	}
	if gap := seen[1].Sub(seen[0]); gap < time.Second {
		t.Fatalf("the chunks came %v apart: the response was buffered", gap)
	}
	for _, w := range append(want, "Transfer-Encoding: chunked") {
		if !strings.Contains(head.String(), w) {
			t.Errorf("streamed head lacks %q:\n%s", w, head.String())
		}
	}
}

// urlIDOf is the id in a FunctionUrl.
func urlIDOf(t *testing.T, functionURL string) string {
	t.Helper()
	u, err := url.Parse(functionURL)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := strings.Cut(u.Host, ".")
	if len(id) != 32 {
		t.Fatalf("FunctionUrl %s: id %q", functionURL, id)
	}
	return id
}

// curl runs curl and returns its output and exit code.
func curl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "--max-time", "60"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

// curlUntil repeats a curl until its output has want: a frontend sees a
// URL once its metadata watch brought the change (milliseconds).
func curlUntil(t *testing.T, want string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := curl(t, args...)
		if strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("curl %v: %q, want it to contain %q", args, out, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// publicURL creates a function URL of AuthType NONE and the statement
// Lambda requires before it answers anyone: lambda:InvokeFunctionUrl for
// "*" on FunctionUrlAuthType NONE.
func publicURL(t *testing.T, c *lambda.Client, in *lambda.CreateFunctionUrlConfigInput) *lambda.CreateFunctionUrlConfigOutput {
	t.Helper()
	in.AuthType = types.FunctionUrlAuthTypeNone
	out, err := c.CreateFunctionUrlConfig(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPermission(ctx, &lambda.AddPermissionInput{FunctionName: in.FunctionName, Qualifier: in.Qualifier,
		StatementId: aws.String("public-url"), Action: aws.String("lambda:InvokeFunctionUrl"), Principal: aws.String("*"),
		FunctionUrlAuthType: types.FunctionUrlAuthTypeNone}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFunctionURLs(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		zip := fntest.Zip(t, map[string][]byte{"index.mjs": []byte(nodeURLs)})
		for _, h := range []string{"echo", "stream", "big", "oops"} {
			createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("url-" + h), Runtime: types.Runtime(nodeRuntime()),
				Handler: aws.String("index." + h), Code: &types.FunctionCode{ZipFile: zip}, Timeout: aws.Int32(30)})
		}
		env := clientEnv(tg, t.TempDir(), nil)
		cli := func(args ...string) []byte {
			t.Helper()
			cmd := exec.Command(awsCLI, append(append([]string{"lambda"}, args...), "--endpoint-url", tg.endpoints[0], "--output", "json")...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("aws lambda %v: %v\n%s", args, err, out)
			}
			return out
		}
		var created struct{ FunctionUrl, AuthType string }
		json.Unmarshal(cli("create-function-url-config", "--function-name", "url-echo", "--auth-type", "NONE",
			"--cors", `{"AllowOrigins":["https://app.example"],"AllowMethods":["GET","POST"],"AllowHeaders":["x-custom"],"MaxAge":600}`), &created)
		id := urlIDOf(t, created.FunctionUrl)
		u, _ := url.Parse(created.FunctionUrl)
		host, port, _ := strings.Cut(u.Host, ":")
		// Public only once a statement lets anyone invoke it, as in Lambda.
		curlUntil(t, `{"Message":"Forbidden"}`, "-i", tg.endpoints[0]+"/lambda-url/"+id+"/")
		cli("add-permission", "--function-name", "url-echo", "--statement-id", "public-url", "--action", "lambda:InvokeFunctionUrl",
			"--principal", "*", "--function-url-auth-type", "NONE")

		t.Run("NONE", func(t *testing.T) {
			for _, ep := range tg.endpoints {
				// The path form, on every frontend.
				out := curlUntil(t, `"rawPath":"/a/b"`, "-i", "-X", "POST", ep+"/lambda-url/"+id+"/a/b?x=1&x=2", "-H", "Content-Type: application/json",
					"-H", "Cookie: c1=v1; c2=v2", "-H", "Origin: https://app.example", "-d", `{"hello":"url"}`)
				head, body, _ := strings.Cut(out, "\r\n\r\n")
				for _, want := range []string{"HTTP/1.1 201", "Set-Cookie: a=1", "Set-Cookie: b=2; Path=/", "X-Path: /a/b",
					"Access-Control-Allow-Origin: https://app.example"} {
					if !strings.Contains(head, want) {
						t.Errorf("head lacks %q:\n%s", want, head)
					}
				}
				var ev struct {
					Version, RouteKey, RawPath, RawQueryString, Body string
					Cookies                                          []string
					Headers, QueryStringParameters                   map[string]string
					IsBase64Encoded                                  bool
					RequestContext                                   struct {
						AccountID, APIID, DomainPrefix, Stage string
						HTTP                                  struct{ Method, Path string }
						Authorizer                            any
					}
				}
				if err := json.Unmarshal([]byte(body), &ev); err != nil {
					t.Fatalf("event %q: %v", body, err)
				}
				if ev.Version != "2.0" || ev.RouteKey != "$default" || ev.RawQueryString != "x=1&x=2" || ev.QueryStringParameters["x"] != "1,2" ||
					ev.Body != `{"hello":"url"}` || ev.IsBase64Encoded || strings.Join(ev.Cookies, "|") != "c1=v1|c2=v2" ||
					ev.Headers["content-type"] != "application/json" || ev.RequestContext.AccountID != tg.accountID ||
					ev.RequestContext.APIID != id || ev.RequestContext.HTTP.Method != "POST" || ev.RequestContext.Authorizer != nil {
					t.Fatalf("event: %+v", ev)
				}
			}
			// The host name form, as the FunctionUrl names it.
			out := curlUntil(t, `"rawPath":"/by-host"`, "--resolve", host+":"+port+":127.0.0.1", strings.TrimSuffix(created.FunctionUrl, "/")+"/by-host")
			if !strings.Contains(out, `"domainName":"`+u.Host+`"`) {
				t.Fatalf("by host: %s", out)
			}
			// A binary body arrives base64-encoded.
			out, _ = curl(t, tg.endpoints[0]+"/lambda-url/"+id+"/bin", "-H", "Content-Type: application/octet-stream", "--data-binary", "\x01\x02\x03")
			if !strings.Contains(out, `"body":"AQID"`) || !strings.Contains(out, `"isBase64Encoded":true`) {
				t.Fatalf("binary body: %s", out)
			}
			// CORS preflight: answered by Kiln, the function not invoked.
			out, _ = curl(t, "-i", "-X", "OPTIONS", tg.endpoints[0]+"/lambda-url/"+id+"/x", "-H", "Origin: https://app.example",
				"-H", "Access-Control-Request-Method: POST")
			for _, want := range []string{"HTTP/1.1 200", "Access-Control-Allow-Origin: https://app.example", "Access-Control-Allow-Methods: GET,POST",
				"Access-Control-Allow-Headers: x-custom", "Access-Control-Max-Age: 600"} {
				if !strings.Contains(out, want) {
					t.Errorf("preflight lacks %q:\n%s", want, out)
				}
			}
		})

		t.Run("AWS_IAM", func(t *testing.T) {
			cli("update-function-url-config", "--function-name", "url-echo", "--auth-type", "AWS_IAM")
			target := tg.endpoints[len(tg.endpoints)-1] + "/lambda-url/" + id + "/signed?q=1"
			deadline := time.Now().Add(30 * time.Second)
			for {
				out, _ := curl(t, "-i", target)
				if strings.HasPrefix(out, "HTTP/1.1 403") && strings.Contains(out, `{"Message":"Forbidden"}`) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("unsigned request to an AWS_IAM URL: %s", out)
				}
				time.Sleep(200 * time.Millisecond)
			}
			out, _ := curl(t, "--aws-sigv4", "aws:amz:"+region+":lambda", "--user", accessKeyID+":"+secretAccessKey, target)
			if !strings.Contains(out, `"accessKey":"`+accessKeyID+`"`) || !strings.Contains(out, `"accountId":"`+tg.accountID+`"`) {
				t.Fatalf("signed request: %s", out)
			}
			out, _ = curl(t, "-i", "--aws-sigv4", "aws:amz:"+region+":lambda", "--user", accessKeyID+":wrong-secret", target)
			if !strings.HasPrefix(out, "HTTP/1.1 403") {
				t.Fatalf("wrong secret: %s", out)
			}
		})

		var streamURL struct{ FunctionUrl string }
		streamURL.FunctionUrl = aws.ToString(publicURL(t, c, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("url-stream"),
			InvokeMode: types.InvokeModeResponseStream}).FunctionUrl)
		streamPath := tg.endpoints[len(tg.endpoints)-1] + "/lambda-url/" + urlIDOf(t, streamURL.FunctionUrl) + "/s"

		t.Run("streamed URL", func(t *testing.T) {
			curlUntil(t, "chunk 1", streamPath) // the frontend knows the URL
			expectStreamed(t, streamPath, "chunk ", []string{"HTTP/1.1 202", "Content-Type: text/plain", "X-Streamed: yes", "Set-Cookie: s=1"})
		})

		// aws-lambda-go streams too: a handler returning
		// *events.LambdaFunctionURLStreamingResponse, whose body the library
		// posts chunked as it reads it.
		t.Run("streamed URL, aws-lambda-go", func(t *testing.T) {
			bin, err := fntest.BuildGo(goStreamer)
			if err != nil {
				t.Fatal(err)
			}
			createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("url-gostream"), Runtime: types.RuntimeProvidedal2023,
				Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: fntest.Zip(t, map[string][]byte{"bootstrap": bin})},
				Timeout: aws.Int32(30)})
			out := publicURL(t, c, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("url-gostream"), InvokeMode: types.InvokeModeResponseStream})
			p := tg.endpoints[len(tg.endpoints)-1] + "/lambda-url/" + urlIDOf(t, aws.ToString(out.FunctionUrl)) + "/from-go"
			curlUntil(t, "go 1 /from-go", p)
			expectStreamed(t, p, "go ", []string{"HTTP/1.1 203", "Content-Type: text/plain", "Set-Cookie: g=1"})
		})

		t.Run("mid-stream error", func(t *testing.T) {
			out, code := curl(t, streamPath+"?fail")
			if out != "chunk 0\nchunk 1\n" || code != 18 { // 18: the transfer ended before the body did
				t.Fatalf("curl got %q, exit %d; want both chunks and exit 18", out, code)
			}
		})

		t.Run("InvokeWithResponseStream", func(t *testing.T) {
			for _, tc := range []struct {
				payload, want, errorCode string
			}{{`{}`, "chunk 0\nchunk 1\n", ""}, {`{"fail":true}`, "chunk 0\nchunk 1\n", "Error"}} {
				out, err := c.InvokeWithResponseStream(ctx, &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String("url-stream"),
					Payload: []byte(tc.payload), LogType: types.LogTypeTail})
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				var complete *types.InvokeWithResponseStreamCompleteEvent
				for ev := range out.GetStream().Events() {
					switch e := ev.(type) {
					case *types.InvokeWithResponseStreamResponseEventMemberPayloadChunk:
						got.Write(e.Value.Payload)
					case *types.InvokeWithResponseStreamResponseEventMemberInvokeComplete:
						complete = &e.Value
					}
				}
				if err := out.GetStream().Close(); err != nil {
					t.Fatal(err)
				}
				if got.String() != tc.want || complete == nil || aws.ToString(complete.ErrorCode) != tc.errorCode ||
					aws.ToString(complete.LogResult) == "" || aws.ToString(out.ExecutedVersion) != "$LATEST" {
					t.Fatalf("payload %q, complete %+v", got.String(), complete)
				}
				if tc.errorCode != "" && !strings.Contains(aws.ToString(complete.ErrorDetails), "failed mid-stream") {
					t.Fatalf("error details %q", aws.ToString(complete.ErrorDetails))
				}
			}
			// A function that times out mid-stream: what it wrote, then the timeout.
			createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("url-timeout"), Runtime: types.Runtime(nodeRuntime()),
				Handler: aws.String("index.stream"), Code: &types.FunctionCode{ZipFile: zip}, Timeout: aws.Int32(1)})
			tout, err := c.InvokeWithResponseStream(ctx, &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String("url-timeout")})
			if err != nil {
				t.Fatal(err)
			}
			var partial bytes.Buffer
			var timedOut *types.InvokeWithResponseStreamCompleteEvent
			for ev := range tout.GetStream().Events() {
				switch e := ev.(type) {
				case *types.InvokeWithResponseStreamResponseEventMemberPayloadChunk:
					partial.Write(e.Value.Payload)
				case *types.InvokeWithResponseStreamResponseEventMemberInvokeComplete:
					timedOut = &e.Value
				}
			}
			if partial.String() != "chunk 0\n" || timedOut == nil || aws.ToString(timedOut.ErrorCode) != "Sandbox.Timedout" {
				t.Fatalf("timed out mid-stream: %q %+v", partial.String(), timedOut)
			}
			// A buffered function (aws-lambda-go) answers in one chunk.
			createToolkit(t, c, "url-go")
			out, err := c.InvokeWithResponseStream(ctx, &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String("url-go"),
				Payload: []byte(`{"action":"version"}`)})
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			for ev := range out.GetStream().Events() {
				if e, ok := ev.(*types.InvokeWithResponseStreamResponseEventMemberPayloadChunk); ok {
					got.Write(e.Value.Payload)
				}
			}
			if got.String() != `"v1"` {
				t.Fatalf("buffered function through the stream: %q", got.String())
			}
		})

		t.Run("boto3", func(t *testing.T) {
			// Debian bookworm's boto3 (1.26.27) predates InvokeWithResponseStream:
			// AWS_DATA_PATH gives it the operation's part of a later botocore's
			// Lambda model (testdata/botocore, from botocore 1.43.11, shapes
			// unchanged); the event stream is decoded by its own botocore.
			env := append(clientEnv(tg, t.TempDir(), nil), "AWS_DATA_PATH="+filepath.Join(moduleRoot(t), "e2e", "testdata", "botocore"))
			runScript(t, tg.log, 60*time.Second, env, python, filepath.Join(moduleRoot(t), "e2e", "stream_test.py"), tg.endpoints[0], "url-stream")
		})

		t.Run("errors", func(t *testing.T) {
			out := publicURL(t, c, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("url-oops")})
			oops := tg.endpoints[0] + "/lambda-url/" + urlIDOf(t, aws.ToString(out.FunctionUrl)) + "/"
			// A function error is a 502, its details not shown.
			got := curlUntil(t, "HTTP/1.1 502", "-i", oops)
			if !strings.Contains(got, `{"Message":"Internal Server Error"}`) || strings.Contains(got, "oops") {
				t.Fatalf("function error: %s", got)
			}
			// A throttle is a 429.
			if _, err := c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("url-oops"),
				ReservedConcurrentExecutions: aws.Int32(0)}); err != nil {
				t.Fatal(err)
			}
			got = curlUntil(t, "HTTP/1.1 429", "-i", oops)
			if !strings.Contains(got, "X-Amzn-Errortype: TooManyRequestsException") {
				t.Fatalf("throttle: %s", got)
			}
			// A body past 6 MB is refused before any invoke.
			big := filepath.Join(t.TempDir(), "big")
			if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 6<<20+1), 0o644); err != nil {
				t.Fatal(err)
			}
			got, _ = curl(t, "-i", "-H", "Content-Type: text/plain", "--data-binary", "@"+big, tg.endpoints[0]+"/lambda-url/"+id+"/")
			if !strings.HasPrefix(got, "HTTP/1.1 413") {
				t.Fatalf("7 MB body: %.300s", got)
			}
		})

		t.Run("hostile", func(t *testing.T) {
			// An id that does not exist, and one that is not an id.
			for _, p := range []string{"/lambda-url/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/", "/lambda-url/not-an-id/x"} {
				out, _ := curl(t, "-i", "--path-as-is", tg.endpoints[0]+p)
				if !strings.HasPrefix(out, "HTTP/1.1 404") || !strings.Contains(out, `{"Message":"Not Found"}`) ||
					!strings.Contains(out, "X-Amzn-Errortype: ResourceNotFoundException") {
					t.Fatalf("%s: %s", p, out)
				}
			}
			// Headers past the server's 1 MiB: refused, and Kiln serves on.
			req, _ := http.NewRequest(http.MethodGet, tg.endpoints[0]+"/lambda-url/"+id+"/", nil)
			req.Header.Set("X-Huge", strings.Repeat("h", 2<<20))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
					t.Fatalf("2 MiB of headers: %s", resp.Status)
				}
			}
			// A streaming function past 20 MiB: the caller gets 20 MiB and a
			// cut; the SDK gets Lambda's error at the end.
			bigOut := publicURL(t, c, &lambda.CreateFunctionUrlConfigInput{FunctionName: aws.String("url-big"), InvokeMode: types.InvokeModeResponseStream})
			bigPath := tg.endpoints[0] + "/lambda-url/" + urlIDOf(t, aws.ToString(bigOut.FunctionUrl)) + "/"
			var n, code int
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				var out string
				out, code = curl(t, bigPath)
				n = len(out)
				if n > 1000 || time.Now().After(deadline) {
					break
				}
			}
			if n != 20<<20 || code != 18 {
				t.Fatalf("over the limit: %d bytes, curl exit %d; want %d and 18", n, code, 20<<20)
			}
			out, err := c.InvokeWithResponseStream(ctx, &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String("url-big")})
			if err != nil {
				t.Fatal(err)
			}
			var complete *types.InvokeWithResponseStreamCompleteEvent
			total := 0
			for ev := range out.GetStream().Events() {
				switch e := ev.(type) {
				case *types.InvokeWithResponseStreamResponseEventMemberPayloadChunk:
					total += len(e.Value.Payload)
				case *types.InvokeWithResponseStreamResponseEventMemberInvokeComplete:
					complete = &e.Value
				}
			}
			if complete == nil || aws.ToString(complete.ErrorCode) != "Function.ResponseSizeTooLarge" || total > 20<<20 {
				t.Fatalf("over the limit through the SDK: %d bytes, %+v", total, complete)
			}
			// The model's enums hold on the streaming operation too.
			_, err = c.InvokeWithResponseStream(ctx, &lambda.InvokeWithResponseStreamInput{FunctionName: aws.String("url-stream"), LogType: "Everything"})
			if err == nil || !strings.Contains(err.Error(), "ValidationException") {
				t.Fatalf("LogType Everything: %v", err)
			}
			// Still serving.
			curlUntil(t, `"rawPath":"/after"`, "--aws-sigv4", "aws:amz:"+region+":lambda", "--user", accessKeyID+":"+secretAccessKey,
				tg.endpoints[0]+"/lambda-url/"+id+"/after")
		})
	})
}
