package cluster

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kiln-dev/kiln/internal/pki"
)

func TestApplyConfig(t *testing.T) {
	cases := []struct {
		name    string
		file    string
		args    []string
		want    map[string]string
		wantErr bool
	}{
		{"file sets flags", `{"zone": "b", "partitions": 12, "nats": ["nats://h1:4222", "nats://h2:4222"], "lease": "1s"}`, nil,
			map[string]string{"zone": "b", "partitions": "12", "nats": "nats://h1:4222,nats://h2:4222", "lease": "1s"}, false},
		{"the command line wins", `{"zone": "b", "name": "w1"}`, []string{"--zone", "c"},
			map[string]string{"zone": "c", "name": "w1"}, false},
		{"unknown setting", `{"zonee": "b"}`, nil, nil, true},
		{"bad value", `{"partitions": "many"}`, nil, nil, true},
		{"not an object", `["zone"]`, nil, nil, true},
		{"no nesting of configs", `{"config": "other.json"}`, nil, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.json")
			os.WriteFile(p, []byte(tc.file), 0o600)
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			got := map[string]*string{}
			for _, n := range []string{"zone", "name", "nats", "lease", "config"} {
				got[n] = fs.String(n, "", "")
			}
			fs.Int("partitions", 6, "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := applyConfig(fs, p)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			values := map[string]string{}
			fs.Visit(func(f *flag.Flag) { values[f.Name] = f.Value.String() })
			if !reflect.DeepEqual(values, tc.want) {
				t.Fatalf("flags %v, want %v", values, tc.want)
			}
		})
	}
}

// TestIssuer: the second issuer of a directory keeps its CA and secrets,
// and a bundle holds only what its role needs.
func TestIssuer(t *testing.T) {
	dir := t.TempDir()
	is, err := openIssuer(dir, newIdentity)
	if err != nil {
		t.Fatal(err)
	}
	again, err := openIssuer(dir, newIdentity)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(is.secrets, again.secrets) || !is.ca.Cert.Equal(again.ca.Cert) {
		t.Fatal("a second issuer made new secrets")
	}
	for role, files := range map[string][]string{
		"worker":    {bundleCA, bundleCert, bundleKey, bundleNATS, bundleIdentity},
		"placement": {bundleCA, bundleCert, bundleKey, bundleNATS},
		"nats":      {bundleCA, bundleCert, bundleKey, bundleUsers, bundleRoute},
	} {
		b, err := again.issue(role+"-1", role, []string{"10.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir(b)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if len(names) != len(files) {
			t.Errorf("%s bundle: %v, want %v", role, names, files)
		}
		settings := bundleFlags(b, role)
		if _, err := (pki.Files{CA: settings["ca"], Cert: settings["cert"], Key: settings["key"]}).Config(); err != nil {
			t.Fatalf("%s bundle: %v", role, err)
		}
	}
	var id clusterIdentity
	if err := readJSONSecret(filepath.Join(dir, "roles", "worker-1", bundleIdentity), &id); err != nil {
		t.Fatal(err)
	}
	if id.Token != is.secrets.Identity.Token || id.SecretAccessKey != "" || len(id.URLSecret) != 0 {
		t.Fatalf("worker identity %+v: want the cluster token alone", id)
	}
}
