package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/console"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/kiln-dev/kiln/internal/logs"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

const region = "us-east-1"

var (
	admin = auth.Credential{AccessKeyID: "AKIAADMIN00000000001", SecretAccessKey: "admin/secret+key", Account: "111111111111"}
	user  = auth.Credential{AccessKeyID: "AKIAUSER000000000002", SecretAccessKey: "user/secret+key", Account: "222222222222"}
)

// fleet is the fleet of the test: one worker holding one environment of
// each account's function (assignment's own source is tested in server
// and cluster, by the browser test).
type fleet struct{}

func (fleet) Fleet(context.Context) (*console.Fleet, error) {
	return &console.Fleet{Mode: "test", Workers: []console.Worker{{ID: "w1", Healthy: true}},
		Environments: []console.Environment{
			{ID: "e1", Account: admin.Account, Function: "admins-fn", State: "idle", Worker: "w1"},
			{ID: "e2", Account: user.Account, Function: "users-fn", State: "busy", Worker: "w1"},
		}}, nil
}

type env struct {
	logs   *logs.Store
	con    *console.Console
	srv    *httptest.Server
	keys   *auth.Keyring
	series *console.Series
}

// start serves a console over a real metadata store (embedded JetStream)
// holding one function of each account, with two keys: the admin's and a
// user's of another account.
func start(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	js, _ := jetstream.New(natstest.Connect(t))
	store, err := metadata.Open(ctx, js, metadata.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ account, name string }{{admin.Account, "admins-fn"}, {user.Account, "users-fn"}} {
		err := store.Create(ctx, &metadata.Function{Account: f.account, Name: f.name,
			Latest: api.FunctionConfiguration{FunctionName: f.name, Runtime: "provided.al2023", MemorySize: 128, Version: "$LATEST"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	logStore, err := logs.Open(ctx, js, logs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logStore.Close() })
	keys := auth.NewKeyring(admin, user)
	keys.Region = region
	series := console.NewSeries(0)
	c := console.New(console.Config{Keyring: keys, Region: region, Admin: func(a string) bool { return a == admin.Account },
		Functions: store, Series: series, Fleet: fleet{}, Logs: logStore, Every: 50 * time.Millisecond})
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return &env{logs: logStore, con: c, srv: srv, keys: keys, series: series}
}

// signIn signs in as the page does and returns a client holding the cookie.
func (e *env) signIn(t *testing.T, c auth.Credential) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	var n struct{ Nonce string }
	getJSON(t, client, e.srv.URL+"/console/api/nonce", http.StatusOK, &n)
	body, _ := json.Marshal(map[string]string{"accessKeyId": c.AccessKeyID, "nonce": n.Nonce,
		"proof": console.SignInProof(c.AccessKeyID, c.SecretAccessKey, region, n.Nonce)})
	resp, err := client.Post(e.srv.URL+"/console/api/signin", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign in: %s", resp.Status)
	}
	ck := resp.Cookies()
	if len(ck) != 1 || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Path != "/console" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/console", ck)
	}
	return client
}

func getJSON(t *testing.T, c *http.Client, url string, status int, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %s %s, want %d", url, resp.Status, b, status)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, b)
		}
	}
}

func names(rows []console.FunctionRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.Account+"/"+r.Name)
	}
	return out
}

