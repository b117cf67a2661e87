// Package agent is the in-sandbox agent: the first process of every execution
// environment. It serves the Lambda Runtime API to the function's runtime,
// starts that runtime, captures its output, and talks to the worker over one
// inherited socket (see package agentproto).
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/agentproto"
	"golang.org/x/sys/unix"
)

// Environment variables the worker sets for the agent; they are removed from
// the runtime's environment.
const (
	EnvListen = "KILN_AGENT_LISTEN" // Runtime API address, default 127.0.0.1:9001
	EnvConnFD = "KILN_AGENT_FD"     // the worker socket's descriptor, default 3
)

// MaxResponse is Lambda's limit on a synchronous response.
const MaxResponse = 6 * 1024 * 1024

// Main runs the agent with argv as the runtime's command line. It returns when
// the runtime has exited or the worker asked it to stop.
func Main(argv []string) error {
	fd := 3
	if s := os.Getenv(EnvConnFD); s != "" {
		var err error
		if fd, err = strconv.Atoi(s); err != nil {
			return fmt.Errorf("agent: %s=%q: %w", EnvConnFD, s, err)
		}
	}
	sock := os.NewFile(uintptr(fd), "worker")
	listen := os.Getenv(EnvListen)
	if listen == "" {
		listen = "127.0.0.1:9001"
	}
	a := &Agent{conn: agentproto.NewConn(sock), invokes: make(chan *pending, 1), exited: make(chan struct{})}
	return a.Run(argv, listen)
}

type pending struct {
	hdr  agentproto.Invoke
	body []byte
}

// Agent serves one runtime.
type Agent struct {
	conn    *agentproto.Conn
	invokes chan *pending
	exited  chan struct{}

	mu      sync.Mutex
	current string // request id of the invoke the runtime holds, "" between invokes
	// lastDelivered is the last request id handed to the runtime: an invoke
	// the worker sent after it never ran if the runtime then died.
	lastDelivered string
	ready         bool
	started       time.Time

	logs *logPipe
	cmd  *exec.Cmd
	pid  atomic.Int64
}

// Run starts the Runtime API and the runtime and serves until the runtime exits.
func (a *Agent) Run(argv []string, listen string) error {
	if len(argv) == 0 {
		return errors.New("agent: no runtime command")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("agent: runtime API listener: %w", err)
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)

	if a.logs, err = newLogPipe(a.conn); err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = runtimeEnv(os.Environ(), ln.Addr().String())
	cmd.Stdout, cmd.Stderr = a.logs.w, a.logs.w
	cmd.Dir = os.Getenv("LAMBDA_TASK_ROOT")
	a.started = time.Now()
	if err := cmd.Start(); err != nil {
		a.logs.w.Close()
		a.conn.Write(agentproto.KindInitError, agentproto.Error{ErrorType: "Runtime.InvalidEntrypoint"},
			errorDoc("Runtime.InvalidEntrypoint", err.Error()))
		a.conn.Write(agentproto.KindExit, agentproto.Exit{Code: 127}, nil)
		return nil
	}
	a.cmd = cmd
	a.pid.Store(int64(cmd.Process.Pid))
	a.logs.w.Close() // the runtime holds the only write end now
	go a.readWorker()

	waitErr := cmd.Wait()
	close(a.exited)
	a.logs.flush()
	exit := exitOf(cmd.ProcessState, waitErr)
	a.mu.Lock()
	exit.LastDelivered = a.lastDelivered
	a.mu.Unlock()
	a.conn.Write(agentproto.KindExit, exit, nil)
	return nil
}

// runtimeEnv is the agent's environment without its own variables, plus
// AWS_LAMBDA_RUNTIME_API.
func runtimeEnv(env []string, apiAddr string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if strings.HasPrefix(kv, "KILN_AGENT_") || strings.HasPrefix(kv, "AWS_LAMBDA_RUNTIME_API=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "AWS_LAMBDA_RUNTIME_API="+apiAddr)
}

func exitOf(ps *os.ProcessState, err error) agentproto.Exit {
	if ps == nil {
		return agentproto.Exit{Code: -1, Signal: fmt.Sprint(err)}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return agentproto.Exit{Code: -1, Signal: unix.SignalName(ws.Signal())}
	}
	return agentproto.Exit{Code: ps.ExitCode()}
}

// readWorker takes frames from the worker until the socket closes.
func (a *Agent) readWorker() {
	for {
		f, err := a.conn.Read()
		if err != nil {
			// The worker is gone: nobody will collect results, stop the runtime.
			a.kill()
			return
		}
		switch f.Kind {
		case agentproto.KindInvoke:
			p := &pending{body: f.Body}
			if err := f.Decode(&p.hdr); err != nil {
				slog.Error("agent: bad invoke frame", "err", err)
				continue
			}
			a.invokes <- p
		case agentproto.KindShutdown:
			a.kill()
			return
		}
	}
}

func (a *Agent) kill() {
	if pid := a.pid.Load(); pid > 0 {
		unix.Kill(int(pid), unix.SIGKILL)
	}
}

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", a.next)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", a.response)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", a.invocationError)
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", a.initError)
	return mux
}

