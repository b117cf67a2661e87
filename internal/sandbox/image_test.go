package sandbox_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/flatten"
	"github.com/kiln-dev/kiln/internal/imagefs"
	"github.com/kiln-dev/kiln/internal/images"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/runtimes"
	"github.com/kiln-dev/kiln/internal/worker"
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

	// A first start and invoke read the image through FUSE: a 30 s timeout
	// leaves a loaded host room.
	fn := api.FunctionConfiguration{FunctionName: "img", PackageType: "Image", MemorySize: 128, Timeout: 30, Version: "$LATEST",
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
	// Python's start reads its standard library through FUSE, the image's
	// chunks not yet fetched: on a loaded host more than Lambda's 10 s init.
	w := worker.New(worker.Config{Region: "us-east-1", RuntimeDir: rt, Code: noCode{}, Images: mounter, Sandbox: linux(t),
		InitTimeout: time.Minute})
	t.Cleanup(w.Close)
	fn := api.FunctionConfiguration{FunctionName: "py", PackageType: "Image", MemorySize: 128, Timeout: 30, Version: "$LATEST",
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

// BenchmarkImageColdStart: a cold start (new environment, first invoke)
// whose handler reads 5% of a file of KILN_IMAGE_BENCH_MB MiB (64 by
// default), six ways, in interleaved rounds (each round starts one of each,
// its order turning), so that all see the same machine load:
//
//	zip:       a zip function, its code unpacked on the local disk (the
//	           worker ran it before, or kiln up, which unpacks at create)
//	zip-fetch: a zip function on a worker without its code: the zip read
//	           from the code bucket (a directory here), checked and unpacked
//	lazy:      the image mounted anew through imagefs, chunks fetched on
//	           read, on a worker that never ran it (its entrypoint prefetched)
//	recorded:  the same, on a worker that ran it before and unmounted it
//	           since (nothing mounted, nothing cached): the working set its
//	           last start recorded is prefetched
//	mounted:   the image already mounted and cached (another environment ran it)
//	unpack:    every chunk of the image fetched, decrypted and written out
//	           first, then run as a zip function
//
// It reports each kind's median start and its ratio to zip's, the median of
// each phase (mount, sandbox, runtime init, invoke) in the log, and the bytes
// a lazy start fetched. KILN_IMAGE_BENCH_ONLY=lazy,zip runs only those kinds
// (for a profile; the ratios are then to the first).
//
// go test ./internal/sandbox -run - -bench ImageColdStart -benchtime 10x
func BenchmarkImageColdStart(b *testing.B) {
	ctx := context.Background()
	mb := 64
	if s := os.Getenv("KILN_IMAGE_BENCH_MB"); s != "" {
		mb, _ = strconv.Atoi(s)
	}
	big := make([]byte, mb<<20)
	rand.Read(big)
	bootstrap := fntest.GoBootstrap(b, fntest.ReaderGo)
	st := imagestest.NewStore(b)
	imp, err := st.ImportImage(ctx, "123456789012", imagestest.Image(b, "amd64", v1.Config{Entrypoint: []string{"/var/task/bootstrap"}},
		imagestest.Layer(b, imagestest.File{Name: "var/task/bootstrap", Body: bootstrap, Mode: 0o755}, imagestest.File{Name: "var/task/big", Body: big})), "amd64")
	if err != nil {
		b.Fatal(err)
	}
	codeDir := b.TempDir()
	os.WriteFile(filepath.Join(codeDir, "bootstrap"), bootstrap, 0o555)
	os.WriteFile(filepath.Join(codeDir, "big"), big, 0o444)
	zip, err := fntest.ZipFiles(map[string][]byte{"bootstrap": bootstrap, "big": big})
	if err != nil {
		b.Fatal(err)
	}
	bucket := dirRemote(b.TempDir())
	zipSha := codestore.Digest(zip)
	zipHex, _ := codestore.HexOf(zipSha)
	bucket.Put(ctx, zipHex, zip)
	rt := filepath.Join(b.TempDir(), "runtimes")
	if err := runtimes.Install(rt); err != nil {
		b.Fatal(err)
	}
	code := dirCode{}
	fresh := &freshMounts{}
	w := worker.New(worker.Config{Region: "us-east-1", RuntimeDir: rt, Code: code, Images: fresh, Sandbox: linux(b)})
	b.Cleanup(w.Close)
	zipFn := func(dir string) api.FunctionConfiguration {
		code[dir] = dir
		return api.FunctionConfiguration{FunctionName: "reader", Runtime: "provided.al2023", Handler: "bootstrap",
			MemorySize: 1769, Timeout: 60, Version: "$LATEST", CodeSha256: dir}
	}
	imageFn := api.FunctionConfiguration{FunctionName: "reader", PackageType: "Image", MemorySize: 1769, Timeout: 60, Version: "$LATEST",
		KilnImage: &api.ImageCode{Manifest: imp.ManifestName}}
	// run starts fn's environment and invokes it once; t0 is when the start began.
	run := func(t0 time.Time, fn api.FunctionConfiguration) startPhases {
		fresh.took = 0
		info, err := w.Create(ctx, invoke.EnvSpec{Account: "123456789012", Function: fn})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		res, err := w.Invoke(ctx, info.ID, &invoke.Invocation{RequestID: "r", Payload: []byte(`{"path":"/var/task/big"}`)})
		if err != nil || res.ErrorType != "" {
			b.Fatalf("invoke: %v %s %s", err, res.ErrorType, res.Payload)
		}
		p := startPhases{total: time.Since(t0), mount: fresh.took, sandbox: info.Phases.Sandbox, runtime: info.Phases.Runtime, invoke: time.Since(t1)}
		w.Destroy(ctx, info.ID)
		return p
	}
	// As on a worker where another environment ran the image: mounted,
	// its chunks and pages cached.
	warm := &imagefs.Mounter{Store: st.Store, Dir: b.TempDir()}
	defer warm.Close()
	_, _, keep, err := warm.Mount(ctx, "123456789012", imp.ManifestName)
	if err != nil {
		b.Fatal(err)
	}
	defer keep()
	fresh.mt = warm
	run(time.Now(), imageFn)
	var fetched, fetchedRecorded int64
	sets := &imagefs.WorkingSets{}
	recorded := func() startPhases {
		// A worker that ran the image before: its working set recorded,
		// nothing mounted, nothing cached.
		fresh.mt = &imagefs.Mounter{Store: st.Store, Dir: b.TempDir(), Sets: sets}
		defer fresh.mt.Close()
		p := run(time.Now(), imageFn)
		fetchedRecorded += fresh.mt.BytesFetched()
		return p
	}
	recorded()
	fetchedRecorded = 0
	type kind struct {
		name  string
		start func() startPhases
		got   []startPhases
	}
	kinds := []kind{
		{name: "zip", start: func() startPhases { return run(time.Now(), zipFn(codeDir)) }},
		{name: "lazy", start: func() startPhases {
			// As on a worker that never ran the image: nothing mounted, nothing cached.
			fresh.mt = &imagefs.Mounter{Store: st.Store, Dir: b.TempDir()}
			defer fresh.mt.Close()
			p := run(time.Now(), imageFn)
			fetched += fresh.mt.BytesFetched()
			return p
		}},
		{name: "zip-fetch", start: func() startPhases {
			t0 := time.Now()
			tmp := b.TempDir()
			defer os.RemoveAll(tmp) // a copy of the image each round: not kept
			cs, err := codestore.Open(codestore.Config{Dir: tmp, Remote: bucket, MaxZipped: 4 << 30, MaxUnzipped: 4 << 30})
			if err != nil {
				b.Fatal(err)
			}
			dir, err := cs.Dir(ctx, zipSha)
			if err != nil {
				b.Fatal(err)
			}
			return run(t0, zipFn(dir))
		}},
		{name: "recorded", start: recorded},
		{name: "mounted", start: func() startPhases { fresh.mt = warm; return run(time.Now(), imageFn) }},
		{name: "unpack", start: func() startPhases {
			t0 := time.Now()
			dir := b.TempDir()
			defer os.RemoveAll(dir)
			for _, e := range imp.Manifest.Entries {
				if e.Type != flatten.File {
					continue
				}
				var data []byte
				for _, r := range e.Chunks {
					p, err := st.Chunk(ctx, r)
					if err != nil {
						b.Fatal(err)
					}
					data = append(data, p...)
				}
				if err := os.WriteFile(filepath.Join(dir, filepath.Base(e.Path)), data, os.FileMode(e.Mode)); err != nil {
					b.Fatal(err)
				}
			}
			return run(t0, zipFn(dir))
		}},
	}
	if only := os.Getenv("KILN_IMAGE_BENCH_ONLY"); only != "" { // a profile of some kinds
		kinds = slices.DeleteFunc(kinds, func(k kind) bool { return !slices.Contains(strings.Split(only, ","), k.name) })
	}
	round := 0
	for b.Loop() {
		for i := range kinds {
			k := &kinds[(round+i)%len(kinds)]
			k.got = append(k.got, k.start())
		}
		round++
	}
	base := median(kinds[0].got, func(p startPhases) time.Duration { return p.total })
	for _, k := range kinds {
		m := func(f func(startPhases) time.Duration) float64 {
			return float64(median(k.got, f).Microseconds()) / 1000
		}
		total := m(func(p startPhases) time.Duration { return p.total })
		b.ReportMetric(total, k.name+"-p50-ms")
		b.ReportMetric(total*1000/float64(base.Microseconds()), k.name+"/"+kinds[0].name)
		b.Logf("%-8s p50 %7.1f ms: mount %.1f, sandbox %.1f (mount included), runtime %.1f, invoke %.1f", k.name, total,
			m(func(p startPhases) time.Duration { return p.mount }), m(func(p startPhases) time.Duration { return p.sandbox }),
			m(func(p startPhases) time.Duration { return p.runtime }), m(func(p startPhases) time.Duration { return p.invoke }))
	}
	for name, n := range map[string]float64{"lazy": float64(fetched) / float64(round), "recorded": float64(fetchedRecorded) / float64(round), "unpack": float64(mb << 20)} {
		if slices.ContainsFunc(kinds, func(k kind) bool { return k.name == name }) {
			b.ReportMetric(n/(1<<20), name+"-MiB-fetched")
		}
	}
}

// startPhases is where one cold start's time went.
type startPhases struct{ total, mount, sandbox, runtime, invoke time.Duration }

func median(ps []startPhases, f func(startPhases) time.Duration) time.Duration {
	d := make([]time.Duration, len(ps))
	for i, p := range ps {
		d[i] = f(p)
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// dirRemote is a code bucket in a directory (codestore.Remote), standing
// for the cluster's replicated one as the image store's directory does for
// its chunk bucket.
type dirRemote string

func (d dirRemote) Put(_ context.Context, hexDigest string, zip []byte) error {
	return os.WriteFile(filepath.Join(string(d), hexDigest), zip, 0o644)
}

func (d dirRemote) Get(_ context.Context, hexDigest string) ([]byte, error) {
	return os.ReadFile(filepath.Join(string(d), hexDigest))
}

// dirCode maps a function's CodeSha256 to a directory (worker.CodeSource).
type dirCode map[string]string

func (d dirCode) Dir(_ context.Context, sha string) (string, error) { return d[sha], nil }

// freshMounts is the Mounter of the moment (worker.ImageSource).
// It records how long the last Mount took.
type freshMounts struct {
	mt   *imagefs.Mounter
	took time.Duration
}

func (f *freshMounts) Mount(ctx context.Context, account, manifest string) (string, images.Config, func(), error) {
	t0 := time.Now()
	defer func() { f.took = time.Since(t0) }()
	return f.mt.Mount(ctx, account, manifest)
}