// A user's key sees its account's functions only, and neither another
// account's function nor the fleet; the admin key sees everything.
func TestAccountsSeeTheirOwn(t *testing.T) {
	e := start(t)
	u, a := e.signIn(t, user), e.signIn(t, admin)
	var rows []console.FunctionRow
	getJSON(t, u, e.srv.URL+"/console/api/functions", http.StatusOK, &rows)
	if got := strings.Join(names(rows), ","); got != user.Account+"/users-fn" {
		t.Errorf("the user sees %s, want only its own function", got)
	}
	getJSON(t, u, e.srv.URL+"/console/api/functions/"+admin.Account+"/admins-fn", http.StatusNotFound, nil)
	getJSON(t, u, e.srv.URL+"/console/api/functions/"+admin.Account+"/admins-fn/logs", http.StatusNotFound, nil)
	getJSON(t, u, e.srv.URL+"/console/api/stream?view=function&account="+admin.Account+"&name=admins-fn", http.StatusNotFound, nil)
	getJSON(t, u, e.srv.URL+"/console/api/fleet", http.StatusForbidden, nil)
	var view console.FunctionView
	getJSON(t, u, e.srv.URL+"/console/api/functions/"+user.Account+"/users-fn", http.StatusOK, &view)
	if len(view.Environments) != 1 || view.Environments[0].ID != "e2" {
		t.Errorf("the user's function shows environments %+v, want e2 only", view.Environments)
	}

	getJSON(t, a, e.srv.URL+"/console/api/functions", http.StatusOK, &rows)
	if got := strings.Join(names(rows), ","); got != admin.Account+"/admins-fn,"+user.Account+"/users-fn" {
		t.Errorf("the admin sees %s, want both accounts' functions", got)
	}
	getJSON(t, a, e.srv.URL+"/console/api/functions/"+user.Account+"/users-fn", http.StatusOK, nil)
	var f console.Fleet
	var raw json.RawMessage
	getJSON(t, a, e.srv.URL+"/console/api/fleet", http.StatusOK, &raw)
	if strings.Contains(string(raw), "null") { // the source gave no partitions
		t.Errorf("the fleet has a null list: %s", raw)
	}
	json.Unmarshal(raw, &f)
	if len(f.Environments) != 2 || len(f.ColdStarts) != console.Minutes {
		t.Errorf("fleet %+v: want both environments and an hour of cold starts", f)
	}
}

// A key added to the keyring at run time (as `kiln accounts keys add`
// does) signs in at once, and one of the admin account's keys is admin as
// the first is; removed, its session is refused.
func TestKeysAddedAtRunTime(t *testing.T) {
	e := start(t)
	second := auth.Credential{AccessKeyID: "AKIAADMIN00000000003", SecretAccessKey: "second/admin+key", Account: admin.Account}
	e.keys.Add(second)
	c := e.signIn(t, second)
	var me struct {
		Account string
		Admin   bool
	}
	getJSON(t, c, e.srv.URL+"/console/api/whoami", http.StatusOK, &me)
	if me.Account != admin.Account || !me.Admin {
		t.Errorf("the admin account's second key is %+v, want the admin", me)
	}
	getJSON(t, c, e.srv.URL+"/console/api/functions/"+user.Account+"/users-fn", http.StatusOK, nil)
	getJSON(t, c, e.srv.URL+"/console/api/fleet", http.StatusOK, nil)
	e.keys.Remove(second.AccessKeyID)
	getJSON(t, c, e.srv.URL+"/console/api/functions", http.StatusForbidden, nil)
}

