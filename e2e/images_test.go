package e2e

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-dev/kiln/images/imagestest"
	"github.com/kiln-dev/kiln/kilntest"
	"github.com/kiln-dev/kiln/kilntest/fntest"
)

// TestImagesAgainstKilnUp runs cli.sh images (Debian's AWS CLI) against a real
// `kiln up`: image functions from go-containerregistry's in-process
// registry, created, invoked, updated to a new tag and rolled back through
// an alias; the two tags share a base layer, stored once; and one pushed to
// kiln up's own registry and one from a `docker save` tarball in its
// archives directory.
func TestImagesAgainstKilnUp(t *testing.T) {
	requireClients(t)
	if testing.Short() {
		t.Skip("end-to-end test with a real kiln up; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("image functions need the Linux sandbox and FUSE: run as root")
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	} else {
		f.Close()
	}
	root := moduleRoot(t)
	dir := t.TempDir()
	buildErr := make(chan error, 1)
	go func() {
		_, err := fntest.BuildKiln(dir)
		buildErr <- err
	}()

	reg := imagestest.Registry(t)
	base := make([]byte, 4<<20) // the shared base layer: random, so only deduplication makes it small
	rand.Read(base)
	baseLayer := imagestest.Layer(t, imagestest.File{Name: "opt/base/runtime.bin", Body: base})
	cfg := v1.Config{Entrypoint: []string{"/var/task/bootstrap"}, WorkingDir: "/var/task", Env: []string{"FROM_IMAGE=yes"}}
	var v1img v1.Image
	for tag, version := range map[string]string{"v1": "v1", "v2": "v2"} {
		src := strings.Replace(fntest.ToolkitGo, `VERSION = "v1"`, `VERSION = "`+version+`"`, 1)
		img := imagestest.Image(t, "amd64", cfg, baseLayer,
			imagestest.Layer(t, imagestest.File{Name: "var/task/bootstrap", Body: fntest.GoBootstrap(t, src), Mode: 0o755}))
		imagestest.Push(t, reg+"/toolkit:"+tag, img)
		if tag == "v1" {
			v1img = img
		}
	}
	imagestest.Push(t, reg+"/arm:v1", imagestest.Image(t, "arm64", cfg, baseLayer))
	if err := <-buildErr; err != nil {
		t.Fatal(err)
	}

	addr := kilntest.FreeAddr(t)
	k := &kiln{t: t, bin: filepath.Join(dir, "kiln"), data: filepath.Join(dir, "data"), addr: addr, endpoint: "http://" + addr,
		logPath: filepath.Join(dir, "kiln.log")}
	t.Cleanup(func() {
		if err := k.stop(); err != nil {
			t.Error(err)
		}
	})
	k.start()
	// The same v1 image pushed to kiln up's own registry, with the account's keys.
	kilnRef, _ := name.ParseReference(addr + "/toolkit:v1")
	if err := remote.Write(kilnRef, v1img, remote.WithAuth(&authn.Basic{Username: accessKeyID, Password: secretAccessKey})); err != nil {
		t.Fatalf("push to kiln up's registry: %v\n%s", err, k.log())
	}
	// And as a `docker save` tarball in kiln up's archives directory.
	archiveTag, _ := name.NewTag("toolkit:v1")
	if err := tarball.WriteToFile(filepath.Join(k.data, "image-archives", "toolkit.tar"), archiveTag, v1img); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	os.MkdirAll(home, 0o700)
	// Images run in kiln up only: a cluster's workers have no image store.
	tg := &target{name: "up", endpoints: []string{k.endpoint}, dir: k.data, log: k.log, up: k}
	env := append(clientEnv(tg, home, nil), "REGISTRY="+reg, "KILN_REGISTRY="+addr, "CHUNKS="+filepath.Join(k.data, "chunks"),
		"BASE_BYTES="+strconv.Itoa(len(base)))
	runScript(t, k.log, 150*time.Second, env, "bash", filepath.Join(root, "e2e", "cli.sh"), "images")
}
