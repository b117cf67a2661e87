package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/api"
	"github.com/kiln-dev/kiln/imagefs"
	"github.com/kiln-dev/kiln/images/imagestest"
	"github.com/kiln-dev/kiln/invoke"
	"github.com/kiln-dev/kiln/kilntest/fntest"
	"github.com/kiln-dev/kiln/runtimes"
	"github.com/kiln-dev/kiln/worker"
)

// imageProbeGo reports what the function sees of its image root.
const imageProbeGo = `package main

import (
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func() (map[string]any, error) {
		wd, _ := os.Getwd()
		data, err := os.ReadFile("/app/data.txt")
		tmpErr := os.WriteFile("/tmp/scratch", []byte("x"), 0o644)
		rootErr := os.WriteFile("/app/new", []byte("x"), 0o644)
		_, hostErr := os.Stat("/usr/bin/env") // the host's /usr is not there
		str := func(err error) string { if err == nil { return "" }; return err.Error() }
		return map[string]any{
			"args": os.Args, "wd": wd, "data": string(data), "dataErr": str(err),
			"tmpErr": str(tmpErr), "rootErr": str(rootErr), "hostErr": str(hostErr),
			"fromImage": os.Getenv("FROM_IMAGE"), "handler": os.Getenv("_HANDLER"),
			"path": os.Getenv("PATH"), "api": os.Getenv("AWS_LAMBDA_RUNTIME_API"),
		}, nil
	})
}
`

// TestImageEnvironment runs an aws-lambda-go function whose image (not a zip)
// is the environment's root, presented lazily by imagefs.
func TestImageEnvironment(t *testing.T) {
	ctx := context.Background()
	store := imagestest.NewStore(t).Store
	img := imagestest.Image(t, "amd64",
		v1.Config{Entrypoint: []string{"/app/probe"}, Cmd: []string{"my.handler"}, WorkingDir: "/app", Env: []string{"FROM_IMAGE=yes", "PATH=/app/bin:/usr/bin"}},
		imagestest.Layer(t,
			imagestest.File{Name: "app/probe", Body: fntest.GoBootstrap(t, imageProbeGo), Mode: 0o755},
			imagestest.File{Name: "app/data.txt", Body: []byte("from the image")}))
	imp, err := store.ImportImage(ctx, "123456789012", img, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	mounter := &imagefs.Mounter{Store: store, Dir: t.TempDir()}
	t.Cleanup(func() { mounter.Close() })
	rt := filepath.Join(t.TempDir(), "runtimes")
	if err := runtimes.Install(rt); err != nil {
		t.Fatal(err)
	}
	w := worker.New(worker.Config{Region: "us-east-1", RuntimeDir: rt, Code: noCode{}, Images: mounter, Sandbox: linux(t)})
	t.Cleanup(w.Close)

	fn := api.FunctionConfiguration{FunctionName: "img", PackageType: "Image", MemorySize: 128, Timeout: 3, Version: "$LATEST",
		KilnImage: &api.ImageCode{Manifest: imp.ManifestName}}
	for _, tc := range []struct {
		name   string
		config *api.ImageConfig
		args   string
		wd     string
	}{
		{"image config", nil, `["/app/probe","my.handler"]`, "/app"},
		{"ImageConfig overrides", &api.ImageConfig{Command: []string{"other.handler"}, WorkingDirectory: "/tmp"}, `["/app/probe","other.handler"]`, "/tmp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn := fn
			if tc.config != nil {
				fn.ImageConfigResponse = &api.ImageConfigResponse{ImageConfig: tc.config}
			}
			info, err := w.Create(ctx, invoke.EnvSpec{Account: "123456789012", Function: fn})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Destroy(ctx, info.ID)
			res, err := w.Invoke(ctx, info.ID, &invoke.Invocation{RequestID: "r-" + tc.name, Payload: []byte("{}")})
			if err != nil || res.ErrorType != "" {
				t.Fatalf("invoke: %v %s %s", err, res.ErrorType, res.Payload)
			}
			var got map[string]any
			if err := json.Unmarshal(res.Payload, &got); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", res.Payload)
			args, _ := json.Marshal(got["args"])
			want := map[string]any{"wd": tc.wd, "data": "from the image", "dataErr": "", "tmpErr": "", "fromImage": "yes",
				"handler": tc.args[len(`["/app/probe","`) : len(tc.args)-2], "path": "/app/bin:/usr/bin", "api": "127.0.0.1:9001"}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if string(args) != tc.args {
				t.Errorf("args %s, want %s", args, tc.args)
			}
			if got["rootErr"] == "" || got["hostErr"] == "" {
				t.Errorf("wrote into the image (%q) or saw the host's /usr (%q)", got["rootErr"], got["hostErr"])
			}
		})
	}
}

