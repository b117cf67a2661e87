package e2e

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// layerZip packs name → content; names in exec are executable.
func layerZip(t *testing.T, files map[string][]byte, exec ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.SetMode(0o644)
		for _, e := range exec {
			if e == name {
				h.SetMode(0o755)
			}
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const layerTool = `package main

import (
	"fmt"
	"os"
)

func main() { fmt.Println("kiln-layer-tool ran with", os.Args[1:]) }
`

const layeredHandler = `import os, subprocess, kiln_layer_lib

def handler(event, context):
    tool = subprocess.run(["kiln-layer-tool", "x"], capture_output=True, text=True)
    try:
        open("/opt/written", "w")
        writable = True
    except OSError:
        writable = False
    return {
        "greeting": kiln_layer_lib.greet("kiln"),
        "tool": tool.stdout.strip(),
        "shared": open("/opt/shared.txt").read(),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "opt_writable": writable,
    }
`

// TestLayers: a Python library layer and a binary layer, published and
// shared with the Go SDK; a Python function that uses both imports the one
// and runs the other from /opt, in their order, through every endpoint.
func TestLayers(t *testing.T) {
	tool := fntest.GoBootstrap(t, layerTool)
	runtime := pythonRuntime(t)
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		lib, err := c.PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("e2e-pylib"),
			Content: &types.LayerVersionContentInput{ZipFile: layerZip(t, map[string][]byte{
				"python/kiln_layer_lib.py": []byte("def greet(name):\n    return 'hello ' + name + ' from a layer'\n"),
				"shared.txt":               []byte("pylib"),
			})},
			CompatibleRuntimes: []types.Runtime{runtime}})
		if err != nil {
			t.Fatal(err)
		}
		bin, err := c.PublishLayerVersion(ctx, &lambda.PublishLayerVersionInput{LayerName: aws.String("e2e-tools"),
			Content: &types.LayerVersionContentInput{ZipFile: layerZip(t, map[string][]byte{"bin/kiln-layer-tool": tool, "shared.txt": []byte("tools")},
				"bin/kiln-layer-tool")}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddLayerVersionPermission(ctx, &lambda.AddLayerVersionPermissionInput{LayerName: aws.String("e2e-tools"),
			VersionNumber: aws.Int64(bin.Version), StatementId: aws.String("everyone"), Action: aws.String("lambda:GetLayerVersion"),
			Principal: aws.String("*")}); err != nil {
			t.Fatal(err)
		}
		list, err := c.ListLayers(ctx, &lambda.ListLayersInput{CompatibleRuntime: runtime})
		if err != nil || len(list.Layers) != 1 || aws.ToString(list.Layers[0].LayerName) != "e2e-pylib" {
			t.Fatalf("ListLayers for %s: %+v %v", runtime, list, err)
		}

		createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("e2e-layered"), Runtime: runtime, Handler: aws.String("app.handler"),
			Code:   &types.FunctionCode{ZipFile: layerZip(t, map[string][]byte{"app.py": []byte(layeredHandler)})},
			Layers: []string{aws.ToString(lib.LayerVersionArn), aws.ToString(bin.LayerVersionArn)}, Timeout: aws.Int32(30)})
		for _, endpoint := range tg.endpoints {
			out := invoke(t, lambdaAt(endpoint), &lambda.InvokeInput{FunctionName: aws.String("e2e-layered")})
			var got struct {
				Greeting, Tool, Shared, Pythonpath string
				OptWritable                        bool `json:"opt_writable"`
			}
			if err := json.Unmarshal(out.Payload, &got); err != nil || out.FunctionError != nil {
				t.Fatalf("%s: %s %v\n%s", endpoint, out.Payload, err, tg.log())
			}
			if got.Greeting != "hello kiln from a layer" || got.Tool != "kiln-layer-tool ran with [x]" || got.Shared != "tools" || got.OptWritable ||
				got.Pythonpath != "/opt/python/lib/"+string(runtime)+"/site-packages:/opt/python" {
				t.Errorf("%s: %+v", endpoint, got)
			}
		}
		// The function lists its layers as Lambda does.
		fn, err := c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("e2e-layered")})
		if err != nil || len(fn.Configuration.Layers) != 2 || !strings.HasSuffix(aws.ToString(fn.Configuration.Layers[1].Arn), ":layer:e2e-tools:1") {
			t.Fatalf("GetFunction's layers: %+v %v", fn, err)
		}
	})
}

// TestAPIEdges: on every endpoint of both targets (a cluster's frontends
// proxy management calls to a control plane), a path of no operation is
// Lambda's UnknownOperationException, and each answer carries exactly one
// request ID.
func TestAPIEdges(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		for _, endpoint := range tg.endpoints {
			for _, tc := range []struct {
				method, path, typ string
				status            int
			}{
				{"GET", "/2099-01-01/no-such-operation", "UnknownOperationException", 404},
				{"GET", "/2015-03-31/functions/", "", 200},
				{"GET", "/2015-03-31/functions/e2e-no-such-function", "ResourceNotFoundException", 404},
				{"GET", "/2015-03-31/functions/?FunctionVersion=ALLX", "ValidationException", 400},
			} {
				req, _ := http.NewRequest(tc.method, endpoint+tc.path, nil)
				sum := sha256.Sum256(nil)
				if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: accessKeyID, SecretAccessKey: secretAccessKey},
					req, hex.EncodeToString(sum[:]), "lambda", region, time.Now()); err != nil {
					t.Fatal(err)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.status || resp.Header.Get("X-Amzn-ErrorType") != tc.typ {
					t.Errorf("%s %s%s: %d %q, want %d %q", tc.method, endpoint, tc.path, resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"), tc.status, tc.typ)
				}
				if ids := resp.Header.Values("X-Amzn-RequestId"); len(ids) != 1 || len(ids[0]) != 36 {
					t.Errorf("%s %s%s: request IDs %q, want one", tc.method, endpoint, tc.path, ids)
				}
			}
		}
	})
}
