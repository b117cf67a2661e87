package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-dev/kiln/internal/images/imagestest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/kiln-dev/kiln/internal/tier"
)

// TestCollection: two image functions sharing a base layer and their
// bootstrap, one of which has a file of its own (three 512 KiB chunks),
// and a zip function; once that one and the zip function are deleted, an operator's collection (on NATS, as
// `kiln.collect`) with a grace of an hour deletes nothing (its blobs are
// younger), and with none deletes exactly its manifest and its file's three
// chunks from the authoritative store (kiln up's directory, the cluster's
// JetStream bucket), and the zip from the code store (kiln up's directory,
// the cluster's bucket); the other function still cold-starts and invokes.
func TestCollection(t *testing.T) {
	imagestest.RequireFUSE(t, true)
	reg := imagestest.Registry(t)
	base, own := make([]byte, 1<<20), make([]byte, 3<<19)
	rand.Read(base)
	rand.Read(own)
	bootstrap := fntest.GoBootstrap(t, fntest.ToolkitGo)
	cfg := v1.Config{Entrypoint: []string{"/var/task/bootstrap"}, WorkingDir: "/var/task"}
	shared := []v1.Layer{imagestest.Layer(t, imagestest.File{Name: "opt/base.bin", Body: base}),
		imagestest.Layer(t, imagestest.File{Name: "var/task/bootstrap", Body: bootstrap, Mode: 0o755})}
	imagestest.Push(t, reg+"/gc:kept", imagestest.Image(t, "amd64", cfg, shared...))
	imagestest.Push(t, reg+"/gc:gone", imagestest.Image(t, "amd64", cfg,
		append(shared, imagestest.Layer(t, imagestest.File{Name: "opt/own.bin", Body: own}))...))

	forEachTarget(t, func(t *testing.T, tg *target) {
		nc, err := tg.connect()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		var store tier.Lister
		var zipStored func(hex string) bool // in the authoritative code store
		if tg.cluster != nil {
			js, _ := jetstream.New(nc)
			if store, err = tier.OpenJetStream(ctx, js, "kiln-chunks", tg.cluster.Replicas); err != nil {
				t.Fatal(err)
			}
			code, err := tier.OpenJetStream(ctx, js, "kiln-code", tg.cluster.Replicas)
			if err != nil {
				t.Fatal(err)
			}
			zipStored = func(hex string) bool {
				_, err := code.Get(ctx, hex)
				if err != nil && !errors.Is(err, tier.ErrNotFound) {
					t.Fatal(err)
				}
				return err == nil
			}
		} else {
			if store, err = tier.OpenDir(filepath.Join(tg.dir, "chunks")); err != nil {
				t.Fatal(err)
			}
			zipStored = func(hex string) bool {
				_, err := os.Stat(filepath.Join(tg.dir, "code", "zips", hex+".zip"))
				return err == nil
			}
		}
		collect := func(grace time.Duration) roles.CollectReply {
			t.Helper()
			var reply roles.CollectReply
			// Another test's image import under way defers images:
			// collect again once it has ended.
			wait.For(t, "a collection of images", func() error {
				req, _ := json.Marshal(roles.CollectRequest{Grace: grace})
				m, err := nc.Request(roles.CollectSubject, req, 2*time.Minute)
				if err != nil {
					return err
				}
				reply = roles.CollectReply{}
				if err := json.Unmarshal(m.Data, &reply); err != nil || reply.Error != "" {
					return fmt.Errorf("collection: %v %s", err, reply.Error)
				}
				if reply.ImagesDeferred {
					return fmt.Errorf("images deferred: an import is under way")
				}
				return nil
			})
			return reply
		}
		listing := func() map[string]bool {
			t.Helper()
			var out map[string]bool
			wait.For(t, "the chunk store's listing", func() error { // JetStream may be electing a leader
				out = map[string]bool{}
				for b, err := range store.List(ctx) {
					if err != nil {
						return err
					}
					out[b.Name] = true
				}
				return nil
			})
			return out
		}

		c := lambdaAt(tg.endpoints[0])
		for _, name := range []string{"gc-kept", "gc-gone"} {
			// A first invoke reads through FUSE: 30 s, not 3, on a loaded host.
			if _, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(name), PackageType: types.PackageTypeImage, Timeout: aws.Int32(30),
				Role: aws.String("arn:aws:iam::123456789012:role/kiln-e2e"), Code: &types.FunctionCode{ImageUri: aws.String(reg + "/gc:" + name[3:])}}); err != nil {
				t.Fatalf("create %s: %v\n%s", name, err, tg.log())
			}
			defer c.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String(name)})
			fntest.WaitActive(t, c, name)
		}
		// And a zip function of its own package, deleted with gc-gone.
		pkg, err := fntest.ZipFiles(map[string][]byte{"bootstrap": []byte("#!/bin/sh\n# " + rand.Text())})
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(pkg)
		pkgHex := hex.EncodeToString(sum[:])
		if _, err := c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("gc-zip"), Runtime: types.RuntimeProvidedal2023,
			Handler: aws.String("bootstrap"), Role: aws.String("arn:aws:iam::123456789012:role/kiln-e2e"), Code: &types.FunctionCode{ZipFile: pkg}}); err != nil {
			t.Fatal(err)
		}
		fntest.WaitActive(t, c, "gc-zip")
		collect(0) // what earlier tests left
		before := listing()
		if !zipStored(pkgHex) {
			t.Fatal("gc-zip's package is not in the code store")
		}
		for _, name := range []string{"gc-gone", "gc-zip"} {
			if _, err := c.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String(name)}); err != nil {
				t.Fatal(err)
			}
		}
		if r := collect(time.Hour); r.Images.Blobs != 0 || r.Code.Blobs != 0 || len(listing()) != len(before) || !zipStored(pkgHex) {
			t.Fatalf("a collection with an hour's grace deleted %+v of blobs, %+v of packages written minutes ago", r.Images, r.Code)
		}
		// A cluster's metadata read may lag the delete by a moment (the
		// collection then keeps all): collect until gc-gone's blobs go.
		var swept, packages tier.Swept
		var after map[string]bool
		var gone []string
		wait.For(t, "gc-gone's blobs and gc-zip's package collected", func() error {
			r := collect(0)
			swept.Blobs, swept.Bytes = swept.Blobs+r.Images.Blobs, swept.Bytes+r.Images.Bytes
			packages.Blobs, packages.Bytes = packages.Blobs+r.Code.Blobs, packages.Bytes+r.Code.Bytes
			after, gone = listing(), nil
			for name := range before {
				if !after[name] {
					gone = append(gone, name)
				}
			}
			if len(gone) < 4 || zipStored(pkgHex) {
				return fmt.Errorf("%d blobs gone, gc-zip's package there: %v", len(gone), zipStored(pkgHex))
			}
			return nil
		})
		if packages.Blobs != 1 || packages.Bytes != int64(len(pkg)) {
			t.Fatalf("collected packages %+v; want gc-zip's, %d bytes", packages, len(pkg))
		}
		if swept.Blobs != 4 || len(gone) != 4 || len(after) != len(before)-4 || swept.Bytes < int64(len(own)) {
			t.Fatalf("collected %+v: %d blobs gone of %d, %d left; want gc-gone's manifest and its own file's 3 chunks (%d bytes)",
				swept, len(gone), len(before), len(after), len(own))
		}
		if added := slices.DeleteFunc(slices.Collect(maps.Keys(after)), func(n string) bool { return before[n] }); len(added) > 0 {
			t.Fatalf("blobs appeared during the collection: %v", added)
		}

		// gc-kept cold-starts (a new configuration: new environments) and runs.
		if _, err := c.UpdateFunctionConfiguration(ctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("gc-kept"),
			Environment: &types.Environment{Variables: map[string]string{"AFTER": "collection"}}}); err != nil {
			t.Fatal(err)
		}
		fntest.WaitUpdated(t, c, "gc-kept")
		out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("gc-kept"), Payload: []byte(`{"action":"env","name":"AFTER"}`)})
		if err != nil || out.FunctionError != nil || string(out.Payload) != `"collection"` {
			t.Fatalf("gc-kept after the collection: %v %v %s\n%s", err, aws.ToString(out.FunctionError), out.Payload, tg.log())
		}
	})
}
