// Package invoke holds the types of an invoke as it crosses Kiln's
// components: the frontend's Request and Response, the worker's Invocation
// and Result, and the EnvSpec of the execution environment that runs it. It
// is a leaf (it imports only api), so that the components which pass
// invokes along need not link the worker, or the agent behind it.
package invoke

import (
	"errors"
	"strconv"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
)

// Request is one invoke as the frontend takes it, from HTTP or from an
// in-process caller (the asynchronous pollers).
type Request struct {
	Account string
	// Function is the FunctionName parameter: a name, partial or full ARN,
	// optionally with ":qualifier"; Qualifier is the ?Qualifier= parameter.
	Function, Qualifier string
	Payload             []byte
	ClientContext       string // base64 JSON, as in X-Amz-Client-Context
	TraceID             string
	// Background: a queued event, run at background CPU priority.
	Background bool
}

// Response is a synchronous invoke's outcome. FunctionError is "Unhandled"
// when the function failed; Payload then holds Lambda's error document.
type Response struct {
	RequestID       string
	ExecutedVersion string
	FunctionError   string
	ErrorType       string
	Payload         []byte
	LogTail         []byte
	// Streamed: the response went to the invoke's Stream (see Result).
	Streamed  bool
	ColdStart *ColdStart // set when this invoke started its environment
}

// EnvSpec is what a new execution environment runs.
type EnvSpec struct {
	Account  string
	Function api.FunctionConfiguration // the exact version's configuration
	// InitType is AWS_LAMBDA_INITIALIZATION_TYPE: "on-demand" or "provisioned-concurrency".
	InitType string
}

// EnvInfo describes a ready environment.
type EnvInfo struct {
	ID           string
	InitDuration time.Duration
	Phases       ColdStart
}

// ColdStart is where a new environment's time went, as Kiln measured it
// (the frontend reports it in X-Kiln-Cold-Start).
type ColdStart struct {
	Placement time.Duration `json:"placement,omitempty"` // choosing a worker
	// Pool is the wait for an agent prepared ahead of time (isolation,
	// root and Runtime API listener ready), when the backend's pool had
	// none ready; 0 when it had one.
	Pool time.Duration `json:"pool,omitempty"`
	// Sandbox is the code and layers found or unpacked, isolation, mounts
	// and the agent, until the agent, its Runtime API listener handed over,
	// begins to start the function's processes; without Pool.
	Sandbox time.Duration `json:"sandbox,omitempty"`
	// Runtime is the runtime's start: external extensions started and
	// registered, then the runtime's fork and exec.
	Runtime time.Duration `json:"runtime,omitempty"`
	// Init is from the exec to the runtime's first /next: the runtime's own
	// start-up and the function's init code, which a runtime such as
	// aws-lambda-go runs in one process before it asks for an event (Kiln
	// sees no boundary between the two).
	Init time.Duration `json:"init,omitempty"`
	// Invoke is the first invoke in the new environment, from its event's
	// delivery to the runtime's result (its REPORT's Duration): not the
	// environment's start, but part of the cold start's time end to end;
	// the frontend sets it.
	Invoke time.Duration `json:"invoke,omitempty"`
}

// Header is the X-Kiln-Cold-Start value: each phase in milliseconds.
func (c ColdStart) Header() string {
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 3, 64) }
	return "placement=" + ms(c.Placement) + ";pool=" + ms(c.Pool) + ";sandbox=" + ms(c.Sandbox) + ";runtime=" + ms(c.Runtime) + ";init=" + ms(c.Init) +
		";invoke=" + ms(c.Invoke)
}

// Invocation is one invoke's input to an environment.
type Invocation struct {
	RequestID       string
	FunctionArn     string // as invoked (qualified when a qualifier was given)
	TraceID         string
	ClientContext   string // decoded JSON
	CognitoIdentity string
	Payload         []byte
	// Background marks a queued (asynchronous) event: it runs at the
	// environment's background CPU priority where the backend has one.
	Background bool
	// Stream, when set, takes a response the runtime streams as its bytes
	// arrive (InvokeWithResponseStream, RESPONSE_STREAM function URLs); a
	// runtime that answers buffered still fills Result.Payload.
	Stream Stream
}

// Stream receives a streamed response. Begin comes once, before the first
// Write, with the content type the runtime gave. A Write error (the caller
// hung up) does not stop the function: the rest is read and dropped.
type Stream interface {
	Begin(contentType string)
	Write(p []byte) (int, error)
}

// MaxStreamedResponse is Lambda's default limit on a streamed response.
const MaxStreamedResponse = 20 * 1024 * 1024

// Result is an invoke's outcome in its environment.
type Result struct {
	Payload []byte
	// ErrorType is set when the function failed; the caller gets
	// X-Amz-Function-Error: Unhandled and Payload as the error document.
	ErrorType string
	// LogTail is the last 4 KB of this invoke's log, START to REPORT.
	LogTail  []byte
	Duration time.Duration
	// Reusable is false when the environment was destroyed (timeout, crash).
	Reusable bool
	// Streamed says the response went to Invocation.Stream; Payload then
	// holds only the error document of an error that ended the stream.
	Streamed bool
}

// InitError is returned when creating an environment failed in the
// function's init phase. Document is Lambda's error document for the caller.
type InitError struct {
	ErrorType string
	Document  []byte
	LogTail   []byte
}

func (e *InitError) Error() string { return "init failed: " + e.ErrorType }

// ErrNoEnv means the environment is not (or no longer) on its worker.
var ErrNoEnv = errors.New("worker: no such execution environment")
