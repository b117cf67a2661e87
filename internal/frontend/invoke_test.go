package frontend

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/kiln-dev/kiln/internal/placement"
)

// TestBodyLimit: invokes get Lambda's payload limits by invocation type;
// nothing else is the frontend's to limit.
func TestBodyLimit(t *testing.T) {
	for _, c := range []struct {
		method, path, invocationType string
		limit                        int64 // 0: not an invoke
		op                           string
	}{
		{"POST", "/2015-03-31/functions/f/invocations", "", MaxSyncPayload, "InvokeFunction"},
		{"POST", "/2015-03-31/functions/f/invocations", "RequestResponse", MaxSyncPayload, "InvokeFunction"},
		{"POST", "/2015-03-31/functions/f/invocations", "Event", MaxAsyncPayload, "InvokeAsync"},
		{"POST", "/2021-11-15/functions/f/response-streaming-invocations", "", MaxSyncPayload, "InvokeFunction"},
		{"GET", "/2015-03-31/functions/f/invocations", "", 0, ""},
		{"POST", "/2015-03-31/functions//invocations", "", 0, ""}, // no name: no invoke
		{"POST", "/2015-03-31/functions/invocations", "", 0, ""},
		{"POST", "/2015-03-31/functions/f/code", "", 0, ""},
		{"POST", "/", "", 0, ""},
	} {
		r := httptest.NewRequest(c.method, c.path, nil)
		if c.invocationType != "" {
			r.Header.Set("X-Amz-Invocation-Type", c.invocationType)
		}
		limit, tooLarge, ok := BodyLimit(r)
		switch {
		case ok != (c.limit != 0) || limit != c.limit:
			t.Errorf("%s %s %s: limit %d (ok %v), want %d", c.method, c.path, c.invocationType, limit, ok, c.limit)
		case ok && (tooLarge.Type != api.RequestEntityTooLarge || tooLarge.Status != 413 || !strings.Contains(tooLarge.Message, c.op)):
			t.Errorf("%s %s: too large is %+v, want a 413 naming %s", c.path, c.invocationType, tooLarge, c.op)
		}
	}
}

