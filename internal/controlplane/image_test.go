package controlplane_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/controlplane"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/nats-io/nats.go/jetstream"
)

// startWithImages is a control plane whose image functions import into a
// real chunk store, from go-containerregistry's in-process registry.
func startWithImages(t *testing.T) (*kiln, string) {
	k, reg, _ := startWithImageStore(t)
	return k, reg
}

func startWithImageStore(t *testing.T) (*kiln, string, imagestest.Store) {
	t.Helper()
	store := imagestest.NewStore(t)
	k := start(t, "", func(c *controlplane.Config) { c.Images = store.Store })
	return k, imagestest.Registry(t), store
}

func imageInput(name, uri string) *lambda.CreateFunctionInput {
	return &lambda.CreateFunctionInput{
		FunctionName: aws.String(name),
		Role:         aws.String(role),
		PackageType:  types.PackageTypeImage,
		Code:         &types.FunctionCode{ImageUri: aws.String(uri)},
	}
}

func TestImageFunction(t *testing.T) {
	ctx := context.Background()
	k, reg := startWithImages(t)
	defer k.stop()
	layer := func(v string) v1.Layer { return imagestest.Layer(t, imagestest.File{Name: "v", Body: []byte(v)}) }
	v1img := imagestest.Image(t, "amd64", v1.Config{Entrypoint: []string{"/bootstrap"}}, layer("1"))
	v2img := imagestest.Image(t, "amd64", v1.Config{Entrypoint: []string{"/bootstrap"}}, layer("2"))
	v1ref, v2ref := imagestest.Push(t, reg+"/fn:v1", v1img), imagestest.Push(t, reg+"/fn:v2", v2img)
	d1, _ := v1img.Digest()
	d2, _ := v2img.Digest()

	in := imageInput("img", reg+"/fn:v1")
	in.ImageConfig = &types.ImageConfig{Command: []string{"app.handler"}, WorkingDirectory: aws.String("/app")}
	out, err := k.client.CreateFunction(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if out.PackageType != types.PackageTypeImage || *out.CodeSha256 != d1.Hex || out.Runtime != "" ||
		out.ImageConfigResponse == nil || out.ImageConfigResponse.ImageConfig.Command[0] != "app.handler" {
		t.Fatalf("created %+v", out)
	}
	// The import runs after the answer, as Lambda's does.
	if out.State != types.StatePending || out.StateReasonCode != types.StateReasonCodeCreating || out.LastUpdateStatus != types.LastUpdateStatusInProgress {
		t.Fatalf("created: State %s (%s), LastUpdateStatus %s; want Pending (Creating), InProgress", out.State, out.StateReasonCode, out.LastUpdateStatus)
	}
	fntest.WaitActive(t, k.client, "img")
	get, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("img")})
	if err != nil {
		t.Fatal(err)
	}
	if *get.Code.RepositoryType != "ECR" || *get.Code.ImageUri != reg+"/fn:v1" || *get.Code.ResolvedImageUri != v1ref {
		t.Fatalf("code %+v", get.Code)
	}
	if c := get.Configuration; c.State != types.StateActive || c.StateReasonCode != "" || c.LastUpdateStatus != types.LastUpdateStatusSuccessful {
		t.Fatalf("imported: State %s (%s), LastUpdateStatus %s", c.State, c.StateReasonCode, c.LastUpdateStatus)
	}
	if *get.Configuration.ImageConfigResponse.ImageConfig.WorkingDirectory != "/app" {
		t.Fatalf("image config %+v", get.Configuration.ImageConfigResponse)
	}
	// Kiln's record of the image's manifest stays inside: Lambda's documents only.
	for _, path := range []string{"/2015-03-31/functions/img", "/2015-03-31/functions/img/configuration", "/2015-03-31/functions/",
		"/2015-03-31/functions/img/versions"} {
		status, _, body := k.raw("GET", path, "")
		if status != 200 || strings.Contains(body, "KilnImage") || strings.Contains(body, "Manifest") {
			t.Errorf("GET %s: %d %s", path, status, body)
		}
	}

	upd, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("img"), ImageUri: aws.String(reg + "/fn:v2"), Publish: true})
	if err != nil {
		t.Fatal(err)
	}
	if *upd.CodeSha256 != d2.Hex || *upd.Version != "1" || upd.State != types.StatePending {
		t.Fatalf("updated %+v", upd)
	}
	// While the import runs, the function takes no other change.
	_, err = k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("img"), Timeout: aws.Int32(9)})
	if err != nil { // else the import had already ended
		wantErr(t, err, "ResourceConflictException", 409, "An update is in progress for resource")
	}
	fntest.WaitUpdated(t, k.client, "img")
	get, err = k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("img"), Qualifier: aws.String("1")})
	if err != nil || *get.Code.ResolvedImageUri != v2ref || get.Configuration.State != types.StateActive {
		t.Fatalf("version 1: %v %+v", err, get)
	}
	get, err = k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("img")})
	if err != nil || *get.Code.ResolvedImageUri != v2ref || *get.Configuration.CodeSha256 != d2.Hex {
		t.Fatalf("$LATEST after the update: %v %+v", err, get)
	}

	cfgOut, err := k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("img"),
		ImageConfig: &types.ImageConfig{EntryPoint: []string{"/other"}}})
	if err != nil || cfgOut.ImageConfigResponse.ImageConfig.EntryPoint[0] != "/other" {
		t.Fatalf("update ImageConfig: %v %+v", err, cfgOut)
	}
	if _, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("img"), ZipFile: []byte("PK")}); err == nil ||
		!strings.Contains(err.Error(), "InvalidParameterValueException") {
		t.Fatalf("zip for an image function: %v", err)
	}
}