// The JSON endpoints refuse requests with neither a session nor a valid
// SigV4 signature, and take a signature made by the AWS SDK's signer.
func TestEndpointsRefuseUnsigned(t *testing.T) {
	e := start(t)
	paths := []string{"/console/api/whoami", "/console/api/functions", "/console/api/fleet",
		"/console/api/functions/" + user.Account + "/users-fn", "/console/api/functions/" + user.Account + "/users-fn/logs",
		"/console/api/stream?view=functions"}
	jar, _ := cookiejar.New(nil)
	forged := &http.Client{Jar: jar}
	u, _ := http.NewRequest("GET", e.srv.URL+"/console/", nil)
	// A session cookie of the user's key, signed with a wrong secret, and
	// one whose expiry was moved.
	valid := e.signIn(t, user).Jar.Cookies(u.URL)[0].Value
	parts := strings.Split(valid, ".")
	for _, v := range []string{parts[0] + "." + parts[1] + "." + strings.Repeat("0", 64), parts[0] + ".9999999999." + parts[2], "garbage"} {
		jar.SetCookies(u.URL, []*http.Cookie{{Name: console.CookieName, Value: v, Path: "/console"}})
		for _, p := range paths {
			getJSON(t, forged, e.srv.URL+p, http.StatusForbidden, nil)
		}
	}
	for _, p := range paths {
		getJSON(t, http.DefaultClient, e.srv.URL+p, http.StatusForbidden, nil)
	}
	sign := func(c auth.Credential, p string) *http.Response {
		req, _ := http.NewRequest("GET", e.srv.URL+p, nil)
		sum := sha256.Sum256(nil)
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey},
			req, hex.EncodeToString(sum[:]), "lambda", region, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := sign(user, "/console/api/functions"); resp.StatusCode != http.StatusOK {
		t.Errorf("SigV4-signed GET: %s", resp.Status)
	}
	if resp := sign(user, "/console/api/fleet"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("SigV4-signed GET of the fleet by a user: %s, want 403", resp.Status)
	}
	wrong := user
	wrong.SecretAccessKey = "not the secret"
	if resp := sign(wrong, "/console/api/functions"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET signed with a wrong secret: %s, want 403", resp.Status)
	}
}

