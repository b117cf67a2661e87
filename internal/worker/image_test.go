package worker

import (
	"slices"
	"testing"
)

func TestMergeEnv(t *testing.T) {
	for _, tc := range []struct {
		name             string
		env, image, want []string
	}{
		{"no image env", []string{"A=1"}, nil, []string{"A=1"}},
		{"image adds", []string{"A=1"}, []string{"B=2"}, []string{"A=1", "B=2"}},
		{"function and Lambda win", []string{"A=1", "AWS_REGION=r"}, []string{"A=image", "AWS_REGION=x"}, []string{"A=1", "AWS_REGION=r"}},
		{"image wins over Kiln's defaults", []string{"PATH=/usr/bin", "LD_LIBRARY_PATH=/lib"}, []string{"PATH=/var/lang/bin:/usr/bin"},
			[]string{"PATH=/var/lang/bin:/usr/bin", "LD_LIBRARY_PATH=/lib"}},
		{"last image value, first position", nil, []string{"B=1", "C=3", "B=2", "bad"}, []string{"B=2", "C=3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mergeEnv(tc.env, tc.image); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