func TestImageFunctionErrors(t *testing.T) {
	ctx := context.Background()
	k, reg := startWithImages(t)
	defer k.stop()
	imagestest.Push(t, reg+"/arm:v1", imagestest.Image(t, "arm64", v1.Config{}, imagestest.Layer(t)))
	imagestest.Push(t, reg+"/dev:v1", imagestest.Image(t, "amd64", v1.Config{}, imagestest.Layer(t,
		imagestest.File{Name: "a/../../escape", Body: []byte("x")})))
	k.create("zipfn", bootstrapZip(t, "#!/bin/sh"))
	for _, tc := range []struct {
		name string
		in   *lambda.CreateFunctionInput
		want string
	}{
		{"bad uri", imageInput("f", "not a uri"), "Source image not a uri is not valid"},
		{"missing", imageInput("f", reg+"/nothing:here"), "does not exist. Provide a valid source image."},
		{"architecture", imageInput("f", reg+"/arm:v1"), "is not supported"},
		{"zip file", func() *lambda.CreateFunctionInput {
			in := imageInput("f", reg+"/arm:v1")
			in.Code.ZipFile = []byte("PK")
			return in
		}(), "Please don't provide ZipFile"},
		{"no uri", func() *lambda.CreateFunctionInput {
			in := imageInput("f", "")
			in.Code.ImageUri = nil
			return in
		}(), "ImageUri"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.client.CreateFunction(ctx, tc.in)
			wantErr(t, err, "InvalidParameterValueException", 400, tc.want)
		})
	}
	// The arm64 image works for an arm64 function.
	in := imageInput("armfn", reg+"/arm:v1")
	in.Architectures = []types.Architecture{types.ArchitectureArm64}
	if _, err := k.client.CreateFunction(ctx, in); err != nil {
		t.Fatal(err)
	}
	fntest.WaitActive(t, k.client, "armfn")
	// Hostile content shows once the layers are read, in the import: the
	// function is Failed with Lambda's InvalidImage, and the waiter fails.
	if _, err := k.client.CreateFunction(ctx, imageInput("hostile", reg+"/dev:v1")); err != nil {
		t.Fatal(err)
	}
	w := lambda.NewFunctionActiveV2Waiter(k.client, func(o *lambda.FunctionActiveV2WaiterOptions) { o.MinDelay = 50 * time.Millisecond })
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("hostile")}, time.Minute); err == nil {
		t.Fatal("the waiter saw a hostile image's function Active")
	}
	get, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("hostile")})
	if err != nil {
		t.Fatal(err)
	}
	if c := get.Configuration; c.State != types.StateFailed || c.StateReasonCode != types.StateReasonCodeInvalidImage ||
		!strings.Contains(*c.StateReason, "climbs out of the image root") || c.LastUpdateStatus != types.LastUpdateStatusFailed {
		t.Fatalf("hostile image: State %s (%s: %s), LastUpdateStatus %s", c.State, c.StateReasonCode, aws.ToString(c.StateReason), c.LastUpdateStatus)
	}
	_, err = k.client.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("zipfn"),
		ImageConfig: &types.ImageConfig{Command: []string{"x"}}})
	wantErr(t, err, "InvalidParameterValueException", 400, "ImageConfig is not supported for functions with package type Zip")
	_, err = k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("zipfn"), ImageUri: aws.String(reg + "/arm:v1")})
	wantErr(t, err, "InvalidParameterValueException", 400, "Please don't provide ImageUri")
}

