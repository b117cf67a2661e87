package bench

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// ImagesConfig configures the images section.
type ImagesConfig struct {
	Kiln    string
	Sandbox string
	// FileMB is the file whose 5% each start reads: 32 MiB when zero (its
	// zip package stays under Lambda's 50 MB upload limit: random bytes do
	// not compress).
	FileMB int
	// Starts is the cold starts of each kind; 5 when zero.
	Starts int
}

// Images measures, through a real kiln up (Linux sandbox), the cold start
// (new function, its first invoke, end to end) of a handler that reads 5%
// of a file, three ways, in interleaved rounds:
//
//	zip:     a zip function (the code unpacked on the local disk)
//	lazy:    an image function on an image this worker never mounted (a new
//	         image each round, pushed to kiln up's registry, its file new
//	         random bytes: none of its chunks cached; the bootstrap binary is
//	         the same in every image, so its chunks are, as a shared runtime
//	         layer's would be)
//	mounted: an image function on the image another environment runs
//
// and, from kiln up's metrics, the bytes the lazy starts fetched and the
// chunk reads each tier served.
func Images(ctx context.Context, cfg ImagesConfig, out io.Writer) error {
	if cfg.FileMB <= 0 {
		cfg.FileMB = 32
	}
	if cfg.Starts <= 0 {
		cfg.Starts = 5
	}
	dir, err := os.MkdirTemp("", "kiln-bench-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	k, err := startKiln(ctx, cfg.Kiln, dir, cfg.Sandbox, false, "--metrics-listen", metricsAddr)
	if err != nil {
		return err
	}
	defer k.stop()
	fmt.Fprintf(out, "\nimages: cold starts reading 5%% of a %d MiB file, %d of each kind, interleaved\n", cfg.FileMB, cfg.Starts)
	bootstrap, err := fntest.BuildGo(fntest.ReaderGo)
	if err != nil {
		return err
	}
	file := func() []byte { b := make([]byte, cfg.FileMB<<20); rand.Read(b); return b }
	payload := []byte(`{"path":"/var/task/big"}`)
	host := strings.TrimPrefix(k.endpoint, "http://")

	zip, err := fntest.ZipFiles(map[string][]byte{"bootstrap": bootstrap, "big": file()})
	if err != nil {
		return err
	}
	// The mounted image: pushed once, run once before the rounds.
	if err := pushImage(host, "bench-mounted:1", bootstrap, file()); err != nil {
		return err
	}
	if err := k.createImage(ctx, "img-mounted", host+"/bench-mounted:1"); err != nil {
		return err
	}
	if _, err := signedClient(k.endpoint, "img-mounted", payload, 1).invoke(ctx); err != nil {
		return err
	}
	before, err := scrape(metricsAddr)
	if err != nil {
		return err
	}
	var zipD, lazyD, mountedD []time.Duration
	for i := range cfg.Starts {
		fn := fmt.Sprintf("zip-%d", i)
		_, err := k.lambda.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(fn),
			Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Role: aws.String(fntest.Role),
			Code: &types.FunctionCode{ZipFile: zip}, MemorySize: aws.Int32(oneVCPU), Timeout: aws.Int32(60)})
		if err != nil {
			return err
		}
		if err := lambda.NewFunctionActiveV2Waiter(k.lambda).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(fn)}, 2*time.Minute); err != nil {
			return err
		}
		d, err := signedClient(k.endpoint, fn, payload, 1).invoke(ctx)
		if err != nil {
			return err
		}
		zipD = append(zipD, d)

		tag := fmt.Sprintf("bench-lazy:%d", i)
		if err := pushImage(host, tag, bootstrap, file()); err != nil {
			return err
		}
		fn = fmt.Sprintf("img-lazy-%d", i)
		if err := k.createImage(ctx, fn, host+"/"+tag); err != nil {
			return err
		}
		if d, err = signedClient(k.endpoint, fn, payload, 1).invoke(ctx); err != nil {
			return err
		}
		lazyD = append(lazyD, d)

		fn = fmt.Sprintf("img-mounted-%d", i)
		if err := k.createImage(ctx, fn, host+"/bench-mounted:1"); err != nil {
			return err
		}
		if d, err = signedClient(k.endpoint, fn, payload, 1).invoke(ctx); err != nil {
			return err
		}
		mountedD = append(mountedD, d)
	}
	after, err := scrape(metricsAddr)
	if err != nil {
		return err
	}
	zs := summarize(zipD, 0)
	for _, r := range []struct {
		name string
		ds   []time.Duration
	}{{"zip (code on local disk)", zipD}, {"image, lazy (new image, new file)", lazyD}, {"image, mounted (another env ran it)", mountedD}} {
		s := summarize(r.ds, 0)
		fmt.Fprintf(out, "  %-38s p50 %-10s p99 %-10s %.2fx zip\n", r.name, round(s.P50), round(s.P99), float64(s.P50)/float64(zs.P50))
	}
	delta := func(metric string) float64 { return after[metric] - before[metric] }
	fmt.Fprintf(out, "  bytes fetched per lazy start: %.1f MiB (of %d MiB of files)\n",
		delta("kiln_image_bytes_fetched_total")/float64(cfg.Starts)/(1<<20), cfg.FileMB+len(bootstrap)>>20)
	var reads float64
	tiers := []string{"store"} // kiln up's one tier (the mounts' cache of decrypted chunks is in front of it)
	for _, t := range tiers {
		reads += delta(`kiln_image_chunk_reads_total{tier="` + t + `"}`)
	}
	for _, t := range tiers {
		n := delta(`kiln_image_chunk_reads_total{tier="` + t + `"}`)
		fmt.Fprintf(out, "  chunk reads served by %-6s %6.0f (%.0f%%)\n", t+":", n, 100*n/max(reads, 1))
	}
	fmt.Fprintln(out, "  (fetching the whole image first, and FUSE reads against the local disk: go test -bench ImageColdStart ./internal/sandbox, -bench ColdStart ./internal/imagefs)")
	return nil
}

// createImage deploys an image function and waits until it is imported.
func (k *kilnProcess) createImage(ctx context.Context, fn, uri string) error {
	_, err := k.lambda.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(fn),
		PackageType: types.PackageTypeImage, Code: &types.FunctionCode{ImageUri: aws.String(uri)}, Role: aws.String(fntest.Role),
		MemorySize: aws.Int32(oneVCPU), Timeout: aws.Int32(60)})
	if err != nil {
		return err
	}
	return lambda.NewFunctionActiveV2Waiter(k.lambda).Wait(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(fn)}, 5*time.Minute)
}

// pushImage pushes an image of bootstrap (the ENTRYPOINT) and big under
// /var/task to Kiln's registry at host, as ref, with the bench's keys.
func pushImage(host, ref string, bootstrap, big []byte) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		body []byte
		mode int64
	}{{"var/task/bootstrap", bootstrap, 0o755}, {"var/task/big", big, 0o644}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		tw.Write(f.body)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Entrypoint: []string{"/var/task/bootstrap"}, WorkingDir: "/var/task"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	r, err := name.ParseReference(host + "/" + ref)
	if err != nil {
		return err
	}
	return remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: benchKey, Password: benchSecret}))
}

// scrape reads the counters of a Prometheus text endpoint, by name and
// labels as written.
func scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
