package queues

import (
	"fmt"
	"net/http"
)

// Error is an SQS error. Code is the error's shape name in the JSON
// protocol (its __type); Query is the code the query protocol (and the
// x-amzn-query-error header that query-compatible SDKs read) carries.
type Error struct {
	Code, Query string
	Status      int
	Sender      bool // the caller's fault (Sender) or the service's (Receiver)
	Message     string
}

func (e *Error) Error() string { return e.Query + ": " + e.Message }

// errorKind is one SQS error code; errorf makes an Error of it.
type errorKind struct {
	code, query string
	status      int
}

var (
	errNoQueue        = errorKind{"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", http.StatusBadRequest}
	errQueueExists    = errorKind{"QueueNameExists", "QueueAlreadyExists", http.StatusBadRequest}
	errInvalidParam   = errorKind{"InvalidParameterValue", "InvalidParameterValue", http.StatusBadRequest}
	errMissingParam   = errorKind{"MissingParameter", "MissingParameter", http.StatusBadRequest}
	errAttrName       = errorKind{"InvalidAttributeName", "InvalidAttributeName", http.StatusBadRequest}
	errAttrValue      = errorKind{"InvalidAttributeValue", "InvalidAttributeValue", http.StatusBadRequest}
	errReceipt        = errorKind{"ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", http.StatusBadRequest}
	errTooManyEntries = errorKind{"TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", http.StatusBadRequest}
	errEmptyBatch     = errorKind{"EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", http.StatusBadRequest}
	errIdsNotDistinct = errorKind{"BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", http.StatusBadRequest}
	errBatchEntryID   = errorKind{"InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", http.StatusBadRequest}
	errBatchTooLong   = errorKind{"BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", http.StatusBadRequest}
	errContents       = errorKind{"InvalidMessageContents", "InvalidMessageContents", http.StatusBadRequest}
	errUnknownAction  = errorKind{"UnknownOperationException", "InvalidAction", http.StatusBadRequest}
	errBadRequest     = errorKind{"InvalidParameterValue", "MalformedQueryString", http.StatusBadRequest}
	errAccessDenied   = errorKind{"AccessDeniedException", "AccessDenied", http.StatusForbidden}
	errInternal       = errorKind{"InternalError", "InternalError", http.StatusInternalServerError}
)

func errorf(k errorKind, format string, args ...any) *Error {
	return &Error{Code: k.code, Query: k.query, Status: k.status, Sender: k.status < 500, Message: fmt.Sprintf(format, args...)}
}

// invalid is SQS's usual InvalidParameterValue sentence.
func invalid(format string, args ...any) *Error {
	return errorf(errInvalidParam, "Value "+format, args...)
}
