package streams

import (
	"fmt"
	"net/http"
)

// Error is a Kinesis error: its type (the __type of AWS JSON 1.1), HTTP
// status and message. errors.Is matches errors of the same type, so
// errors.Is(err, ErrNotFound) asks whether a stream was missing.
type Error struct {
	Code    string
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Is reports whether target is an *Error of the same type.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// The error types this service answers with, for errors.Is.
var (
	ErrNotFound         = &Error{Code: "ResourceNotFoundException", Status: http.StatusBadRequest}
	ErrInUse            = &Error{Code: "ResourceInUseException", Status: http.StatusBadRequest}
	ErrInvalidArgument  = &Error{Code: "InvalidArgumentException", Status: http.StatusBadRequest}
	ErrExpiredIterator  = &Error{Code: "ExpiredIteratorException", Status: http.StatusBadRequest}
	ErrLimitExceeded    = &Error{Code: "LimitExceededException", Status: http.StatusBadRequest}
	ErrValidation       = &Error{Code: "ValidationException", Status: http.StatusBadRequest}
	ErrThroughput       = &Error{Code: "ProvisionedThroughputExceededException", Status: http.StatusBadRequest}
	errSerialization    = &Error{Code: "SerializationException", Status: http.StatusBadRequest}
	errUnknownOperation = &Error{Code: "UnknownOperationException", Status: http.StatusBadRequest}
	errAccessDenied     = &Error{Code: "AccessDeniedException", Status: http.StatusBadRequest}
	errInternal         = &Error{Code: "InternalFailure", Status: http.StatusInternalServerError}
)

func errorf(kind *Error, format string, args ...any) *Error {
	return &Error{Code: kind.Code, Status: kind.Status, Message: fmt.Sprintf(format, args...)}
}

// invalidValue is Kinesis's sentence for a member outside its model's
// constraints.
func invalidValue(value any, member, constraint string) *Error {
	return errorf(ErrValidation, "1 validation error detected: Value '%v' at '%s' failed to satisfy constraint: Member must %s", value, member, constraint)
}

func notFound(account, name string) *Error {
	return errorf(ErrNotFound, "Stream %s under account %s not found.", name, account)
}
