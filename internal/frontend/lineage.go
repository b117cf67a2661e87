package frontend

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
)

// Recursion detection, as Lambda does it: the trace header an invoke
// carries (X-Amzn-Trace-Id) gets a Lineage field counting, per function,
// the invokes of the chain of requests it belongs to
// (Lineage=<8 hex digits of the function's ARN>:<count>,...). Kiln passes the
// header to the function (Lambda-Runtime-Trace-Id, then _X_AMZN_TRACE_ID),
// and the AWS SDKs put it on every request the function makes, so an
// invoke from inside a function continues its caller's count. A function
// whose recursion setting is Terminate (the default) is not invoked a
// 17th time in one chain.

// MaxRecursion is how many times one chain of requests may invoke a
// function whose RecursiveLoop is Terminate.
const MaxRecursion = 16

// lineage returns trace with function's count in its Lineage field one
// higher; a RecursiveInvocationException when that passes MaxRecursion and
// the function does not allow loops. function is the unqualified ARN.
func lineage(trace, function string, allowLoops bool) (string, error) {
	sum := sha256.Sum256([]byte(function))
	id := hex.EncodeToString(sum[:4])
	var fields, entries []string
	count := 0
	// The SDKs percent-encode what they forward from _X_AMZN_TRACE_ID.
	if dec, err := url.PathUnescape(trace); err == nil {
		trace = dec
	}
	for _, f := range strings.Split(trace, ";") {
		v, ok := strings.CutPrefix(f, "Lineage=")
		if !ok {
			if f != "" {
				fields = append(fields, f)
			}
			continue
		}
		for _, e := range strings.Split(v, ",") {
			h, n, _ := strings.Cut(e, ":")
			c, err := strconv.Atoi(n)
			switch {
			case err != nil || c < 0 || h == "":
				// not a count of Kiln's: dropped
			case h == id:
				count = max(count, c)
			default:
				entries = append(entries, e)
			}
		}
	}
	count++
	if count > MaxRecursion && !allowLoops {
		return "", api.Errorf(api.RecursiveInvocation, "Recursive invocation of %s stopped: one chain of requests invoked it more than %d times. If the loop is intended, allow it with PutFunctionRecursionConfig (RecursiveLoop Allow).", function, MaxRecursion)
	}
	entries = append(entries, id+":"+strconv.Itoa(count))
	return strings.Join(append(fields, "Lineage="+strings.Join(entries, ",")), ";"), nil
}
