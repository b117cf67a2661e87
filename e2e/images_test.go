package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
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

	"github.com/kiln-dev/kiln/internal/images/imagestest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/tier"
	"github.com/kiln-dev/kiln/internal/tier/tiertest"
)

// testImages are the images the image tests run: toolkit:v1 and v2 (an
// aws-lambda-go bootstrap each) on a shared random base of base bytes, and
// arm:v1, in go-containerregistry's in-process registry reg.
type testImages struct {
	reg   string
	v1    v1.Image
	base  int
	files int // toolkit:v1's files, base and bootstrap
}

func buildImages(t *testing.T) testImages {
	imagestest.RequireFUSE(t, true)
	ti := testImages{reg: imagestest.Registry(t)}
	base := make([]byte, 4<<20) // the shared base layer: random, so only deduplication makes it small
	rand.Read(base)
	ti.base = len(base)
	baseLayer := imagestest.Layer(t, imagestest.File{Name: "opt/base/runtime.bin", Body: base})
	cfg := v1.Config{Entrypoint: []string{"/var/task/bootstrap"}, WorkingDir: "/var/task", Env: []string{"FROM_IMAGE=yes"}}
	for tag, version := range map[string]string{"v1": "v1", "v2": "v2"} {
		src := strings.Replace(fntest.ToolkitGo, `VERSION = "v1"`, `VERSION = "`+version+`"`, 1)
		bootstrap := fntest.GoBootstrap(t, src)
		img := imagestest.Image(t, "amd64", cfg, baseLayer,
			imagestest.Layer(t, imagestest.File{Name: "var/task/bootstrap", Body: bootstrap, Mode: 0o755}))
		imagestest.Push(t, ti.reg+"/toolkit:"+tag, img)
		if tag == "v1" {
			ti.v1, ti.files = img, len(base)+len(bootstrap)
		}
	}
	imagestest.Push(t, ti.reg+"/arm:v1", imagestest.Image(t, "arm64", cfg, baseLayer))
	return ti
}

// run pushes toolkit:v1 to the target's own registry and runs cli.sh
// images; chunks is what measures the store (empty: the script does not).
func (ti testImages) run(t *testing.T, tg *target, chunks, archives string) {
	addr := strings.TrimPrefix(tg.endpoints[0], "http://")
	kilnRef, _ := name.ParseReference(addr + "/toolkit:v1")
	if err := remote.Write(kilnRef, ti.v1, remote.WithAuth(&authn.Basic{Username: accessKeyID, Password: secretAccessKey})); err != nil {
		t.Fatalf("push to %s's registry: %v\n%s", tg.name, err, tg.log())
	}
	env := append(clientEnv(tg, t.TempDir(), nil), "REGISTRY="+ti.reg, "KILN_REGISTRY="+addr, "CHUNKS="+chunks,
		"BASE_BYTES="+strconv.Itoa(ti.base), "ARCHIVES="+archives)
	runScript(t, tg.log, 150*time.Second, env, "bash", filepath.Join(moduleRoot(t), "e2e", "cli.sh"), "images")
}

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
	ti := buildImages(t)
	forEachTarget(t, func(t *testing.T, tg *target) {
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
			if err := tarball.WriteToFile(filepath.Join(tg.dir, "image-archives", "toolkit.tar"), archiveTag, ti.v1); err != nil {
				t.Fatal(err)
			}
			archives = "yes"
		}
		ti.run(t, tg, chunks, archives)
	})
}

// TestImagesS3: kiln up and a cluster whose authoritative chunk store is an
// S3 bucket (--image-s3): the same script, and the bucket holds the
// images' chunks with the shared base once. S3 is an external service:
// gofakes3, in this process, stands in for it; Kiln's client is the real
// aws-sdk-go-v2.
func TestImagesS3(t *testing.T) {
	ti := buildImages(t)
	getTarget(t, "up") // the suite's build, and its clients checked
	for _, kind := range targetNames {
		t.Run(kind, func(t *testing.T) {
			cfg := tiertest.S3(t, "kiln-"+kind)
			file := filepath.Join(t.TempDir(), "s3.json")
			b, _ := json.Marshal(cfg)
			if err := os.WriteFile(file, b, 0o600); err != nil {
				t.Fatal(err)
			}
			var tg *target
			if kind == "up" {
				tg = startUp(t, "up-s3", "--image-s3", file)
				t.Cleanup(func() { tg.up.stop() })
			} else {
				tg = startCluster(t, "cluster-s3", "--image-s3", file)
				t.Cleanup(func() { tg.cluster.Down() })
			}
			ti.run(t, tg, "", "")
			bucket, err := tier.OpenS3(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			size, err := bucket.Size(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// toolkit v1, v2 (the same base, a bootstrap differing in a
			// few bytes) and v1 again from Kiln's registry: v1's files once
			// and what v2 changed, less than the base again.
			if size < int64(ti.files) || size >= int64(ti.files+ti.base) {
				t.Fatalf("the bucket holds %d bytes; toolkit:v1's files are %d, its base %d, which v2 shares", size, ti.files, ti.base)
			}
			t.Logf("the bucket holds %d bytes for the images (v1's files %d, base %d)", size, ti.files, ti.base)
		})
	}
}