// TestCollectImages: CollectCode deletes the chunks and manifest of an image
// no version uses any more, and keeps what versions use.
func TestCollectImages(t *testing.T) {
	ctx := context.Background()
	k, reg, store := startWithImageStore(t)
	defer k.stop()
	layer := func(seed byte) v1.Layer {
		return imagestest.Layer(t, imagestest.File{Name: "f", Body: bytes.Repeat([]byte{seed}, 100<<10)})
	}
	imagestest.Push(t, reg+"/fn:v1", imagestest.Image(t, "amd64", v1.Config{}, layer(1)))
	imagestest.Push(t, reg+"/fn:v2", imagestest.Image(t, "amd64", v1.Config{}, layer(2)))
	imagestest.Push(t, reg+"/fn:v3", imagestest.Image(t, "amd64", v1.Config{}, layer(3)))
	if _, err := k.client.CreateFunction(ctx, imageInput("img", reg+"/fn:v1")); err != nil {
		t.Fatal(err)
	}
	fntest.WaitActive(t, k.client, "img")
	js, err := jetstream.New(k.nc)
	if err != nil {
		t.Fatal(err)
	}
	md, err := metadata.Open(ctx, js, metadata.Config{})
	if err != nil {
		t.Fatal(err)
	}
	manifestOf := func(q string) string {
		out, err := md.Get(ctx, account, "img")
		if err != nil {
			t.Fatal(err)
		}
		if q == "" {
			return out.Latest.KilnImage.Manifest
		}
		return out.Versions[q].KilnImage.Manifest
	}
	m1 := manifestOf("")
	if _, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("img"), ImageUri: aws.String(reg + "/fn:v2"), Publish: true}); err != nil {
		t.Fatal(err)
	}
	fntest.WaitUpdated(t, k.client, "img")
	m2 := manifestOf("1")
	if _, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("img"), ImageUri: aws.String(reg + "/fn:v3")}); err != nil {
		t.Fatal(err)
	}
	fntest.WaitUpdated(t, k.client, "img")
	m3 := manifestOf("")
	n, err := k.svc.CollectCode(ctx, 0)
	if err != nil || n.Images.Blobs == 0 || n.Images.Bytes < 100<<10 {
		t.Fatalf("CollectCode: %+v, %v", n, err)
	}
	if _, err := store.Manifest(ctx, account, m1); err == nil {
		t.Error("v1's manifest, which no version uses, is still there")
	}
	for _, m := range []string{m2, m3} {
		man, err := store.Manifest(ctx, account, m)
		if err != nil {
			t.Fatalf("a used manifest was collected: %v", err)
		}
		for _, e := range man.Entries {
			for _, c := range e.Chunks {
				if _, err := store.Chunk(ctx, c); err != nil {
					t.Fatalf("a used chunk was collected: %v", err)
				}
			}
		}
	}
}

// hookedRegistry is go-containerregistry's registry behind hook, which
// answers a request itself by returning true.
func hookedRegistry(t *testing.T, hook func(w http.ResponseWriter, r *http.Request) bool) string {
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hook(w, r) {
			reg.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// gatedRegistry is a registry whose GETs of blob are held until release is
// closed (or the request is cancelled); blocked gets a value for each one
// held.
func gatedRegistry(t *testing.T, blob string) (host string, blocked chan struct{}, release chan struct{}) {
	blocked, release = make(chan struct{}, 16), make(chan struct{})
	host = hookedRegistry(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+blob) {
			blocked <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return true
			}
		}
		return false
	})
	return host, blocked, release
}

