package cluster_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/keys"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/pki"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bundle reads a process's certificate and credentials from the layout
// `kiln cluster up` writes (DIR/roles/NAME).
type bundle struct {
	tls      *pki.Config
	user     cluster.NATSUser
	identity cluster.Identity
}

func readBundle(t *testing.T, f *cluster.File, name string) bundle {
	t.Helper()
	dir := filepath.Join(f.Dir, "roles", name)
	c, err := pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}.Config()
	if err != nil {
		t.Fatal(err)
	}
	b := bundle{tls: c}
	for file, v := range map[string]any{"nats.json": &b.user, "identity.json": &b.identity} {
		if raw, err := pki.ReadSecret(filepath.Join(dir, file)); err == nil {
			json.Unmarshal(raw, v)
		}
	}
	return b
}

// connect connects to f's NATS with b's credentials as b's role does, on
// the first node (so that what tests publish and what they watch take one
// path); it is closed when the test ends.
func (b bundle) connect(t *testing.T, f *cluster.File, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := cluster.NATSConnect(f.NATS[:1], "test-"+b.user.User, b.tls, b.user, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// violated waits for the permissions violation a subscription (or a
// publish) on nc drew, reported to its error handler on violations.
func violated(nc *nats.Conn, violations <-chan error, err error) error {
	if err == nil {
		err = nc.Flush()
	}
	if err == nil {
		select {
		case err = <-violations:
		case <-time.After(20 * time.Second):
		}
	}
	return err
}

// foreignCA is a client config that trusts the cluster (so that a refusal
// is the server's) and presents a certificate for the right role from a CA
// that is not the cluster's.
func foreignCA(t *testing.T, f *cluster.File, role string) *tls.Config {
	t.Helper()
	ca, err := pki.NewCA("not the cluster")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key, _ := ca.Issue(role+"-1", role, []string{"127.0.0.1"})
	files := pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
	os.WriteFile(files.CA, ca.CertPEM(), 0o644)
	os.WriteFile(files.Cert, crt, 0o644)
	pki.WriteSecret(files.Key, key)
	c, err := files.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.Client()
	cfg.RootCAs = readBundle(t, f, "admin").tls.Client().RootCAs
	// Offer it even though the server asks for its own CA's.
	cert := cfg.Certificates[0]
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

// refusedByServer fails the test if err is the client's own refusal of
// the server (then the case proved nothing about the server).
func refusedByServer(t *testing.T, name string, err error) {
	if err != nil && strings.Contains(err.Error(), "failed to verify certificate") {
		t.Errorf("%s: the client refused the server (%v): the case tests nothing", name, err)
	}
}

// TestRoleCredentials: a process without the cluster's certificate or its
// role's credentials is refused by NATS and by workers; secrets are in
// files only their owner reads, and in no process's environment; a new
// host's worker joins with a bundle from `kiln cluster certs` and a config
// file, as the README's three-host deployment does.
func TestRoleCredentials(t *testing.T) {
	f := up(t, cluster.UpConfig{Workers: 1})
	admin := readBundle(t, f, "admin")
	front := readBundle(t, f, "frontend-1")
	var workerURL string
	for _, p := range f.Procs {
		if p.Role == "worker" {
			workerURL = p.Addr
		}
	}
	if !strings.HasPrefix(workerURL, "https://") {
		t.Fatalf("worker endpoint %q is not TLS", workerURL)
	}
	// The cluster's CA, trusted, without a certificate of our own.
	anonymous := admin.tls.Client()
	anonymous.Certificates = nil

	t.Run("nats", func(t *testing.T) {
		natsCases := []struct {
			name string
			opts []nats.Option
			ok   bool
		}{
			{"operator with certificate and password", []nats.Option{nats.Secure(admin.tls.Client()), nats.UserInfo(admin.user.User, admin.user.Password)}, true},
			{"no credentials", []nats.Option{nats.Secure(&tls.Config{InsecureSkipVerify: true})}, false},
			{"right password, no cluster TLS", []nats.Option{nats.Secure(&tls.Config{InsecureSkipVerify: true}), nats.UserInfo(admin.user.User, admin.user.Password)}, false},
			{"certificate, no password", []nats.Option{nats.Secure(admin.tls.Client())}, false},
			{"certificate, another role's user with a wrong password", []nats.Option{nats.Secure(admin.tls.Client()), nats.UserInfo("worker", admin.user.Password)}, false},
			{"right password, no certificate", []nats.Option{nats.Secure(anonymous), nats.UserInfo(admin.user.User, admin.user.Password)}, false},
			{"right password, certificate of another CA", []nats.Option{nats.Secure(foreignCA(t, f, "admin")), nats.UserInfo(admin.user.User, admin.user.Password)}, false},
		}
		for _, tc := range natsCases {
			opts := append([]nats.Option{nats.Timeout(5 * time.Second), nats.NoReconnect()}, tc.opts...)
			nc, err := nats.Connect(f.NATS[0], opts...)
			if err == nil {
				// Make sure the server has accepted us (a refusal may come after the handshake).
				err = nc.Flush()
				nc.Close()
			}
			refusedByServer(t, tc.name, err)
			if (err == nil) != tc.ok {
				t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
			} else {
				t.Logf("%s: %v", tc.name, err)
			}
		}
	})

	t.Run("worker", func(t *testing.T) {
		call := func(url string, c *tls.Config, token string) (int, error) {
			cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
			req, _ := http.NewRequest(http.MethodPost, url+"/kiln/envs/none/invoke", bytes.NewReader([]byte("{}")))
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := cl.Do(req)
			if err != nil {
				return 0, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode, nil
		}
		token := front.identity.Token
		if token == "" {
			t.Fatal("frontend bundle holds no cluster token")
		}
		workerCases := []struct {
			name   string
			url    string
			tls    *tls.Config
			token  string
			status int // 0: the connection is refused
		}{
			// Through every check to the API, which knows no such environment.
			{"frontend certificate and token", workerURL, front.tls.Client(), token, http.StatusNotFound},
			{"frontend certificate, no token", workerURL, front.tls.Client(), "", http.StatusUnauthorized},
			{"frontend certificate, wrong token", workerURL, front.tls.Client(), token[:len(token)-1] + "x", http.StatusUnauthorized},
			{"no certificate", workerURL, anonymous, token, 0},
			{"certificate of another CA", workerURL, foreignCA(t, f, "frontend"), token, 0},
			{"a worker's certificate", workerURL, readBundle(t, f, "worker-a1").tls.Client(), token, 0},
			{"the operator's certificate", workerURL, admin.tls.Client(), token, 0},
			{"plain HTTP", "http://" + strings.TrimPrefix(workerURL, "https://"), nil, token, http.StatusBadRequest},
		}
		for _, tc := range workerCases {
			status, err := call(tc.url, tc.tls, tc.token)
			refusedByServer(t, tc.name, err)
			if status != tc.status {
				t.Errorf("%s: status %d (%v), want %d", tc.name, status, err, tc.status)
			} else {
				t.Logf("%s: %d %v", tc.name, status, err)
			}
		}
	})

	t.Run("key service", func(t *testing.T) {
		worker := readBundle(t, f, "worker-a1")
		if worker.identity.ImageKey != nil {
			t.Error("a worker's identity holds the image master key")
		}
		if readBundle(t, f, "controlplane-1").identity.ImageKey == nil {
			t.Error("a control plane's identity holds no image key")
		}
		// A worker is answered: the service verified it and refuses a key
		// that is not the account's.
		nc := worker.connect(t, f)
		if _, err := keys.NewClient(nc, worker.tls).Unwrap(ctx, "111111111111", []byte("not a wrapped key")); !errors.Is(err, keys.ErrDenied) {
			t.Errorf("a worker asked: %v, want ErrDenied", err)
		}
		// NATS keeps the other roles off the subject: a frontend may
		// neither ask nor answer there, and a worker may not answer; nor
		// may either ask for a collection or answer one.
		for _, tc := range []struct {
			who       bundle
			subscribe bool
			subject   string
		}{{front, false, keys.Subject}, {front, true, keys.Subject}, {worker, true, keys.Subject},
			{worker, false, roles.CollectSubject}, {front, false, roles.CollectSubject}, {worker, true, roles.CollectSubject}} {
			violations := make(chan error, 4)
			nc := tc.who.connect(t, f, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
			var err error
			if tc.subscribe {
				_, err = nc.QueueSubscribe(tc.subject, "q", func(*nats.Msg) {})
			} else {
				err = nc.Publish(tc.subject, []byte("{}"))
			}
			if err := violated(nc, violations, err); !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("%s %s subscribe=%v: %v, want a permissions violation", tc.who.user.User, tc.subject, tc.subscribe, err)
			}
		}
	})

	t.Run("inboxes", func(t *testing.T) { inboxes(t, f) })

	t.Run("a new host joins", func(t *testing.T) {
		out, err := exec.Command(kilnBinary(t), "cluster", "certs", "--dir", f.Dir, "--name", "worker-x", "--role", "worker",
			"--host", "127.0.0.1").Output()
		if err != nil {
			t.Fatalf("kiln cluster certs: %v", err)
		}
		var issued struct {
			Settings map[string]string `json:"settings"`
		}
		if err := json.Unmarshal(out, &issued); err != nil {
			t.Fatalf("kiln cluster certs printed %s: %v", out, err)
		}
		settings := map[string]any{"name": "worker-x", "zone": "a", "nats": f.NATS, "listen": "127.0.0.1:0",
			"data": t.TempDir(), "partitions": f.Partitions}
		for k, v := range issued.Settings {
			settings[k] = v
		}
		config := filepath.Join(t.TempDir(), "config.json")
		b, _ := json.Marshal(settings)
		if err := os.WriteFile(config, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(kilnBinary(t), "worker", "--config", config)
		logs := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("worker-x log:\n%s", logs)
			}
		}()
		// A process start and its first placement report: seconds, and more
		// on a loaded host.
		for end := time.Now().Add(wait.Deadline); ; time.Sleep(100 * time.Millisecond) {
			st, err := f.Status(ctx, "")
			if err == nil && slices.ContainsFunc(st.Workers, func(w cluster.WorkerStatus) bool {
				return w.ID == "worker-x" && w.Healthy && strings.HasPrefix(w.Addr, "https://")
			}) {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("worker-x did not join: %+v %v", st, err)
			}
		}
	})

	t.Run("secrets at rest", func(t *testing.T) {
		secrets := []string{f.SecretAccessKey, front.identity.Token, admin.user.Password, front.user.Password}
		filepath.WalkDir(f.Dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			switch filepath.Base(p) {
			case "key.pem", "ca-key.pem", "nats.json", "identity.json", "users.json", "route.json", "config.json", "secrets.json", "cluster.json":
				if fi, _ := d.Info(); fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v", p, fi.Mode().Perm())
				}
			}
			return nil
		})
		for _, p := range f.Procs {
			env, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/environ")
			if errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s is not running", p.Name)
			}
			for _, s := range secrets {
				if s != "" && bytes.Contains(env, []byte(s)) {
					t.Errorf("%s has a secret in its environment", p.Name)
				}
			}
		}
	})
}

