package api

import (
	"regexp"
	"strings"
)

// FunctionRef is a parsed FunctionName parameter: a name, a partial ARN
// (ACCOUNT:function:NAME) or a full ARN, each optionally with ":QUALIFIER".
type FunctionRef struct {
	Account   string // empty when only a name was given
	Region    string // empty unless a full ARN was given
	Name      string
	Qualifier string // empty when none was given
}

var (
	nameRe      = regexp.MustCompile(`^[a-zA-Z0-9-_]{1,64}$`)
	qualifierRe = regexp.MustCompile(`^(\$LATEST|[a-zA-Z0-9-_]{1,128})$`)
	accountRe   = regexp.MustCompile(`^\d{12}$`)
	// regionRe is looser than AWS's region names (an operator names Kiln's
	// region), but keeps a region that is echoed in errors and compared
	// with Kiln's own a plain token.
	regionRe = regexp.MustCompile(`^[a-z0-9-]{0,64}$`)
)

// ParseFunctionRef parses the FunctionName path parameter of any Lambda call.
func ParseFunctionRef(s string) (FunctionRef, error) {
	var ref FunctionRef
	bad := func() (FunctionRef, error) {
		return FunctionRef{}, Errorf(InvalidParameterValue,
			"1 validation error detected: Value '%s' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?", s)
	}
	parts := strings.Split(s, ":")
	switch {
	case len(parts) >= 7 && parts[0] == "arn" && strings.HasPrefix(parts[1], "aws") && parts[2] == "lambda" && parts[5] == "function":
		if len(parts) > 8 {
			return bad()
		}
		ref.Region, ref.Account, ref.Name = parts[3], parts[4], parts[6]
		if len(parts) == 8 {
			ref.Qualifier = parts[7]
		}
	case len(parts) >= 3 && parts[1] == "function":
		if len(parts) > 4 {
			return bad()
		}
		ref.Account, ref.Name = parts[0], parts[2]
		if len(parts) == 4 {
			ref.Qualifier = parts[3]
		}
	case len(parts) <= 2:
		ref.Name = parts[0]
		if len(parts) == 2 {
			ref.Qualifier = parts[1]
		}
	default:
		return bad()
	}
	if !nameRe.MatchString(ref.Name) || ref.Account != "" && !accountRe.MatchString(ref.Account) || !regionRe.MatchString(ref.Region) ||
		len(parts) > 1 && ref.Qualifier == "" && parts[len(parts)-1] == "" || ref.Qualifier != "" && !qualifierRe.MatchString(ref.Qualifier) {
		return bad()
	}
	return ref, nil
}

// WithQualifier merges a ?Qualifier= parameter into a parsed reference.
func (r FunctionRef) WithQualifier(q string) (FunctionRef, error) {
	if q == "" {
		return r, nil
	}
	if !qualifierRe.MatchString(q) {
		return r, Errorf(InvalidParameterValue, "1 validation error detected: Value '%s' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)", q)
	}
	if r.Qualifier != "" && r.Qualifier != q {
		return r, Errorf(InvalidParameterValue, "The derived qualifier from the function name does not match the specified qualifier.")
	}
	r.Qualifier = q
	return r, nil
}

// FunctionARN is the unqualified ARN of a function.
func FunctionARN(region, account, name string) string {
	return "arn:aws:lambda:" + region + ":" + account + ":function:" + name
}

// QualifiedARN appends ":qualifier" when qualifier is not empty.
func QualifiedARN(region, account, name, qualifier string) string {
	if qualifier == "" {
		return FunctionARN(region, account, name)
	}
	return FunctionARN(region, account, name) + ":" + qualifier
}