// Sign-in: a proof made with a wrong secret, a nonce used twice or forged,
// and a form-encoded post are refused.
func TestSignInRefusals(t *testing.T) {
	e := start(t)
	var n struct{ Nonce string }
	getJSON(t, http.DefaultClient, e.srv.URL+"/console/api/nonce", http.StatusOK, &n)
	post := func(ctype, akid, nonce, proof string) int {
		body, _ := json.Marshal(map[string]string{"accessKeyId": akid, "nonce": nonce, "proof": proof})
		resp, err := http.Post(e.srv.URL+"/console/api/signin", ctype, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	good := console.SignInProof(user.AccessKeyID, user.SecretAccessKey, region, n.Nonce)
	forged := n.Nonce[:len(n.Nonce)-1] + map[bool]string{true: "1", false: "0"}[strings.HasSuffix(n.Nonce, "0")]
	for name, c := range map[string]struct {
		ctype, akid, nonce, proof string
	}{
		"wrong secret":  {"application/json", user.AccessKeyID, n.Nonce, console.SignInProof(user.AccessKeyID, "guess", region, n.Nonce)},
		"other key":     {"application/json", admin.AccessKeyID, n.Nonce, good},
		"forged nonce":  {"application/json", user.AccessKeyID, forged, console.SignInProof(user.AccessKeyID, user.SecretAccessKey, region, forged)},
		"form encoding": {"application/x-www-form-urlencoded", user.AccessKeyID, n.Nonce, good},
		"unknown key":   {"application/json", "AKIANOBODY", n.Nonce, good},
	} {
		if got := post(c.ctype, c.akid, c.nonce, c.proof); got < 400 {
			t.Errorf("%s: signed in (%d)", name, got)
		}
	}
	if got := post("application/json", user.AccessKeyID, n.Nonce, good); got != http.StatusOK {
		t.Fatalf("the right proof: %d", got)
	}
	if got := post("application/json", user.AccessKeyID, n.Nonce, good); got != http.StatusForbidden {
		t.Errorf("the same nonce again: %d, want 403", got)
	}
}

// The stream sends the function's view again when an invoke changed it.
func TestStreamSendsChanges(t *testing.T) {
	e := start(t)
	u := e.signIn(t, user)
	resp, err := u.Get(e.srv.URL + "/console/api/stream?view=function&account=" + user.Account + "&name=users-fn")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan console.FunctionView)
	go func() {
		dec := newSSE(resp.Body)
		for {
			name, data, err := dec()
			if err != nil {
				close(events)
				return
			}
			if name == "view" {
				var v console.FunctionView
				json.Unmarshal(data, &v)
				events <- v
			}
		}
	}()
	if v := <-events; v.Function.Invocations != 0 {
		t.Fatalf("first view: %d invocations", v.Function.Invocations)
	}
	e.series.Invoked(counting.Key{Account: user.Account, Function: "users-fn"}, frontend.Outcome{Duration: 3 * time.Millisecond})
	timeout := time.After(30 * time.Second)
	for {
		select {
		case v, ok := <-events:
			if !ok {
				t.Fatal("stream ended")
			}
			if v.Function.Invocations == 1 && v.Function.LastInvoke != nil {
				return
			}
		case <-timeout:
			t.Fatal("no view with the invoke")
		}
	}
}

// Close ends open streams, so that a server's Shutdown need not wait for
// pages that stay open.
func TestCloseEndsStreams(t *testing.T) {
	e := start(t)
	resp, err := e.signIn(t, admin).Get(e.srv.URL + "/console/api/stream?view=fleet")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	next := newSSE(resp.Body)
	if name, _, err := next(); err != nil || name != "view" {
		t.Fatalf("first event %q, %v", name, err)
	}
	e.con.Close()
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := next(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Errorf("stream ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream is still open after Close")
	}
}

// An open stream ends with a failure event when its key is removed (as
// `kiln accounts keys remove` does), rather than showing the account to a
// page whose key no longer exists.
func TestRemovedKeyEndsStream(t *testing.T) {
	e := start(t)
	doomed := auth.Credential{AccessKeyID: "AKIAUSER000000000004", SecretAccessKey: "doomed/key", Account: user.Account}
	e.keys.Add(doomed)
	resp, err := e.signIn(t, doomed).Get(e.srv.URL + "/console/api/stream?view=functions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	next := newSSE(resp.Body)
	if name, _, err := next(); err != nil || name != "view" {
		t.Fatalf("first event %q, %v", name, err)
	}
	e.keys.Remove(doomed.AccessKeyID)
	type event struct {
		name string
		data []byte
	}
	ended := make(chan event, 1)
	go func() {
		for {
			name, data, err := next()
			if err != nil || name == "failure" {
				ended <- event{name, data}
				return
			}
		}
	}()
	select {
	case ev := <-ended:
		if ev.name != "failure" || !strings.Contains(string(ev.data), "AccessDeniedException") {
			t.Errorf("the stream ended with %q %s, want an AccessDeniedException failure", ev.name, ev.data)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream is still open after its key was removed")
	}
}

// A function's logs: read from the last minutes, then after a cursor; a
// reconnecting page (Last-Event-ID: the cursor of the last lines it got) is
// sent only newer lines, and one with an id the logs did not make the
// last minutes again.
func TestLogsResume(t *testing.T) {
	e := start(t)
	u := e.signIn(t, user)
	write := func(text string) {
		e.logs.Append(user.Account, "/aws/lambda/users-fn", "s1", []logline.Line{{Time: time.Now(), Message: text}})
		if err := e.logs.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	write("one")
	var page console.LogPage
	getJSON(t, u, e.srv.URL+"/console/api/functions/"+user.Account+"/users-fn/logs", http.StatusOK, &page)
	if len(page.Events) != 1 || page.Events[0].Message != "one" || page.Cursor == "" {
		t.Fatalf("first read %+v", page)
	}
	write("two")
	for lastID, want := range map[string]string{page.Cursor: "two", "forged": "one,two"} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/console/api/stream?view=function&account="+user.Account+"&name=users-fn", nil)
		req.Header.Set("Last-Event-ID", lastID)
		resp, err := u.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		next := newSSE(resp.Body)
		for {
			name, data, err := next()
			if err != nil {
				t.Fatal(err)
			}
			if name != "logs" {
				continue
			}
			var evs []struct{ Message string }
			json.Unmarshal(data, &evs)
			var got []string
			for _, ev := range evs {
				got = append(got, ev.Message)
			}
			if strings.Join(got, ",") != want {
				t.Errorf("Last-Event-ID %q: sent %q, want %s", lastID, got, want)
			}
			break
		}
		resp.Body.Close()
	}
}
