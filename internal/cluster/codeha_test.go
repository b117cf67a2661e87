package cluster_test

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/codestore"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// Sizes of the large package: 50 MB zipped (with the bootstrap), 64 KiB
// under Lambda's 250 MB unzipped.
const (
	largeZipped   = 50_000_000
	largeUnzipped = codestore.DefaultMaxUnzipped - 64<<10
)

// largeZip is the toolkit function built with version, padded to the
// limits: incompressible bytes from a fixed seed, stored, fill the zip;
// zeros, deflated to almost nothing, fill the rest of the unzipped size.
// The same version gives the same bytes.
func largeZip(t *testing.T, version string) []byte {
	t.Helper()
	boot := fntest.GoBootstrap(t, strings.Replace(fntest.ToolkitGo, `VERSION = "v1"`, `VERSION = "`+version+`"`, 1))
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, method uint16, mode os.FileMode, r io.Reader) {
		h := &zip.FileHeader{Name: name, Method: method, Modified: time.Unix(0, 0)}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err == nil {
			_, err = io.Copy(w, r)
		}
		if err == nil {
			err = zw.Flush()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	add("bootstrap", zip.Deflate, 0o755, bytes.NewReader(boot))
	noise := int64(largeZipped - buf.Len() - 4096) // headers and the directory
	add("pad/noise.bin", zip.Store, 0o644, io.LimitReader(rand.NewChaCha8([32]byte{'k', 'i', 'l', 'n'}), noise))
	zeros := int64(largeUnzipped) - int64(len(boot)) - noise
	add("pad/zeros.bin", zip.Deflate, 0o644, io.LimitReader(zeroReader{}, zeros))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if n := buf.Len(); n > codestore.DefaultMaxZipped || n < largeZipped-(1<<20) {
		t.Fatalf("large zip is %d bytes", n)
	}
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// retryingClient is a frontend's client with the SDK's standard retries,
// as users have it (the ones in these tests fail fast to show each error).
func retryingClient(f *cluster.File, frontend int) *lambda.Client {
	return lambda.New(lambda.Options{Region: f.Region, BaseEndpoint: aws.String(f.Frontends[frontend]),
		Credentials: credentials.NewStaticCredentialsProvider(f.AccessKeyID, f.SecretAccessKey, "")})
}

// serves checks that a function's metadata and code agree: GetFunction
// names sha, its Code.Location downloads that zip, and an invoke runs
// that version.
func serves(t *testing.T, c *lambda.Client, name, sha, version string) {
	t.Helper()
	got, err := c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if s := aws.ToString(got.Configuration.CodeSha256); s != sha {
		t.Fatalf("CodeSha256 %s, want %s", s, sha)
	}
	resp, err := http.Get(aws.ToString(got.Code.Location))
	if err != nil {
		t.Fatal(err)
	}
	zipped, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || codestore.Digest(zipped) != sha {
		t.Fatalf("Code.Location: %s, %d bytes (%v), digest %s, want %s", resp.Status, len(zipped), err, codestore.Digest(zipped), sha)
	}
	if o := invoke(c, name, `{"action":"version"}`); o.err != nil || o.payload != `"`+version+`"` {
		t.Fatalf("invoke: %+v, want %s", o, version)
	}
}

// TestControlPlaneKilledMidUpdate: a 50 MB package (250 MB unzipped) is
// uploaded with UpdateFunctionCode and the control plane unpacking it (in
// the background, the update InProgress) is killed -9. The package was
// stored before the update was recorded, so the function stays whole:
// $LATEST keeps its old code while the update is in progress, and the
// other control plane takes the update over (its owner silent past
// ImportStale), fetching the package by digest from the replicated
// bucket; then the package cold-starts on every worker at once.
func TestControlPlaneKilledMidUpdate(t *testing.T) {
	f := up(t, cluster.UpConfig{ImageImportStale: 3 * time.Second})
	c := client(f, 0)
	create(t, c, "big")
	v1 := codestore.Digest(toolkitZip(t))
	v2zip := largeZip(t, "v2")
	v2 := codestore.Digest(v2zip)

	// Kill whichever control plane starts unpacking the upload.
	killed := make(chan string, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(killed)
		for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range f.Procs {
				if p.Role != "controlplane" {
					continue
				}
				tmp, _ := os.ReadDir(filepath.Join(f.Dir, p.Name, "code", "tmp"))
				for _, e := range tmp {
					if strings.HasPrefix(e.Name(), "unpack-") {
						f.Kill(p.Name)
						killed <- p.Name
						return
					}
				}
			}
		}
	}()
	_, err := c.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String("big"), ZipFile: v2zip})
	victim := <-killed
	if victim == "" {
		t.Fatalf("no control plane was seen unpacking the upload (update: %v)", err)
	}
	// The caller got InProgress, or an error if the kill came while it
	// held its answer; either way the update is recorded.
	t.Logf("killed %s while it unpacked the upload; the caller got: %v", victim, err)
	rc := retryingClient(f, 0)
	got, err := rc.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Configuration; c.LastUpdateStatus == types.LastUpdateStatusInProgress && aws.ToString(c.CodeSha256) != v1 {
		t.Fatalf("$LATEST names %s while its update is in progress; want the old code %s", aws.ToString(c.CodeSha256), v1)
	}
	began := time.Now()
	fntest.WaitUpdated(t, rc, "big")
	t.Logf("the update ended, taken over by the other control plane, %v after the kill", time.Since(began))

	// A new function of the same package, invoked three times at once:
	// one new environment on each zone's worker (placement spreads a
	// function's environments over zones), each worker fetching the
	// package by digest. (A new function, so that no environment of the
	// old code, nor a frontend's cache of the old metadata, has a say.)
	_, err = c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String("big2"), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Role: aws.String(fntest.Role), Code: &types.FunctionCode{ZipFile: v2zip}, Timeout: aws.Int32(10)})
	if err != nil {
		t.Fatal(err)
	}
	fntest.WaitActive(t, c, "big2")
	start := time.Now()
	var wg sync.WaitGroup
	outcomes := make([]outcome, 3)
	for i := range outcomes {
		wg.Add(1)
		go func() { defer wg.Done(); outcomes[i] = invoke(c, "big2", `{"action":"sleep","ms":2000}`) }()
	}
	wg.Wait()
	for i, o := range outcomes {
		if o.err != nil || !o.cold {
			t.Fatalf("invoke %d of the large package: %+v", i, o)
		}
	}
	t.Logf("three cold starts of the large package, one per worker, in %v", time.Since(start))
	h, _ := codestore.HexOf(v2)
	envs := envsByWorker(t, f)
	for _, p := range f.Procs {
		if p.Role != "worker" {
			continue
		}
		if envs[p.Name]["big2"] == "" {
			t.Errorf("no environment of the function on %s (by worker: %v)", p.Name, envs)
		}
		zipped, err := os.ReadFile(filepath.Join(f.Dir, p.Name, "code", "zips", h+".zip"))
		if sum := sha256.Sum256(zipped); err != nil || hex.EncodeToString(sum[:]) != h {
			t.Errorf("%s holds no copy of the package: %v", p.Name, err)
		}
	}
	serves(t, rc, "big2", v2, "v2")
	serves(t, rc, "big", v2, "v2")
}