// TestPayloadAndClientContext: what an invoke's payload and client context
// may be, and Lambda's error for what they may not.
func TestPayloadAndClientContext(t *testing.T) {
	for _, c := range []struct {
		payload, want string // want "!" : InvalidRequestContentException
	}{
		{"", "{}"},
		{`{"a":1}`, `{"a":1}`},
		{`"text"`, `"text"`},
		{`[1,2]`, `[1,2]`},
		{`{"a":`, "!"},
		{"not json", "!"},
	} {
		got, err := CheckPayload([]byte(c.payload))
		if c.want == "!" {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Type != api.InvalidRequestContent || ae.Status != 400 {
				t.Errorf("payload %q: %v, want InvalidRequestContentException", c.payload, err)
			}
			continue
		}
		if err != nil || string(got) != c.want {
			t.Errorf("payload %q: %q, %v; want %q", c.payload, got, err, c.want)
		}
	}
	b64 := base64.StdEncoding.EncodeToString
	for _, c := range []struct {
		cc, want string // want "!": InvalidRequestContentException
	}{
		{"", ""},
		{b64([]byte(`{"custom":{"k":"v"}}`)), `{"custom":{"k":"v"}}`},
		{"%%%", "!"},
		{b64([]byte("not json")), "!"},
		{b64([]byte(`{"k":"` + strings.Repeat("x", 2700) + `"}`)), "!"}, // over 3583 bytes encoded
	} {
		got, err := decodeClientContext(c.cc)
		if c.want == "!" {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Type != api.InvalidRequestContent {
				t.Errorf("client context %.20q: %v, want InvalidRequestContentException", c.cc, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("client context %.20q: %q, %v; want %q", c.cc, got, err, c.want)
		}
	}
}

// TestTraceID: the caller's X-Ray header is kept; without one, a new root.
func TestTraceID(t *testing.T) {
	if got := traceID("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"); got != "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1" {
		t.Fatalf("given header changed: %q", got)
	}
	root := regexp.MustCompile(`^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Sampled=0$`)
	a, b := traceID(""), traceID("")
	if !root.MatchString(a) || !root.MatchString(b) || a == b {
		t.Fatalf("new trace ids %q, %q", a, b)
	}
}

// scriptWorker answers invokes from a script, one result per invoke in
// order; it stands at the edge where a real worker would run the function
// (server's tests run that one), so that the frontend's own decisions can
// be driven without processes.
type scriptWorker struct {
	mu      sync.Mutex
	n       int
	script  []func(envID string) (*invoke.Result, error)
	invoked []string // env ids, in order
}

func (w *scriptWorker) ID() string { return "w1" }

func (w *scriptWorker) Create(context.Context, invoke.EnvSpec) (*invoke.EnvInfo, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	return &invoke.EnvInfo{ID: "e" + string(rune('0'+w.n))}, nil
}

func (w *scriptWorker) Invoke(_ context.Context, envID string, _ *invoke.Invocation) (*invoke.Result, error) {
	w.mu.Lock()
	step := w.script[0]
	w.script = w.script[1:]
	w.invoked = append(w.invoked, envID)
	w.mu.Unlock()
	return step(envID)
}

func (w *scriptWorker) Destroy(context.Context, string) error { return nil }

func ok(string) (*invoke.Result, error) {
	return &invoke.Result{Payload: []byte(`"ok"`), Reusable: true}, nil
}

// openStore is a function store on an embedded JetStream.
func openStore(t *testing.T) *metadata.Store {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	store, err := metadata.Open(context.Background(), js, metadata.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// TestInvokeLeases: the frontend's part of an invoke with the real
// counting and assignment services: an environment that vanished before
// its invoke is retried on another, one that crashed is not reused, and
// the concurrency slot is given back whatever happened.
func TestInvokeLeases(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	const account = "123456789012"
	if err := store.Create(ctx, &metadata.Function{Account: account, Name: "f", Latest: api.FunctionConfiguration{
		FunctionName: "f", Version: metadata.Latest, RevisionId: "r1", MemorySize: 128, State: "Active"}}); err != nil {
		t.Fatal(err)
	}
	place := placement.New()
	place.Register(placement.WorkerInfo{ID: "w1"})
	envs := assignment.New(assignment.Config{Placement: place})
	t.Cleanup(envs.Close)
	w := &scriptWorker{}
	envs.AddWorker(w)
	counter := counting.New(counting.Config{})
	f, err := New(ctx, Config{Functions: store, Counter: counter, Assignment: envs, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	crashed := func(string) (*invoke.Result, error) {
		return &invoke.Result{ErrorType: "Runtime.ExitError", Reusable: false}, nil
	}
	gone := func(string) (*invoke.Result, error) { return nil, invoke.ErrNoEnv }
	for _, c := range []struct {
		name    string
		script  []func(string) (*invoke.Result, error)
		invoked []string // environments, in order
		errType string   // the response's ErrorType
		fail    bool     // Invoke returns an error
		idle    int      // idle environments after
	}{
		{"cold", []func(string) (*invoke.Result, error){ok}, []string{"e1"}, "", false, 1},
		{"warm", []func(string) (*invoke.Result, error){ok}, []string{"e1"}, "", false, 1},
		{"crash: not reused", []func(string) (*invoke.Result, error){crashed}, []string{"e1"}, "Runtime.ExitError", false, 0},
		{"next one is cold", []func(string) (*invoke.Result, error){ok}, []string{"e2"}, "", false, 1},
		{"vanished env: retried on a new one", []func(string) (*invoke.Result, error){gone, ok}, []string{"e2", "e3"}, "", false, 1},
		{"vanished four times: given up", []func(string) (*invoke.Result, error){gone, gone, gone, gone}, []string{"e3", "e4", "e5", "e6"}, "", true, 0},
	} {
		w.mu.Lock()
		w.script, w.invoked = c.script, nil
		w.mu.Unlock()
		res, err := f.Invoke(ctx, invoke.Request{Account: account, Function: "f"})
		switch {
		case c.fail && !errors.Is(err, invoke.ErrNoEnv):
			t.Fatalf("%s: %v, want ErrNoEnv", c.name, err)
		case !c.fail && err != nil:
			t.Fatalf("%s: %v", c.name, err)
		case !c.fail && (res.ErrorType != c.errType || res.ExecutedVersion != metadata.Latest):
			t.Fatalf("%s: %+v", c.name, res)
		}
		if strings.Join(w.invoked, ",") != strings.Join(c.invoked, ",") {
			t.Fatalf("%s: invoked %v, want %v", c.name, w.invoked, c.invoked)
		}
		if st := envs.Stats(account, "f"); st.Idle != c.idle || st.Busy != 0 {
			t.Fatalf("%s: environments %+v, want %d idle", c.name, st, c.idle)
		}
		if fn, acct := counter.InUse(counting.Key{Account: account, Function: "f"}); fn != 0 || acct != 0 {
			t.Fatalf("%s: %d slots of the function (%d of the account) still taken", c.name, fn, acct)
		}
	}
}
