package kilntest

import (
	"errors"
	"fmt"

	"github.com/aws/smithy-go"
)

// APIError checks that err is an AWS API error of type code answered with
// HTTP status, and returns its message.
func APIError(tb TB, err error, code string, status int) string {
	tb.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code {
		tb.Fatalf("got error %v, want %s", err, code)
	}
	var re interface{ HTTPStatusCode() int }
	if !errors.As(err, &re) || re.HTTPStatusCode() != status {
		tb.Fatalf("%s: %v, want HTTP %d", code, err, status)
	}
	return ae.ErrorMessage()
}

// ErrorCode is err's AWS error code, or err as text when it has none.
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return fmt.Sprint(err)
}
