package esm

import (
	"errors"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/api"
)

func TestRequestCheck(t *testing.T) {
	n := func(v int) *int { return &v }
	s := func(v string) *string { return &v }
	deep := strings.Repeat(`{"a":`, 11) + `[1]` + strings.Repeat(`}`, 11)
	for _, c := range []struct {
		name string
		req  Request
		fifo bool
		want string // "" for valid, else a fragment of the message
	}{
		{"defaults", Request{}, false, ""},
		{"batch 10000 with a window", Request{BatchSize: n(10000), MaximumBatchingWindowInSeconds: n(1)}, false, ""},
		{"batch 0", Request{BatchSize: n(0)}, false, "greater than or equal to 1"},
		{"batch 10001", Request{BatchSize: n(10001)}, false, "less than or equal to 10000"},
		{"batch 11 without a window", Request{BatchSize: n(11)}, false, "Maximum batch window in seconds must be greater than 0"},
		{"fifo batch 11", Request{BatchSize: n(11), MaximumBatchingWindowInSeconds: n(1)}, true, "FIFO"},
		{"fifo window", Request{MaximumBatchingWindowInSeconds: n(1)}, true, "FIFO"},
		{"window 301", Request{MaximumBatchingWindowInSeconds: n(301)}, false, "less than or equal to 300"},
		{"window -1", Request{MaximumBatchingWindowInSeconds: n(-1)}, false, "greater than or equal to 0"},
		{"concurrency 1", Request{ScalingConfig: &ScalingConfig{MaximumConcurrency: n(1)}}, false, "greater than or equal to 2"},
		{"concurrency 1001", Request{ScalingConfig: &ScalingConfig{MaximumConcurrency: n(1001)}}, false, "less than or equal to 1000"},
		{"response type", Request{FunctionResponseTypes: &[]string{"Everything"}}, false, "enum value set"},
		{"filter not JSON", Request{FilterCriteria: &FilterCriteria{Filters: []Filter{{Pattern: `{"body":`}}}}, false, "Invalid filter pattern definition"},
		{"filter too deep", Request{FilterCriteria: &FilterCriteria{Filters: []Filter{{Pattern: deep}}}}, false, "Invalid filter pattern definition"},
		{"six filters", Request{FilterCriteria: &FilterCriteria{Filters: make([]Filter, 6)}}, false, "maximum number of filters"},
		{"filter too long", Request{FilterCriteria: &FilterCriteria{Filters: []Filter{{Pattern: strings.Repeat(" ", 4097)}}}}, false, "length less than or equal to 4096"},
		{"stream setting", Request{StartingPosition: s("LATEST")}, false, "Unsupported StartingPosition"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind := KindQueue
			if c.fifo {
				kind = KindFifoQueue
			}
			err := c.req.Check(kind, true)
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var e *api.Error
			if !errors.As(err, &e) || e.Type != api.InvalidParameterValue || e.Status != 400 || !strings.Contains(e.Message, c.want) {
				t.Fatalf("error %v, want InvalidParameterValueException with %q", err, c.want)
			}
		})
	}
}