// TestImageImportFailures: an image whose layers the registry no longer
// serves, or refuses, once CreateFunction found it: the function is
// Failed with Lambda's ImageDeleted or ImageAccessDenied, and a code update
// that fails so leaves $LATEST Active on its old code, LastUpdateStatus
// Failed.
func TestImageImportFailures(t *testing.T) {
	ctx := context.Background()
	k, _ := startWithImages(t)
	defer k.stop()
	good := imagestest.Image(t, "amd64", v1.Config{}, imagestest.Layer(t, imagestest.File{Name: "f", Body: []byte("good")}))
	layer := imagestest.Layer(t, imagestest.File{Name: "f", Body: []byte("refused")})
	ld, _ := layer.Digest()
	var status atomic.Int32
	reg := hookedRegistry(t, func(w http.ResponseWriter, r *http.Request) bool {
		if s := int(status.Load()); s != 0 && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) {
			w.WriteHeader(s)
			return true
		}
		return false
	})
	imagestest.Push(t, reg+"/fn:good", good)
	imagestest.Push(t, reg+"/fn:bad", imagestest.Image(t, "amd64", v1.Config{}, layer))
	for _, tc := range []struct {
		status int
		code   types.StateReasonCode
	}{{http.StatusNotFound, types.StateReasonCodeImageDeleted}, {http.StatusForbidden, types.StateReasonCodeImageAccessDenied}} {
		status.Store(int32(tc.status))
		fn := "img-" + string(tc.code)
		if _, err := k.client.CreateFunction(ctx, imageInput(fn, reg+"/fn:bad")); err != nil {
			t.Fatal(err)
		}
		w := lambda.NewFunctionActiveV2Waiter(k.client, func(o *lambda.FunctionActiveV2WaiterOptions) { o.MinDelay = 50 * time.Millisecond })
		if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(fn)}, time.Minute); err == nil {
			t.Fatalf("%s: the waiter saw the function Active", fn)
		}
		get, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(fn)})
		if err != nil {
			t.Fatal(err)
		}
		if c := get.Configuration; c.State != types.StateFailed || c.StateReasonCode != tc.code {
			t.Fatalf("layer answered %d: State %s (%s: %s), want Failed (%s)", tc.status, c.State, c.StateReasonCode, aws.ToString(c.StateReason), tc.code)
		}
	}
	// An update that fails so: $LATEST keeps running its old image.
	if _, err := k.client.CreateFunction(ctx, imageInput("upd", reg+"/fn:good")); err != nil {
		t.Fatal(err)
	}
	fntest.WaitActive(t, k.client, "upd")
	if _, err := k.client.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("upd"), ImageUri: aws.String(reg + "/fn:bad")}); err != nil {
		t.Fatal(err)
	}
	w := lambda.NewFunctionUpdatedV2Waiter(k.client, func(o *lambda.FunctionUpdatedV2WaiterOptions) { o.MinDelay = 50 * time.Millisecond })
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("upd")}, time.Minute); err == nil {
		t.Fatal("the update waiter saw a failed update succeed")
	}
	gd, _ := good.Digest()
	get, err := k.client.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("upd")})
	if err != nil {
		t.Fatal(err)
	}
	if c := get.Configuration; c.State != types.StateActive || c.LastUpdateStatus != types.LastUpdateStatusFailed ||
		c.LastUpdateStatusReasonCode != types.LastUpdateStatusReasonCodeImageAccessDenied || *c.CodeSha256 != gd.Hex {
		t.Fatalf("after a failed update: State %s, LastUpdateStatus %s (%s), code %s; want Active, Failed (ImageAccessDenied), the old image",
			c.State, c.LastUpdateStatus, c.LastUpdateStatusReasonCode, *c.CodeSha256)
	}
}

// TestImageImportResumes: two control planes on the same metadata; the
// first imports an image (its layer download held). While it lives the
// second leaves the import alone, even past ImportStale (the first keeps
// beating); when the first stops, it hands the import over and the
// second redoes it at its next look. (A control plane killed, which hands
// nothing over, is cluster.TestControlPlaneKilledMidImport.)
func TestImageImportResumes(t *testing.T) {
	ctx := context.Background()
	store := imagestest.NewStore(t)
	var cfg controlplane.Config
	// The owner beats six times per ImportStale: 4 s leaves a loaded host's
	// stall of over 3 s before a live owner's import looks stale.
	k := start(t, "", func(c *controlplane.Config) { c.Images, c.ImportStale = store.Store, 4*time.Second; cfg = *c })
	defer k.stop()
	layer := imagestest.Layer(t, imagestest.File{Name: "bootstrap", Body: []byte("held")})
	ld, _ := layer.Digest()
	reg, blocked, release := gatedRegistry(t, ld.String())
	imagestest.Push(t, reg+"/fn:v1", imagestest.Image(t, "amd64", v1.Config{}, layer))
	for len(blocked) > 0 { // the push's own reads
		<-blocked
	}
	if _, err := k.client.CreateFunction(ctx, imageInput("img", reg+"/fn:v1")); err != nil {
		t.Fatal(err)
	}
	waitBlocked := func(why string) {
		t.Helper()
		select {
		case <-blocked:
		case <-time.After(30 * time.Second):
			t.Fatal(why)
		}
	}
	waitBlocked("the import never fetched the layer")
	second := controlplane.New(cfg)
	defer second.Close()
	time.Sleep(5 * time.Second) // past ImportStale: a live owner's import is not taken
	if len(blocked) != 0 {
		t.Fatal("the second control plane took over a live owner's import")
	}
	k.svc.Close() // stops the first, which hands its import over
	waitBlocked("the second control plane did not take the import over")
	close(release)
	k.srv.Close()
	k.svc = second
	k.srv = serve(k.svc)
	k.client = newClient(k.srv.URL, keyID, secret)
	fntest.WaitActive(t, k.client, "img")
}