func (a *Agent) next(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	if !a.ready {
		a.ready = true
		initMs := float64(time.Since(a.started).Microseconds()) / 1000
		a.mu.Unlock()
		a.logs.flush()
		a.conn.Write(agentproto.KindReady, agentproto.Ready{InitDurationMs: initMs, RuntimePid: int(a.pid.Load())}, nil)
	} else {
		a.mu.Unlock()
	}
	var p *pending
	select {
	case p = <-a.invokes:
	case <-r.Context().Done():
		return
	case <-a.exited:
		return
	}
	a.mu.Lock()
	a.current, a.lastDelivered = p.hdr.RequestID, p.hdr.RequestID
	a.mu.Unlock()
	h := w.Header()
	h.Set("Lambda-Runtime-Aws-Request-Id", p.hdr.RequestID)
	h.Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(p.hdr.DeadlineMs, 10))
	h.Set("Lambda-Runtime-Invoked-Function-Arn", p.hdr.FunctionArn)
	h.Set("Lambda-Runtime-Trace-Id", p.hdr.TraceID)
	if p.hdr.ClientContext != "" {
		h.Set("Lambda-Runtime-Client-Context", p.hdr.ClientContext)
	}
	if p.hdr.CognitoIdentity != "" {
		h.Set("Lambda-Runtime-Cognito-Identity", p.hdr.CognitoIdentity)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(p.body)))
	w.WriteHeader(http.StatusOK)
	w.Write(p.body)
}

// finish claims the current invoke for request id, so a result is sent once.
func (a *Agent) finish(w http.ResponseWriter, id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current == "" || a.current != id {
		writeRuntimeError(w, http.StatusBadRequest, "InvalidRequestID", "Invalid request ID: "+id)
		return false
	}
	a.current = ""
	return true
}

func (a *Agent) response(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxResponse+1))
	if err != nil {
		writeRuntimeError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	if !a.finish(w, id) {
		return
	}
	a.logs.flush()
	if len(body) > MaxResponse {
		const msg = "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
		a.conn.Write(agentproto.KindResult, agentproto.Result{RequestID: id, ErrorType: "Function.ResponseSizeTooLarge"},
			errorDoc("Function.ResponseSizeTooLarge", msg))
		writeRuntimeError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", msg)
		return
	}
	a.conn.Write(agentproto.KindResult, agentproto.Result{RequestID: id}, body)
	writeAccepted(w)
}

func (a *Agent) invocationError(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxResponse))
	if !a.finish(w, id) {
		return
	}
	a.logs.flush()
	typ := r.Header.Get("Lambda-Runtime-Function-Error-Type")
	if typ == "" {
		typ = "Unhandled"
	}
	a.conn.Write(agentproto.KindResult, agentproto.Result{RequestID: id, ErrorType: typ}, body)
	writeAccepted(w)
}

func (a *Agent) initError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxResponse))
	a.logs.flush()
	typ := r.Header.Get("Lambda-Runtime-Function-Error-Type")
	if typ == "" {
		typ = "Runtime.Unknown"
	}
	a.conn.Write(agentproto.KindInitError, agentproto.Error{ErrorType: typ}, body)
	writeAccepted(w)
}

func writeAccepted(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, `{"status":"OK"}`)
}

func writeRuntimeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(errorDoc(typ, msg))
}

// errorDoc is Lambda's error document {"errorMessage","errorType"}.
func errorDoc(typ, msg string) []byte {
	b, _ := json.Marshal(map[string]string{"errorMessage": msg, "errorType": typ})
	return b
}

// ExecName is the argv[0] under which a binary that links this package runs
// as the agent instead of its own main: the worker re-executes its own binary
// (/proc/self/exe) this way, so `kiln` and test binaries alike carry the agent.
const ExecName = "kiln-agent"

func init() {
	if len(os.Args) > 0 && os.Args[0] == ExecName {
		if err := Main(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}
