package metadata

import (
	"errors"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
)

func TestResolve(t *testing.T) {
	f := &Function{
		Name:   "f",
		Latest: api.FunctionConfiguration{Version: Latest},
		Versions: map[string]*api.FunctionConfiguration{
			"1": {Version: "1"}, "2": {Version: "2"},
		},
		Aliases: map[string]*api.AliasConfiguration{
			"live":   {Name: "live", FunctionVersion: "1"},
			"canary": {Name: "canary", FunctionVersion: "1", RoutingConfig: &api.AliasRoutingConfiguration{AdditionalVersionWeights: map[string]float64{"2": 0.25}}},
			"broken": {Name: "broken", FunctionVersion: "9"},
		},
	}
	tests := []struct {
		qualifier string
		pick      float64
		want      string
		err       error
	}{
		{"", 0, Latest, nil},
		{Latest, 0, Latest, nil},
		{"2", 0, "2", nil},
		{"live", 0.1, "1", nil},
		{"canary", 0.1, "2", nil},  // inside the 25% share
		{"canary", 0.25, "1", nil}, // just outside it
		{"canary", 0.9, "1", nil},
		{"3", 0, "", ErrNotFound},
		{"nope", 0, "", ErrNotFound},
		{"broken", 0, "", ErrNotFound},
	}
	for _, tt := range tests {
		got, err := f.Resolve(tt.qualifier, tt.pick)
		if !errors.Is(err, tt.err) || err == nil && got.Version != tt.want {
			t.Errorf("Resolve(%q, %v) = %v, %v; want %s, %v", tt.qualifier, tt.pick, got, err, tt.want, tt.err)
		}
	}
	if got := f.SortedVersions(); len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("SortedVersions = %v", got)
	}
}
