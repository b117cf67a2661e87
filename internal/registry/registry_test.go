package registry_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/images/imagestest"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/kiln-dev/kiln/internal/registry"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	alice = &authn.Basic{Username: "AKIDALICE", Password: "alice-secret"}
	bob   = &authn.Basic{Username: "AKIDBOB", Password: "bob-secret"}
)

// eachStorage runs test against a registry over each storage: kiln up's
// directory and a cluster's JetStream object store (embedded NATS).
func eachStorage(t *testing.T, test func(t *testing.T, r *registry.Registry, host string)) {
	keys := auth.NewKeyring(
		auth.Credential{AccessKeyID: alice.Username, SecretAccessKey: alice.Password, Account: "111111111111"},
		auth.Credential{AccessKeyID: bob.Username, SecretAccessKey: bob.Password, Account: "222222222222"})
	for _, kind := range []string{"dir", "jetstream"} {
		t.Run(kind, func(t *testing.T) {
			var store registry.Storage = registry.Dir(t.TempDir())
			if kind == "jetstream" {
				js, err := jetstream.New(natstest.Connect(t))
				if err != nil {
					t.Fatal(err)
				}
				if store, err = registry.OpenObjectStore(context.Background(), js, "registry", 1); err != nil {
					t.Fatal(err)
				}
			}
			r, err := registry.New(store, t.TempDir(), keys)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(r)
			t.Cleanup(srv.Close)
			test(t, r, strings.TrimPrefix(srv.URL, "http://"))
		})
	}
}

func status(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}

