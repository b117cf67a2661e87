package agent

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/agentproto"
	"golang.org/x/sys/unix"
)

// The Extensions API, as Lambda serves it next to the Runtime API:
//
//	POST /2020-01-01/extension/register     Lambda-Extension-Name → Lambda-Extension-Identifier
//	GET  /2020-01-01/extension/event/next   INVOKE and SHUTDOWN events
//	POST /2020-01-01/extension/init/error   the extension failed to initialize
//	POST /2020-01-01/extension/exit/error   the extension is exiting on an error
//
// With external extensions the agent keeps the listener: it serves these
// paths itself and relays every other request (the Runtime API) to the
// worker over one unix socket per connection. It holds the runtime's
// /next until every registered extension is waiting in its own /next, so
// that init ends when the runtime and all extensions are ready and no
// invoke starts before the extensions finished the previous one; it reads
// each event the worker answers /next with and sends INVOKE to the
// extensions that asked for it.
const extPrefix = "/2020-01-01/extension/"

type extServer struct {
	a          *agent
	workerSock int // unix SOCK_SEQPACKET: one passed descriptor per relayed connection
	srv        *http.Server
	proxy      *httputil.ReverseProxy
	info       map[string]string // function info for /register

	mu           sync.Mutex
	changed      chan struct{}  // closed and replaced at every state change
	unregistered map[string]int // launched extensions by name, not yet registered
	exts         map[string]*extension
	initDone     bool // the runtime's first /next went to the worker
	failType     string
	failMsg      string
}

type extension struct {
	id, name         string
	invoke, shutdown bool
	events           chan []byte
	waiting          bool // in /next, with no event
}

// startExtensionServer serves the listener and hands the worker a unix
// socket for relayed connections, with the log pipe's read end.
func startExtensionServer(a *agent, fd int, ln net.Listener, logR int, addr string, kilnAPI apiListener) (*extServer, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	err = agentproto.SendHandover(fd, agentproto.Handover{RuntimeAPI: addr, Conns: true, KilnAPI: kilnAPI.addr}, pair[1], logR, kilnAPI.fds()...)
	unix.Close(pair[1])
	if err != nil {
		unix.Close(pair[0])
		return nil, err
	}
	s := &extServer{a: a, workerSock: pair[0], changed: make(chan struct{}),
		unregistered: map[string]int{}, exts: map[string]*extension{},
		info: map[string]string{"functionName": "", "functionVersion": "", "handler": ""}}
	for _, kv := range a.env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "AWS_LAMBDA_FUNCTION_NAME":
			s.info["functionName"] = v
		case "AWS_LAMBDA_FUNCTION_VERSION":
			s.info["functionVersion"] = v
		case "_HANDLER":
			s.info["handler"] = v
		}
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "runtime-api"
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{
			DialContext:         s.dialWorker,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 4,
		},
		FlushInterval:  -1,
		ModifyResponse: s.sawResponse,
	}
	quiet := log.New(io.Discard, "", 0) // a runtime going away mid-request is no news
	s.proxy.ErrorLog = quiet
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: time.Minute, ErrorLog: quiet}
	go s.srv.Serve(ln)
	return s, nil
}

// dialWorker makes one relayed connection: a socket pair whose far end goes
// to the worker.
func (s *extServer) dialWorker(ctx context.Context, _, _ string) (net.Conn, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	err = agentproto.SendConn(s.workerSock, pair[1])
	unix.Close(pair[1])
	if err != nil {
		unix.Close(pair[0])
		return nil, err
	}
	f := os.NewFile(uintptr(pair[0]), "runtime-api-relay")
	defer f.Close()
	return net.FileConn(f)
}

// notify wakes every waiter; s.mu is held.
func (s *extServer) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// launched counts an extension process the agent starts (n = 1), or
// could not start after all (n = -1).
func (s *extServer) launched(name string, n int) {
	s.mu.Lock()
	s.unregistered[name] += n
	s.notify()
	s.mu.Unlock()
}

