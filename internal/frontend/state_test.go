package frontend_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// TestInvokeRefusedUntilActive: a function whose image is being imported
// (State Pending), or whose import failed, is refused with Lambda's
// ResourceConflictException; once Active, it resolves.
func TestInvokeRefusedUntilActive(t *testing.T) {
	ctx := context.Background()
	store := frontend.OpenStore(t)
	f, err := frontend.New(ctx, frontend.Config{Functions: store, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	const account = "123456789012"
	fn := &metadata.Function{Account: account, Name: "img", Latest: api.FunctionConfiguration{FunctionName: "img",
		Version: metadata.Latest, PackageType: "Image", State: "Pending", StateReasonCode: "Creating"}}
	if err := store.Create(ctx, fn); err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{"Pending", "Failed", "Active"} {
		if _, err := store.Modify(ctx, account, "img", func(fn *metadata.Function) error {
			fn.Latest.State = state
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		f.Forget(account, "img") // read the change now, not when the watch brings it
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			_, err = f.Resolve(ctx, account, "img", "")
			var ae *api.Error
			if state == "Active" && err == nil || state != "Active" && errors.As(err, &ae) && ae.Type == api.ResourceConflict {
				break
			}
		}
		var ae *api.Error
		switch {
		case state == "Active" && err != nil:
			t.Fatalf("Active: %v", err)
		case state != "Active" && !(errors.As(err, &ae) && ae.Type == api.ResourceConflict && ae.Status == 409):
			t.Fatalf("%s: %v; want ResourceConflictException", state, err)
		}
	}
}