func TestPushPull(t *testing.T) {
	eachStorage(t, func(t *testing.T, r *registry.Registry, host string) {
		body := strings.Repeat("layer content ", 100000) // over one PATCH chunk of some clients
		img := imagestest.Image(t, "amd64", v1.Config{Cmd: []string{"app.handler"}},
			imagestest.Layer(t, imagestest.File{Name: "app/big", Body: []byte(body)}))
		ref, _ := name.ParseReference(host + "/team/app:v1")
		if err := remote.Write(ref, img, remote.WithAuth(alice)); err != nil {
			t.Fatal(err)
		}
		// Pushing again (every blob present, mounted) is fine.
		if err := remote.Write(ref, img, remote.WithAuth(alice)); err != nil {
			t.Fatal(err)
		}
		got, err := remote.Image(ref, remote.WithAuth(alice))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := img.Digest()
		if d, _ := got.Digest(); d != want {
			t.Fatalf("pulled %s, pushed %s", d, want)
		}
		tags, err := remote.List(ref.Context(), remote.WithAuth(alice))
		if err != nil || len(tags) != 1 || tags[0] != "v1" {
			t.Fatalf("tags %v, %v", tags, err)
		}
		// The local read the control plane imports through.
		local, err := r.Image(context.Background(), "111111111111", "team/app", "v1", "amd64")
		if err != nil {
			t.Fatal(err)
		}
		layers, err := local.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("layers %v, %v", layers, err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		if !strings.Contains(string(b), body[:1000]) {
			t.Fatal("the local layer lacks the pushed content")
		}
		if d, _ := local.Digest(); d != want {
			t.Fatalf("local image %s, pushed %s", d, want)
		}

		// Another account sees nothing of it; no credentials, nothing at all.
		if _, err := remote.Image(ref, remote.WithAuth(bob)); status(err) != http.StatusNotFound {
			t.Errorf("bob pulled alice's image: %v", err)
		}
		if _, err := r.Image(context.Background(), "222222222222", "team/app", "v1", "amd64"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("bob's local read: %v", err)
		}
		if _, err := remote.Image(ref); status(err) != http.StatusUnauthorized {
			t.Errorf("anonymous pull: %v", err)
		}
		wrong := &authn.Basic{Username: alice.Username, Password: "guess"}
		if err := remote.Write(ref, img, remote.WithAuth(wrong)); status(err) != http.StatusUnauthorized {
			t.Errorf("push with a wrong secret: %v", err)
		}
	})
}

func TestIndexPicksPlatform(t *testing.T) {
	eachStorage(t, func(t *testing.T, r *registry.Registry, host string) {
		amd := imagestest.Image(t, "amd64", v1.Config{}, imagestest.Layer(t, imagestest.File{Name: "arch", Body: []byte("amd64")}))
		arm := imagestest.Image(t, "arm64", v1.Config{}, imagestest.Layer(t, imagestest.File{Name: "arch", Body: []byte("arm64")}))
		idx := mutate.AppendManifests(empty.Index,
			mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
			mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
		ref, _ := name.ParseReference(host + "/multi:latest")
		if err := remote.WriteIndex(ref, idx, remote.WithAuth(alice)); err != nil {
			t.Fatal(err)
		}
		for arch, want := range map[string]v1.Image{"amd64": amd, "arm64": arm} {
			got, err := r.Image(context.Background(), "111111111111", "multi", "latest", arch)
			if err != nil {
				t.Fatal(err)
			}
			d1, _ := got.Digest()
			d2, _ := want.Digest()
			if d1 != d2 {
				t.Errorf("%s: got %s, want %s", arch, d1, d2)
			}
		}
		if _, err := r.Image(context.Background(), "111111111111", "multi", "latest", "s390x"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("s390x: %v", err)
		}
	})
}

// TestRefusals: what a client sends wrong or hostile is refused in the
// distribution API's error shape and stores nothing.
func TestRefusals(t *testing.T) {
	eachStorage(t, func(t *testing.T, _ *registry.Registry, host string) {
		base := "http://" + host + "/v2/"
		do := func(method, path, contentType, body string) (int, string) {
			req, _ := http.NewRequestWithContext(context.Background(), method, base+path, strings.NewReader(body))
			req.SetBasicAuth(alice.Username, alice.Password)
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		const zeros = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
		for _, tc := range []struct {
			name, method, path, ctype, body string
			status                          int
			code                            string
		}{
			{"upload with a wrong digest", "POST", "app/blobs/uploads/?digest=" + zeros, "", "not zeros", 400, "DIGEST_INVALID"},
			{"bad repository name", "GET", "../../etc/blobs/" + zeros, "", "", 400, "NAME_INVALID"},
			{"upper-case repository", "GET", "App/manifests/v1", "", "", 400, "NAME_INVALID"},
			{"bad digest", "GET", "app/blobs/sha256:../../x", "", "", 400, "DIGEST_INVALID"},
			{"unknown blob", "GET", "app/blobs/" + zeros, "", "", 404, "BLOB_UNKNOWN"},
			{"unknown upload", "PATCH", "app/blobs/uploads/0123456789abcdef0123456789abcdef", "", "x", 404, "BLOB_UPLOAD_UNKNOWN"},
			{"manifest naming a missing blob", "PUT", "app/manifests/v1", string("application/vnd.oci.image.manifest.v1+json"),
				`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + zeros + `","size":2},"layers":[]}`,
				400, "MANIFEST_BLOB_UNKNOWN"},
			{"manifest of an unknown type", "PUT", "app/manifests/v1", "text/plain", "{}", 400, "MANIFEST_INVALID"},
			{"manifest that is not JSON", "PUT", "app/manifests/v1", "application/vnd.oci.image.manifest.v1+json", "{", 400, "MANIFEST_INVALID"},
			{"manifest put by a digest it does not have", "PUT", "app/manifests/" + zeros, "application/vnd.oci.image.manifest.v1+json", "{}", 400, "DIGEST_INVALID"},
			{"unknown tag", "GET", "app/manifests/nope", "", "", 404, "MANIFEST_UNKNOWN"},
			{"unknown repository's tags", "GET", "nothing/tags/list", "", "", 404, "NAME_UNKNOWN"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st, body := do(tc.method, tc.path, tc.ctype, tc.body)
				if st != tc.status || !strings.Contains(body, `"code":"`+tc.code+`"`) {
					t.Fatalf("%d %s, want %d %s", st, body, tc.status, tc.code)
				}
			})
		}
		if st, _ := do("GET", "", "", ""); st != 200 {
			t.Fatalf("GET /v2/: %d", st)
		}
	})
}