type noCode struct{}

func (noCode) Dir(context.Context, string) (string, error) { return "", context.Canceled }

// TestImagePythonRuntime runs a Python handler in an image holding the
// host's python3.11 (interpreter, standard library, the libraries ldd names)
// and Kiln's Python runtime interface client as its ENTRYPOINT: an image's
// own runtime, on its own libraries, speaking the Runtime API.
func TestImagePythonRuntime(t *testing.T) {
	const python = "/usr/bin/python3.11"
	if _, err := os.Stat(python); err != nil {
		t.Skip("no " + python)
	}
	ctx := context.Background()
	store := imagestest.NewStore(t).Store
	out, err := exec.Command("ldd", python).Output()
	if err != nil {
		t.Fatal(err)
	}
	runtimeFiles := []imagestest.File{imagestest.HostFile(t, python)}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			runtimeFiles = append(runtimeFiles, imagestest.HostFile(t, f))
		}
	}
	skip := map[string]bool{"test": true, "__pycache__": true, "idlelib": true, "tkinter": true, "ensurepip": true,
		"lib2to3": true, "turtledemo": true, "pydoc_data": true}
	runtimeFiles = append(runtimeFiles, imagestest.HostFiles(t, "/usr/lib/python3.11", func(p string) bool {
		return skip[filepath.Base(p)] || strings.HasPrefix(filepath.Base(p), "config-")
	})...)
	rt := t.TempDir()
	if err := runtimes.Install(rt); err != nil {
		t.Fatal(err)
	}
	client, err := os.ReadFile(filepath.Join(rt, "python", "bootstrap.py"))
	if err != nil {
		t.Fatal(err)
	}
	img := imagestest.Image(t, "amd64",
		v1.Config{Entrypoint: []string{python, "/var/runtime/bootstrap.py"}, Cmd: []string{"app.handler"}},
		imagestest.Layer(t, runtimeFiles...),
		imagestest.Layer(t,
			imagestest.File{Name: "var/runtime/bootstrap.py", Body: client},
			imagestest.File{Name: "var/task/app.py", Body: []byte(`import os, sys
def handler(event, context):
    return {"event": event, "python": sys.executable, "request": context.aws_request_id,
            "data": open("/var/task/app.py").read(10), "host_usr_share": os.path.exists("/usr/share/doc")}
`)}))
	imp, err := store.ImportImage(ctx, "123456789012", img, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	mounter := &imagefs.Mounter{Store: store, Dir: t.TempDir()}
	t.Cleanup(func() { mounter.Close() })
	w := worker.New(worker.Config{Region: "us-east-1", RuntimeDir: rt, Code: noCode{}, Images: mounter, Sandbox: linux(t)})
	t.Cleanup(w.Close)
	fn := api.FunctionConfiguration{FunctionName: "py", PackageType: "Image", MemorySize: 128, Timeout: 10, Version: "$LATEST",
		KilnImage: &api.ImageCode{Manifest: imp.ManifestName}}
	info, err := w.Create(ctx, invoke.EnvSpec{Account: "123456789012", Function: fn})
	if err != nil {
		var ie *invoke.InitError
		if errors.As(err, &ie) {
			t.Fatalf("create: %v: %s\n%s", err, ie.Document, ie.LogTail)
		}
		t.Fatal(err)
	}
	defer w.Destroy(ctx, info.ID)
	res, err := w.Invoke(ctx, info.ID, &invoke.Invocation{RequestID: "py-1", Payload: []byte(`{"n":1}`)})
	if err != nil || res.ErrorType != "" {
		t.Fatalf("invoke: %v %s %s\n%s", err, res.ErrorType, res.Payload, res.LogTail)
	}
	var got map[string]any
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"python": python, "request": "py-1", "data": "import os,", "host_usr_share": false}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (%s)", k, got[k], v, res.Payload)
		}
	}
}
