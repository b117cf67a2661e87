package frontend

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/metadata"
)

// Invoke takes Event and InvokeWithResponseStream does not; both answer
// DryRun themselves and name the types they take when refusing one.
func TestInvocationType(t *testing.T) {
	target := &metadata.Target{Config: &api.FunctionConfiguration{Version: "3"}}
	for _, tc := range []struct {
		header     string
		event      bool
		typ        string
		ok         bool
		status     int
		errMention string
	}{
		{"", true, "RequestResponse", true, 200, ""},
		{"RequestResponse", false, "RequestResponse", true, 200, ""},
		{"Event", true, "Event", true, 200, ""},
		{"Event", false, "", false, 400, "[RequestResponse, DryRun]"},
		{"DryRun", false, "", false, http.StatusNoContent, ""},
		{"DryRun", true, "", false, http.StatusNoContent, ""},
		{"Later", true, "", false, 400, "[Event, RequestResponse, DryRun]"},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/", nil)
		r.Header.Set("X-Amz-Invocation-Type", tc.header)
		var failed error
		fail := func(err error) { failed = err; api.WriteError(w, err) }
		typ, ok := invocationType(w, r, target, fail, tc.event)
		if ok != tc.ok || (ok && typ != tc.typ) {
			t.Errorf("%q (event %v): %q %v, want %q %v", tc.header, tc.event, typ, ok, tc.typ, tc.ok)
		}
		if !ok && w.Code != tc.status {
			t.Errorf("%q (event %v): status %d, want %d", tc.header, tc.event, w.Code, tc.status)
		}
		if tc.status == http.StatusNoContent && w.Header().Get("X-Amz-Executed-Version") != "3" {
			t.Errorf("%q: DryRun without the version", tc.header)
		}
		var e *api.Error
		if tc.errMention != "" && (!errors.As(failed, &e) || !strings.Contains(e.Error(), tc.errMention)) {
			t.Errorf("%q (event %v): %v, want a validation error naming %s", tc.header, tc.event, failed, tc.errMention)
		}
	}
}
