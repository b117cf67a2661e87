package frontend_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/policy"
)

// lateWatch is the metadata store with a watch that has not delivered yet
// (a loaded host, a lagging replica): the frontend's cache learns nothing
// of writes from it.
type lateWatch struct{ *metadata.Store }

func (lateWatch) Watch(context.Context, func(string, string, *metadata.Function)) error { return nil }

// TestInvokeSeesWritesBeforeTheWatch: an alias created, or a permission
// added, right after the function was cached is invoked at once, without
// waiting for the watch to tell the cache (read your writes); what the
// store refuses stays refused.
func TestInvokeSeesWritesBeforeTheWatch(t *testing.T) {
	ctx := context.Background()
	store := frontend.OpenStore(t)
	f, err := frontend.New(ctx, frontend.Config{Functions: lateWatch{store}, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	const owner, other = "123456789012", "210987654321"
	latest := api.FunctionConfiguration{FunctionName: "fn", Version: metadata.Latest, State: "Active"}
	v1 := latest
	v1.Version = "1"
	if err := store.Create(ctx, &metadata.Function{Account: owner, Name: "fn", Latest: latest,
		Versions: map[string]*api.FunctionConfiguration{"1": &v1}, LastVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Resolve(ctx, owner, "fn", ""); err != nil { // cached now
		t.Fatal(err)
	}
	if _, err := f.Resolve(ctx, owner, "fn", "live"); err == nil {
		t.Fatal("a missing alias resolved")
	}
	if _, err := f.Resolve(ctx, other, "arn:aws:lambda:us-east-1:"+owner+":function:fn", ""); err == nil {
		t.Fatal("another account invoked without a permission")
	}
	if _, err := store.Modify(ctx, owner, "fn", func(fn *metadata.Function) error {
		fn.Aliases = map[string]*api.AliasConfiguration{"live": {Name: "live", FunctionVersion: "1"}}
		fn.Policies = map[string][]policy.Statement{"": {{Sid: "s", Action: "lambda:InvokeFunction", Principal: other}}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if tg, err := f.Resolve(ctx, owner, "fn", "live"); err != nil || tg.Config.Version != "1" {
		t.Fatalf("alias created a moment before: %+v %v", tg, err)
	}
	if _, err := f.Resolve(ctx, other, "arn:aws:lambda:us-east-1:"+owner+":function:fn", ""); err != nil {
		t.Fatalf("permission added a moment before: %v", err)
	}
}

// TestURLSeesWritesBeforeTheWatch: a function URL created right after its
// function was cached is served at once (here: up to the resource-policy
// check, which refuses), not answered 404 until the watch tells the cache.
func TestURLSeesWritesBeforeTheWatch(t *testing.T) {
	ctx := context.Background()
	store := frontend.OpenStore(t)
	f, err := frontend.New(ctx, frontend.Config{Functions: lateWatch{store}, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	const owner, id = "123456789012", "0123456789abcdefghijklmnopqrstuv"
	latest := api.FunctionConfiguration{FunctionName: "fn", Version: metadata.Latest, State: "Active"}
	if err := store.Create(ctx, &metadata.Function{Account: owner, Name: "fn", Latest: latest}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Resolve(ctx, owner, "fn", ""); err != nil { // cached now, without a URL
		t.Fatal(err)
	}
	if _, err := store.Modify(ctx, owner, "fn", func(fn *metadata.Function) error {
		fn.URLs = map[string]*metadata.URL{metadata.Latest: {ID: id, AuthType: "NONE", InvokeMode: "BUFFERED"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := store.PutURL(ctx, id, metadata.URLRef{Account: owner, Name: "fn", Qualifier: metadata.Latest}); err != nil {
		t.Fatal(err)
	}
	deny := func(context.Context, *metadata.Target, string, *auth.Caller) error { return errors.New("no statement") }
	w := httptest.NewRecorder()
	f.URLs(nil, deny).ServeHTTP(w, httptest.NewRequest("GET", frontend.URLPathPrefix+id+"/", nil))
	if w.Code != http.StatusForbidden {
		t.Fatalf("a URL created a moment before: %d %s, want 403 from the policy check", w.Code, w.Body)
	}
}