// inboxes: a worker's and a frontend's credentials may not subscribe to
// replies that are not theirs (the default inboxes, the control plane's,
// the JetStream API's advisories, a wildcard spanning them), while the
// control plane's own request/reply and KV reads (a direct get, the
// leader's message get, a watch) work, answered by a worker too.
func inboxes(t *testing.T, f *cluster.File) {
	cp, worker, front := readBundle(t, f, "controlplane-1"), readBundle(t, f, "worker-a1"), readBundle(t, f, "frontend-1")
	for _, who := range []bundle{worker, front} {
		for _, subj := range []string{"_INBOX.>", "_INBOX_controlplane.>", "_INBOX_controlplane.*", ">", "*.>", "$JS.EVENT.>", "$SYS.>"} {
			violations := make(chan error, 4)
			nc := who.connect(t, f, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
			_, err := nc.SubscribeSync(subj)
			if err := violated(nc, violations, err); !errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("%s subscribed to %s: %v, want a permissions violation", who.user.User, subj, err)
			}
		}
	}

	cpc := cp.connect(t, f)
	js, err := jetstream.New(cpc)
	if err != nil {
		t.Fatal(err)
	}
	const bucket = "kiln-inbox-test"
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	secret := "secret-" + rand.Text()
	if _, err := kv.Put(ctx, "k", []byte(secret)); err != nil {
		t.Fatal(err)
	}
	// A worker answers: it may publish to another role's inbox.
	wc := worker.connect(t, f)
	if _, err := wc.Subscribe("kiln.test.inbox", func(m *nats.Msg) { m.Respond([]byte(secret)) }); err != nil {
		t.Fatal(err)
	}
	if err := wc.Flush(); err != nil {
		t.Fatal(err)
	}
	reads := map[string]func() ([]byte, error){
		"request": func() ([]byte, error) {
			m, err := cpc.Request("kiln.test.inbox", nil, 10*time.Second)
			if err != nil {
				return nil, err
			}
			return m.Data, nil
		},
		"direct get": func() ([]byte, error) {
			e, err := kv.Get(ctx, "k")
			if err != nil {
				return nil, err
			}
			return e.Value(), nil
		},
		"leader get": func() ([]byte, error) {
			v, _, err := natsd.LeaderGet(ctx, cpc, bucket, "k")
			return v, err
		},
		"watch": func() ([]byte, error) {
			w, err := kv.Watch(ctx, "k")
			if err != nil {
				return nil, err
			}
			defer w.Stop()
			select {
			case e := <-w.Updates():
				if e == nil {
					return nil, errors.New("no entry")
				}
				return e.Value(), nil
			case <-time.After(30 * time.Second):
				return nil, errors.New("no update")
			}
		},
	}
	for name, read := range reads {
		if v, err := read(); err != nil || string(v) != secret {
			t.Errorf("control plane's %s: %q, %v; want the value", name, v, err)
		}
	}
}
