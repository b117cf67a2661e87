package frontend

import (
	"errors"
	"strings"
	"testing"

	"github.com/kiln-dev/kiln/internal/api"
)

func TestLineage(t *testing.T) {
	const a, b = "arn:aws:lambda:us-east-1:123456789012:function:a", "arn:aws:lambda:us-east-1:123456789012:function:b"
	trace := "Root=1-5f84c7a6-0123456789abcdef01234567;Sampled=0"
	var err error
	// a calls b calls a ...: each function's count is its own.
	for i := 1; i <= MaxRecursion; i++ {
		if trace, err = lineage(trace, a, false); err != nil {
			t.Fatalf("hop %d of a: %v", i, err)
		}
		if trace, err = lineage(trace, b, i == MaxRecursion); err != nil {
			t.Fatalf("hop %d of b: %v", i, err)
		}
	}
	if !strings.HasPrefix(trace, "Root=1-5f84c7a6-0123456789abcdef01234567;Sampled=0;Lineage=") || strings.Count(trace, "Lineage=") != 1 {
		t.Fatalf("trace %q", trace)
	}
	_, err = lineage(trace, a, false)
	var e *api.Error
	if !errors.As(err, &e) || e.Type != api.RecursiveInvocation || e.Status != 400 {
		t.Fatalf("17th invoke of a: %v", err)
	}
	// b allows loops: its 17th and later invokes run.
	if trace, err = lineage(trace, b, true); err != nil || !strings.Contains(trace, ":17") {
		t.Fatalf("b allowed: %q %v", trace, err)
	}
	// A new chain starts at one; junk in the field is dropped.
	for _, tc := range []struct{ in, want string }{
		{"", "Lineage=" + hashOf(a) + ":1"},
		{"Root=x;Lineage=zz", "Root=x;Lineage=" + hashOf(a) + ":1"},
		{"Root=x;Lineage=" + hashOf(a) + ":-4,:3", "Root=x;Lineage=" + hashOf(a) + ":1"},
		{"Root=x;Lineage=" + hashOf(a) + ":7", "Root=x;Lineage=" + hashOf(a) + ":8"},
		{"Root=x;Lineage=0000000a:2%2C" + hashOf(a) + ":7", "Root=x;Lineage=0000000a:2," + hashOf(a) + ":8"},
	} {
		if got, err := lineage(tc.in, a, false); err != nil || got != tc.want {
			t.Errorf("lineage(%q) = %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func hashOf(function string) string {
	got, _ := lineage("", function, false)
	h, _, _ := strings.Cut(strings.TrimPrefix(got, "Lineage="), ":")
	return h
}

func FuzzLineage(f *testing.F) {
	f.Add("Root=1-5f84c7a6-0123456789abcdef01234567;Sampled=0;Lineage=1a2b3c4d:3,ffffffff:16")
	f.Fuzz(func(t *testing.T, trace string) {
		out, err := lineage(trace, "arn:aws:lambda:us-east-1:123456789012:function:f", false)
		if err != nil {
			return
		}
		// The count only grows, and the output parses again.
		again, err := lineage(out, "arn:aws:lambda:us-east-1:123456789012:function:f", true)
		fields := 0
		for _, f := range strings.Split(again, ";") {
			if strings.HasPrefix(f, "Lineage=") {
				fields++
			}
		}
		if err != nil || fields != 1 {
			t.Fatalf("%q → %q → %q %v", trace, out, again, err)
		}
	})
}