// waitRegistered blocks until every launched extension has registered, or
// one failed; it returns the failure.
func (s *extServer) waitRegistered() (errType, msg string) {
	for {
		s.mu.Lock()
		if s.failType != "" {
			defer s.mu.Unlock()
			return s.failType, s.failMsg
		}
		n := 0
		for _, c := range s.unregistered {
			n += c
		}
		ch := s.changed
		s.mu.Unlock()
		if n == 0 {
			return "", ""
		}
		<-ch
	}
}

// waitReady blocks until every registered extension waits in /next.
func (s *extServer) waitReady(ctx context.Context) bool {
	for {
		s.mu.Lock()
		ready := s.failType == ""
		for _, e := range s.exts {
			if !e.waiting {
				ready = false
			}
		}
		failed := s.failType != ""
		ch := s.changed
		s.mu.Unlock()
		if ready {
			return true
		}
		if failed {
			return false
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// failed reports whether an extension failed.
func (s *extServer) failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failType != ""
}

// initOver reports whether init is over (the runtime's first /next went on).
func (s *extServer) initOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.initDone
}

// fail breaks the environment on an extension's failure: before the
// runtime starts, init reports it; during init the agent reports it;
// afterwards the environment just ends (the invoke gets the runtime's exit).
// The first failure counts.
func (s *extServer) fail(errType, msg string) {
	if s.record(errType, msg) {
		s.act()
	}
}

// record keeps the first failure; it reports whether this was it.
func (s *extServer) record(errType, msg string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failType != "" {
		return false
	}
	s.failType, s.failMsg = errType, msg
	s.notify()
	return true
}

// act ends the environment after the failure was recorded.
func (s *extServer) act() {
	s.mu.Lock()
	errType, msg, initDone := s.failType, s.failMsg, s.initDone
	s.mu.Unlock()
	s.a.mu.Lock()
	started := s.a.runtimePid != 0
	s.a.mu.Unlock()
	if !started {
		return // Run reports it (waitRegistered, or right after starting the runtime)
	}
	if !initDone {
		s.a.initFailed(errType, msg)
	}
	s.a.killAll()
}

// crashed is called when an extension process ends outside shutdown.
func (s *extServer) crashed(name, how string) {
	s.fail("Extension.Crash", fmt.Sprintf("extension %s exited: %s", name, how))
}

// shutdown sends SHUTDOWN to the extensions that asked for it.
func (s *extServer) shutdown(reason string, deadline time.Time) {
	ev, _ := json.Marshal(map[string]any{"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline.UnixMilli()})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.exts {
		if e.shutdown {
			e.send(ev)
		}
	}
	s.notify()
}

// send queues an event; s.mu is held.
func (e *extension) send(ev []byte) {
	select {
	case e.events <- ev:
		e.waiting = false
	default: // a stuck extension misses events rather than block the environment
	}
}

func (s *extServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, extPrefix); ok {
		switch {
		case r.Method == http.MethodPost && rest == "register":
			s.register(w, r)
		case r.Method == http.MethodGet && rest == "event/next":
			s.next(w, r)
		case r.Method == http.MethodPost && (rest == "init/error" || rest == "exit/error"):
			s.reportError(w, r, rest == "init/error")
		default:
			writeJSON(w, http.StatusNotFound, errorDoc("InvalidRequest", "unknown Extensions API path "+r.URL.Path))
		}
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/2018-06-01/runtime/invocation/next" {
		if !s.waitReady(r.Context()) {
			writeJSON(w, http.StatusInternalServerError, errorDoc("Extension.Crash", "an extension failed"))
			return
		}
		s.mu.Lock()
		s.initDone = true
		s.mu.Unlock()
	}
	s.proxy.ServeHTTP(w, r)
}

// sawResponse sends INVOKE to the extensions when the runtime gets an event.
func (s *extServer) sawResponse(resp *http.Response) error {
	req := resp.Request
	if req.Method != http.MethodGet || req.URL.Path != "/2018-06-01/runtime/invocation/next" || resp.StatusCode != http.StatusOK {
		return nil
	}
	h := resp.Header
	deadline, _ := strconv.ParseInt(h.Get("Lambda-Runtime-Deadline-Ms"), 10, 64)
	ev, _ := json.Marshal(map[string]any{
		"eventType":          "INVOKE",
		"deadlineMs":         deadline,
		"requestId":          h.Get("Lambda-Runtime-Aws-Request-Id"),
		"invokedFunctionArn": h.Get("Lambda-Runtime-Invoked-Function-Arn"),
		"tracing":            map[string]string{"type": "X-Amzn-Trace-Id", "value": h.Get("Lambda-Runtime-Trace-Id")},
	})
	s.mu.Lock()
	for _, e := range s.exts {
		if e.invoke {
			e.send(ev)
		}
	}
	s.notify()
	s.mu.Unlock()
	return nil
}

func (s *extServer) register(w http.ResponseWriter, r *http.Request) {
	name := r.Header.Get("Lambda-Extension-Name")
	var body struct {
		Events []string `json:"events"`
	}
	if name == "" {
		writeJSON(w, http.StatusBadRequest, errorDoc("InvalidRequest", "Lambda-Extension-Name is required"))
		return
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && err != io.EOF {
		writeJSON(w, http.StatusBadRequest, errorDoc("InvalidRequest", "register: "+err.Error()))
		return
	}
	e := &extension{id: newID(), name: name, events: make(chan []byte, 4)}
	for _, ev := range body.Events {
		switch ev {
		case "INVOKE":
			e.invoke = true
		case "SHUTDOWN":
			e.shutdown = true
		default:
			writeJSON(w, http.StatusBadRequest, errorDoc("InvalidEventType", "unknown event type "+strconv.Quote(ev)))
			return
		}
	}
	s.mu.Lock()
	if s.initDone {
		s.mu.Unlock()
		writeJSON(w, http.StatusForbidden, errorDoc("Extension.RegistrationAfterInit", "extensions register during init"))
		return
	}
	if s.unregistered[name] > 0 {
		s.unregistered[name]--
	}
	s.exts[e.id] = e
	s.notify()
	s.mu.Unlock()
	w.Header().Set("Lambda-Extension-Identifier", e.id)
	b, _ := json.Marshal(s.info)
	writeJSON(w, http.StatusOK, b)
}

func (s *extServer) lookup(w http.ResponseWriter, r *http.Request) *extension {
	id := r.Header.Get("Lambda-Extension-Identifier")
	s.mu.Lock()
	e := s.exts[id]
	s.mu.Unlock()
	if e == nil {
		writeJSON(w, http.StatusForbidden, errorDoc("Extension.InvalidExtensionIdentifier", "unknown Lambda-Extension-Identifier "+strconv.Quote(id)))
	}
	return e
}

func (s *extServer) next(w http.ResponseWriter, r *http.Request) {
	e := s.lookup(w, r)
	if e == nil {
		return
	}
	var ev []byte
	s.mu.Lock()
	select {
	case ev = <-e.events:
	default:
		e.waiting = true
		s.notify()
	}
	s.mu.Unlock()
	if ev == nil {
		select {
		case ev = <-e.events:
		case <-r.Context().Done():
			s.mu.Lock()
			e.waiting = false
			s.notify()
			s.mu.Unlock()
			return
		}
	}
	w.Header().Set("Lambda-Extension-Event-Identifier", newID())
	writeJSON(w, http.StatusOK, ev)
}

func (s *extServer) reportError(w http.ResponseWriter, r *http.Request, initPhase bool) {
	e := s.lookup(w, r)
	if e == nil {
		return
	}
	typ := r.Header.Get("Lambda-Extension-Function-Error-Type")
	if typ == "" {
		typ = "Extension.Unknown"
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	msg := strings.TrimSpace(string(body))
	var doc struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if json.Unmarshal(body, &doc) == nil && doc.ErrorMessage != "" {
		msg = doc.ErrorMessage
	}
	if msg == "" {
		msg = "extension " + e.name + " reported an error"
	}
	// Recorded before the answer: the extension exits right after it, and
	// that must not count as a crash instead.
	first := s.record(typ, msg)
	writeJSON(w, http.StatusAccepted, []byte(`{"status":"OK"}`))
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	_ = initPhase // both end the environment; init errors are reported as such while init runs
	if first {
		go s.act()
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// newID is a random UUID (version 4).
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
