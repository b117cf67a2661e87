// Package api holds the wire shapes Kiln shares with AWS clients: Lambda's
// error envelope and the JSON documents of the Lambda REST API.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is an error in the shape AWS's REST-JSON services send: an HTTP status,
// the error type in the X-Amzn-ErrorType header and a {"Type","Message"} body.
// The SDKs read the type from the header, the CLI prints it with the message.
type Error struct {
	Status  int
	Type    string
	Message string
	// Reason is set on throttles (TooManyRequestsException) and a few others.
	Reason string
	// Extra fields some errors carry (RetryAfterSeconds, ...), merged into the body.
	Extra map[string]any
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// Errorf builds an *Error of the given type; its status comes from the type.
func Errorf(typ string, format string, args ...any) *Error {
	return &Error{Status: StatusOf(typ), Type: typ, Message: fmt.Sprintf(format, args...)}
}

// Error types of the Lambda API, as botocore's service model names them.
const (
	InvalidParameterValue = "InvalidParameterValueException"
	InvalidRequestContent = "InvalidRequestContentException"
	ResourceNotFound      = "ResourceNotFoundException"
	ResourceConflict      = "ResourceConflictException"
	ResourceInUse         = "ResourceInUseException"
	CodeStorageExceeded   = "CodeStorageExceededException"
	PreconditionFailed    = "PreconditionFailedException"
	RequestTooLarge       = "RequestTooLargeException"
	// RequestEntityTooLarge is what Lambda's front door answers for a
	// request body over an operation's limit (an invoke over 6 MB, a
	// direct upload over 50 MB), though the model names RequestTooLarge.
	RequestEntityTooLarge = "RequestEntityTooLargeException"
	// Validation is Lambda's answer to a request that breaks a constraint
	// of the model (a pattern, an enum, a length or a range).
	Validation = "ValidationException"
	// UnknownOperation answers a path no operation of the API has.
	UnknownOperation        = "UnknownOperationException"
	TooManyRequests         = "TooManyRequestsException"
	UnrecognizedClient      = "UnrecognizedClientException"
	InvalidSignature        = "InvalidSignatureException"
	AccessDenied            = "AccessDeniedException"
	Service                 = "ServiceException"
	UnsupportedMediaType    = "UnsupportedMediaTypeException"
	InvalidZipFile          = "InvalidZipFileException"
	ResourceNotReady        = "ResourceNotReadyException"
	InvalidRuntime          = "InvalidRuntimeException"
	MissingAuthToken        = "MissingAuthenticationTokenException"
	IncompleteSignature     = "IncompleteSignatureException"
	SignatureDoesNotMatch   = "SignatureDoesNotMatch"
	ServiceUnavailable      = "ServiceUnavailableException"
	EC2Unexpected           = "EC2UnexpectedException"
	ProvisionedConcurrency  = "ProvisionedConcurrencyConfigNotFoundException"
	UnsupportedOperation    = "UnsupportedOperationException"
	InvalidRequestBody      = "SerializationException"
	RecursiveInvocation     = "RecursiveInvocationException"
	FunctionResponseTooLong = "ResponseSizeTooLarge" // function error type, not an API error
)

var statusByType = map[string]int{
	InvalidParameterValue:  http.StatusBadRequest,
	InvalidRequestContent:  http.StatusBadRequest,
	InvalidRequestBody:     http.StatusBadRequest,
	InvalidZipFile:         http.StatusBadRequest,
	CodeStorageExceeded:    http.StatusBadRequest,
	IncompleteSignature:    http.StatusBadRequest,
	ResourceNotFound:       http.StatusNotFound,
	ProvisionedConcurrency: http.StatusNotFound,
	ResourceConflict:       http.StatusConflict,
	ResourceInUse:          http.StatusBadRequest,
	PreconditionFailed:     http.StatusPreconditionFailed,
	RequestTooLarge:        http.StatusRequestEntityTooLarge,
	RequestEntityTooLarge:  http.StatusRequestEntityTooLarge,
	Validation:             http.StatusBadRequest,
	UnknownOperation:       http.StatusNotFound,
	UnsupportedMediaType:   http.StatusUnsupportedMediaType,
	TooManyRequests:        http.StatusTooManyRequests,
	UnrecognizedClient:     http.StatusForbidden,
	InvalidSignature:       http.StatusForbidden,
	SignatureDoesNotMatch:  http.StatusForbidden,
	MissingAuthToken:       http.StatusForbidden,
	AccessDenied:           http.StatusForbidden,
	ResourceNotReady:       http.StatusBadGateway,
	InvalidRuntime:         http.StatusBadGateway,
	EC2Unexpected:          http.StatusBadGateway,
	UnsupportedOperation:   http.StatusBadRequest,
	Service:                http.StatusInternalServerError,
	ServiceUnavailable:     http.StatusServiceUnavailable,
	RecursiveInvocation:    http.StatusBadRequest,
}

// StatusOf is the HTTP status Lambda answers with for an error type.
func StatusOf(typ string) int {
	if s, ok := statusByType[typ]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Write sends err in Lambda's error shape. Errors that are not *Error become
// a ServiceException, without leaking their text to the caller.
func WriteError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Type: Service, Message: "internal error"}
	}
	body := map[string]any{"Type": "User", "Message": e.Message, "message": e.Message}
	if e.Status >= 500 {
		body["Type"] = "Service"
	}
	if e.Reason != "" {
		body["Reason"] = e.Reason
	}
	for k, v := range e.Extra {
		body[k] = v
	}
	w.Header().Set("X-Amzn-ErrorType", e.Type)
	if w.Header().Get(RequestIDHeader) == "" {
		w.Header().Set(RequestIDHeader, NewUUID())
	}
	WriteJSON(w, e.Status, body)
}

// RequestIDHeader carries the ID of every answer of Lambda's API.
const RequestIDHeader = "X-Amzn-Requestid"

// WithRequestID gives every answer of h an X-Amzn-RequestId; a handler
// with an ID of its own (an invoke's) sets it over this one.
func WithRequestID(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(RequestIDHeader, NewUUID())
		h.ServeHTTP(w, r)
	})
}

// UnknownOperationHandler answers requests to paths of no operation as
// Lambda does, rather than with Go's plain-text 404.
func UnknownOperationHandler(w http.ResponseWriter, r *http.Request) {
	WriteError(w, Errorf(UnknownOperation, "Unknown operation: %s %s", r.Method, r.URL.Path))
}

// WriteJSON sends v as the JSON body with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"Type":"Service","Message":"encoding response"}`)
		w.Header().Set("X-Amzn-ErrorType", Service)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
