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
	"github.com/kiln-dev/kiln/kilntest/fntest"
)

// TestImages runs cli.sh images (Debian's AWS CLI) against kiln up and the
// cluster: image functions from go-containerregistry's in-process
// registry, created, invoked, updated to a new tag and rolled back through
// an alias; the two tags share a base layer, stored once (measured in kiln
// up's chunk directory, in a NATS node's copy of the cluster's chunk
// bucket); one pushed to the target's own registry (a cluster's first
// frontend; its control planes import it from the replicated registry);
// and, in kiln up, one from a `docker save` tarball in its archives
// directory (a cluster has none: an operator's directory is on one host).
func TestImages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("image functions need the Linux sandbox and FUSE: run as root")
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	} else {
		f.Close()
	}
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
	root := moduleRoot(t)

	forEachTarget(t, func(t *testing.T, tg *target) {
		// The same v1 image pushed to the target's own registry, with the account's keys.
		addr := strings.TrimPrefix(tg.endpoints[0], "http://")
		kilnRef, _ := name.ParseReference(addr + "/toolkit:v1")
		if err := remote.Write(kilnRef, v1img, remote.WithAuth(&authn.Basic{Username: accessKeyID, Password: secretAccessKey})); err != nil {
			t.Fatalf("push to %s's registry: %v\n%s", tg.name, err, tg.log())
		}
		chunks := filepath.Join(tg.dir, "chunks")
		archives := ""
		if tg.cluster != nil {
			// Every node holds the whole bucket (replicas 3): measure one.
			m, _ := filepath.Glob(filepath.Join(tg.dir, "nats-*", "jetstream", "*", "streams", "KV_kiln-chunks"))
			if len(m) == 0 {
				t.Fatalf("no chunk bucket under %s", tg.dir)
			}
			chunks = m[0]
		} else {
			// And as a `docker save` tarball in kiln up's archives directory.
			archiveTag, _ := name.NewTag("toolkit:v1")
			if err := tarball.WriteToFile(filepath.Join(tg.dir, "image-archives", "toolkit.tar"), archiveTag, v1img); err != nil {
				t.Fatal(err)
			}
			archives = "yes"
		}
		env := append(clientEnv(tg, t.TempDir(), nil), "REGISTRY="+reg, "KILN_REGISTRY="+addr, "CHUNKS="+chunks,
			"BASE_BYTES="+strconv.Itoa(len(base)), "ARCHIVES="+archives)
		runScript(t, tg.log, 150*time.Second, env, "bash", filepath.Join(root, "e2e", "cli.sh"), "images")
	})
}
