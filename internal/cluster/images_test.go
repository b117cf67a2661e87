package cluster_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// TestControlPlaneKilledMidImport: the control plane importing an image
// (its layer download held by the registry) is killed -9. The function
// stays Pending; once the dead owner has been silent for the stale time,
// the other control plane takes the import over, the function becomes
// Active, and a worker runs it, mounted lazily from the replicated bucket,
// its manifest's key unwrapped by the surviving control plane's key
// service (workers hold no image key).
func TestControlPlaneKilledMidImport(t *testing.T) {
	imagestest.RequireFUSE(t, true)
	layer := imagestest.Layer(t, imagestest.File{Name: "var/task/bootstrap", Body: fntest.GoBootstrap(t, fntest.ToolkitGo), Mode: 0o755})
	ld, _ := layer.Digest()
	blocked, release := make(chan struct{}, 16), make(chan struct{})
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) {
			blocked <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	imagestest.Push(t, host+"/toolkit:v1", imagestest.Image(t, "amd64", v1.Config{Entrypoint: []string{"/var/task/bootstrap"}}, layer))
	for len(blocked) > 0 { // the push's own reads
		<-blocked
	}

	f := up(t, cluster.UpConfig{ImageImportStale: 3 * time.Second})
	c := client(f, 0)
	out, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("img"), PackageType: types.PackageTypeImage,
		Code: &types.FunctionCode{ImageUri: aws.String(host + "/toolkit:v1")}, Role: aws.String(fntest.Role)})
	if err != nil {
		t.Fatal(err)
	}
	if out.State != types.StatePending {
		t.Fatalf("created: State %s, want Pending", out.State)
	}
	select {
	case <-blocked:
	case <-time.After(time.Minute):
		t.Fatal("no control plane fetched the layer")
	}
	victim := ""
	for _, p := range f.Procs {
		if b, _ := os.ReadFile(p.Log); p.Role == "controlplane" && strings.Contains(string(b), "image import started") {
			victim = p.Name
		}
	}
	if victim == "" {
		t.Fatal("no control plane logged the import")
	}
	if _, err := f.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s mid-import", victim)
	close(release)
	rc := retryingClient(f, 0)
	w := lambda.NewFunctionActiveV2Waiter(rc, func(o *lambda.FunctionActiveV2WaiterOptions) { o.MinDelay = 200 * time.Millisecond })
	if err := w.Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("img")}, 2*time.Minute); err != nil {
		t.Fatalf("after the kill: %v", err)
	}
	resumed := false
	for _, p := range f.Procs {
		if b, _ := os.ReadFile(p.Log); p.Role == "controlplane" && p.Name != victim && strings.Contains(string(b), "code import resumed") {
			resumed = true
		}
	}
	if !resumed {
		t.Error("the other control plane did not log the import's takeover")
	}
	if o := invoke(rc, "img", `{"action":"version"}`); o.err != nil || o.payload != `"v1"` {
		t.Fatalf("invoke after the takeover: %+v", o)
	}
	// The worker that cold-started it holds no image key: it had the
	// manifest's data key unwrapped by the surviving control plane, which
	// logged it.
	audited := false
	for _, p := range f.Procs {
		b, _ := os.ReadFile(p.Log)
		switch {
		case p.Role == "worker" && readBundle(t, f, p.Name).identity.ImageKey != nil:
			t.Errorf("%s's identity holds the image master key", p.Name)
		case p.Role == "controlplane" && regexp.MustCompile(`msg="keys: unwrap".* account=`+f.AccountID+` requester=worker-`).Match(b):
			audited = true
		}
	}
	if !audited {
		t.Error("no control plane logged the worker's unwrap")
	}
}
