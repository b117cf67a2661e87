package api

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseFunctionRef: any FunctionName either parses into a reference
// whose parts are each valid and which prints back to a name that parses to
// the same reference, or is refused with InvalidParameterValueException; a
// ?Qualifier= merges the same way.
func FuzzParseFunctionRef(f *testing.F) {
	f.Fuzz(func(t *testing.T, s, q string) {
		ref, err := ParseFunctionRef(s)
		if err != nil {
			wantInvalid(t, s, err)
			return
		}
		if !nameRe.MatchString(ref.Name) || ref.Account != "" && !accountRe.MatchString(ref.Account) ||
			ref.Qualifier != "" && !qualifierRe.MatchString(ref.Qualifier) || !regionRe.MatchString(ref.Region) {
			t.Fatalf("%q parsed to invalid parts %+v", s, ref)
		}
		again, err := ParseFunctionRef(format(ref))
		if err != nil || again != ref {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, ref, format(ref), again, err)
		}
		merged, err := ref.WithQualifier(q)
		if err != nil {
			wantInvalid(t, q, err)
			return
		}
		if q != "" && merged.Qualifier != q || q == "" && merged != ref {
			t.Fatalf("%+v with qualifier %q: %+v", ref, q, merged)
		}
	})
}

// format prints a reference in the shortest form that keeps all its parts.
func format(r FunctionRef) string {
	var s string
	switch {
	case r.Region != "":
		return QualifiedARN(r.Region, r.Account, r.Name, r.Qualifier)
	case r.Account != "":
		s = r.Account + ":function:" + r.Name
	default:
		s = r.Name
	}
	if r.Qualifier != "" {
		s += ":" + r.Qualifier
	}
	return s
}

// FuzzParseDestination: a destination ARN either names a Kiln function or
// queue whose names are safe in NATS subjects and stream names, or is
// refused with a message that quotes it.
func FuzzParseDestination(f *testing.F) {
	f.Fuzz(func(t *testing.T, arn string) {
		d, err := ParseDestination(arn)
		if err != nil {
			if !strings.Contains(err.Error(), arn) && !strings.Contains(err.Error(), "not to ") {
				t.Fatalf("%q: error %q does not say what was refused", arn, err)
			}
			return
		}
		if d.ARN != arn || !accountRe.MatchString(d.Account) || d.Region == "" {
			t.Fatalf("%q parsed to %+v", arn, d)
		}
		switch d.Kind {
		case DestinationFunction:
			ref, err := ParseFunctionRef(arn)
			if err != nil || ref.Name != d.Name || ref.Qualifier != d.Qualifier || ref.Account != d.Account {
				t.Fatalf("%q: function %+v, but as a function reference %+v, %v", arn, d, ref, err)
			}
		case DestinationQueue:
			if !queueNameRe.MatchString(d.Name) || d.Qualifier != "" {
				t.Fatalf("%q: queue %+v", arn, d)
			}
		default:
			t.Fatalf("%q: kind %q", arn, d.Kind)
		}
	})
}

func wantInvalid(t *testing.T, in string, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Type != InvalidParameterValue {
		t.Fatalf("%q: error %v, want InvalidParameterValueException", in, err)
	}
}
