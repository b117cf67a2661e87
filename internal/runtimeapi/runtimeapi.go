// Package runtimeapi serves Lambda's Runtime API for one execution
// environment, from the worker, on a listener that lives inside the
// environment's sandbox (the agent creates it there and passes it over).
//
// An invoke is written straight onto the runtime's waiting /next connection
// by the goroutine that invokes, and the runtime's result is handed back from
// the connection's reader: one exchange across the sandbox boundary per
// invoke and no other process in between.
package runtimeapi

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxResponse is Lambda's limit on a synchronous response: 6 MB and 100
// bytes, the number its error message names. MaxStreamed is its default
// limit on a streamed one.
const (
	MaxResponse = 6*1024*1024 + 100
	MaxStreamed = 20 * 1024 * 1024
)

// Stream takes a streamed response (invoke.Stream): Begin once with the
// runtime's content type, then its bytes as they arrive.
type Stream interface {
	Begin(contentType string)
	Write(p []byte) (int, error)
}

// Event is one invocation as the runtime receives it.
type Event struct {
	RequestID       string
	DeadlineMs      int64
	FunctionArn     string
	TraceID         string
	ClientContext   string
	CognitoIdentity string
	Payload         []byte
	// Stream, when set, takes a response the runtime streams
	// (Lambda-Runtime-Function-Response-Mode: streaming) as it arrives;
	// without it a streamed response is read whole, as a buffered one.
	Stream Stream
}

// Outcome is what the runtime posted for an event (or for its init).
type Outcome struct {
	Payload   []byte
	ErrorType string // empty on success
	// Streamed: the response went to the event's Stream; Payload is then
	// the error document of an error that ended the stream, if any.
	Streamed bool
}

// Limits on what a function can make the Server, which runs in the worker's
// process and not in the function's cgroup, hold for it.
const (
	// MaxHeaderBytes bounds a request's line and headers, as net/http's
	// default (runtimes' clients allow as much for theirs).
	MaxHeaderBytes = 1 << 20
	// DefaultMaxConns is how many connections an environment may have open
	// at once: a runtime uses one or two, and each extension a few.
	DefaultMaxConns = 32
	// DefaultHeaderTimeout bounds reading a request's head once its first
	// byte came (between requests a connection may idle: a runtime's next
	// request comes after an invoke that can last 15 minutes), and
	// DefaultBodyTimeout reading its body.
	DefaultHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout   = time.Minute
)

// Config configures a Server. The zero value works.
type Config struct {
	// Flush runs before an outcome is delivered. The worker drains the
	// runtime's log pipe there, so every line printed before the result was
	// posted is counted in that invoke.
	Flush func()
	// MaxConns bounds the connections open at once; 0 means
	// DefaultMaxConns. Beyond it the Server stops accepting until one
	// closes: the function's connections wait in its own listen backlog.
	MaxConns int
	// HeaderTimeout and BodyTimeout bound reading a request's head and
	// body; 0 means the defaults.
	HeaderTimeout, BodyTimeout time.Duration
}

// Server is the Runtime API of one environment.
type Server struct {
	cfg Config
	ln  net.Listener

	mu            sync.Mutex
	conns         map[*conn]struct{}
	waiting       *conn  // a /next that waits for an event
	queued        *Event // an event that waits for a /next
	current       string // request id the runtime holds, "" when none
	stream        Stream // the current event's Stream
	lastDelivered string
	results       chan Outcome
	closed        bool
	done          chan struct{} // closed by Close
	slots         chan struct{} // one per open connection
	bodies        chan struct{} // one body buffered at a time

	ready     chan struct{} // closed at the first /next or at an init error
	readyOnce sync.Once
	initErr   *Outcome
}

// Serve starts serving on ln until Close.
func Serve(ln net.Listener, cfg Config) *Server {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	s := &Server{cfg: cfg, ln: ln, conns: map[*conn]struct{}{}, ready: make(chan struct{}),
		done: make(chan struct{}), slots: make(chan struct{}, cfg.MaxConns), bodies: make(chan struct{}, 1)}
	go s.accept()
	return s
}

// Ready is closed when init has ended: the runtime asked for its first event
// (InitError is nil) or reported an init error.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// InitError is the runtime's /init/error report, if any.
func (s *Server) InitError() *Outcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.initErr
}

// LastDelivered is the request id of the last event the runtime received.
func (s *Server) LastDelivered() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastDelivered
}

// ErrBusy means an invoke is already in the environment.
var ErrBusy = errors.New("runtimeapi: an invoke is already running")

// Invoke hands ev to the runtime, now if it is waiting in /next, else at its
// next /next. The outcome arrives on the returned channel.
func (s *Server) Invoke(ev *Event) (<-chan Outcome, error) {
	results := make(chan Outcome, 1)
	s.mu.Lock()
	if s.results != nil || s.queued != nil {
		s.mu.Unlock()
		return nil, ErrBusy
	}
	s.results = results
	if c := s.waiting; c != nil {
		s.waiting = nil
		s.current, s.lastDelivered, s.stream = ev.RequestID, ev.RequestID, ev.Stream
		s.mu.Unlock()
		c.writeEvent(ev)
		return results, nil
	}
	s.queued = ev
	s.mu.Unlock()
	return results, nil
}

// Abandon forgets the running invoke (after a timeout, before the
// environment is destroyed), so a late result is refused.
func (s *Server) Abandon() {
	s.mu.Lock()
	s.results, s.queued, s.current, s.stream = nil, nil, "", nil
	s.mu.Unlock()
}

// Close stops serving and drops every connection.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	conns := s.conns
	s.conns = map[*conn]struct{}{}
	s.mu.Unlock()
	s.ln.Close()
	for c := range conns {
		c.nc.Close()
	}
}

func (s *Server) accept() {
	var backoff time.Duration
	for {
		select { // a slot first: at MaxConns, connections wait in the backlog
		case s.slots <- struct{}{}:
		case <-s.done:
			return
		}
		nc, err := s.ln.Accept()
		if err != nil {
			<-s.slots
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A passing failure (EMFILE when the runtime holds every
			// descriptor it may) must not end the environment's Runtime
			// API for good: retry as net/http does, backing off to 1 s.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			slog.Warn("runtime api accept", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-s.done:
				return
			}
		}
		backoff = 0
		c := &conn{s: s, nc: nc}
		c.br = bufio.NewReaderSize(&c.lr, 16<<10)
		c.lr.R = nc
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go c.serve()
	}
}

// conn is one connection from the runtime (or an extension).
type conn struct {
	s  *Server
	nc net.Conn
	lr io.LimitedReader // what a request's head may still read from nc
	br *bufio.Reader    // over lr
	wm sync.Mutex
	// deadline: a read deadline is set, to be cleared before the
	// connection idles.
	deadline bool
}

func (c *conn) serve() {
	s := c.s
	defer func() {
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		if s.waiting == c {
			s.waiting = nil
		}
		s.mu.Unlock()
		<-s.slots
	}()
	for {
		c.lr.N = MaxHeaderBytes
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		// Deadlines bound only what still has to come: a runtime writes a
		// request whole, so most are parsed from the buffer with no read,
		// and skipping the deadlines saves three timer updates per request.
		if !headBuffered(c.br) {
			c.readWithin(s.cfg.HeaderTimeout)
		}
		req, err := http.ReadRequest(c.br)
		if err != nil {
			if c.lr.N <= 0 {
				c.writeStatus(http.StatusRequestHeaderFieldsTooLarge, ErrorDoc("RequestHeaderFieldsTooLarge",
					"request line and headers exceed "+strconv.Itoa(MaxHeaderBytes)+" bytes"))
			}
			return
		}
		// The body is bounded where it is read; here only in time.
		c.lr.N = math.MaxInt64
		if !bodyBuffered(req, c.br) {
			c.readWithin(s.cfg.BodyTimeout)
		}
		if !c.route(req) {
			return
		}
		if c.deadline { // between requests a connection may idle
			c.nc.SetReadDeadline(time.Time{})
			c.deadline = false
		}
	}
}

// readWithin bounds the connection's reads from now until the request has
// been answered.
func (c *conn) readWithin(d time.Duration) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	c.deadline = true
}

// headBuffered says whether br holds a whole request head (up to its empty
// line), so that parsing it reads nothing more.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\r\n\r\n"))
}

// bodyBuffered says whether br holds the whole body of req (whose head was
// just read from it), so that reading it reads nothing more.
func bodyBuffered(req *http.Request, br *bufio.Reader) bool {
	switch {
	case req.Body == http.NoBody:
		return true
	case req.ContentLength >= 0:
		return int64(br.Buffered()) >= req.ContentLength
	}
	b, _ := br.Peek(br.Buffered())
	return chunkedComplete(b)
}

// chunkedComplete says whether b starts with a whole chunked body without
// trailers, in the strict form runtimes write ("SIZE\r\nDATA\r\n" ...
// "0\r\n\r\n"). Anything else is left to the body's reader, under a
// deadline.
func chunkedComplete(b []byte) bool {
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 1 || b[i-1] != '\r' {
			return false
		}
		size, err := strconv.ParseUint(string(b[:i-1]), 16, 32)
		if err != nil {
			return false
		}
		b = b[i+1:]
		if size == 0 {
			return bytes.HasPrefix(b, []byte("\r\n"))
		}
		if uint64(len(b)) < size+2 || b[size] != '\r' || b[size+1] != '\n' {
			return false
		}
		b = b[size+2:]
	}
}

// readBody reads at most limit bytes of req's body, one body of the
// environment at a time: connections are bounded in number, buffered
// bodies in number too.
func (c *conn) readBody(req *http.Request, limit int64) ([]byte, error) {
	select {
	case c.s.bodies <- struct{}{}:
	case <-c.s.done:
		return nil, net.ErrClosed
	}
	defer func() { <-c.s.bodies }()
	return io.ReadAll(io.LimitReader(req.Body, limit))
}

const (
	prefix     = "/2018-06-01/runtime/"
	invocation = prefix + "invocation/"
)

// route answers one request; false closes the connection.
func (c *conn) route(req *http.Request) bool {
	s := c.s
	p := req.URL.Path
	switch {
	case req.Method == http.MethodGet && p == invocation+"next":
		s.readyOnce.Do(func() { close(s.ready) })
		s.mu.Lock()
		if ev := s.queued; ev != nil {
			s.queued = nil
			s.current, s.lastDelivered, s.stream = ev.RequestID, ev.RequestID, ev.Stream
			s.mu.Unlock()
			return c.writeEvent(ev) == nil
		}
		s.waiting = c
		s.mu.Unlock()
		return true
	case req.Method == http.MethodPost && strings.HasPrefix(p, invocation):
		rest := p[len(invocation):]
		id, kind, _ := strings.Cut(rest, "/")
		if (kind == "response" || kind == "error") && !s.isCurrent(id) {
			// Not the invoke the runtime holds: its body is not kept.
			io.Copy(io.Discard, io.LimitReader(req.Body, MaxResponse))
			c.writeInvalidID(id)
			return true
		}
		switch kind {
		case "response":
			// A streaming invoke's response passes on as it arrives, whether
			// the runtime says it streams (Lambda-Runtime-Function-Response-
			// Mode: streaming, as Node's) or not: aws-lambda-go sends every
			// response chunked without saying so, an io.Reader's as it reads.
			if st := s.streamOf(id); st != nil {
				return c.stream(id, req, st)
			}
			body, err := c.readBody(req, MaxResponse+1)
			if err != nil {
				return false
			}
			if len(body) > MaxResponse {
				msg := fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", MaxResponse)
				if c.deliver(id, Outcome{Payload: ErrorDoc("Function.ResponseSizeTooLarge", msg), ErrorType: "Function.ResponseSizeTooLarge"}) {
					c.writeStatus(http.StatusRequestEntityTooLarge, ErrorDoc("RequestEntityTooLarge", msg))
				} else {
					c.writeInvalidID(id)
				}
				return true
			}
			o := Outcome{Payload: body}
			if typ := req.Trailer.Get(errorTypeTrailer); typ != "" { // a streamed response read whole
				o = Outcome{Payload: trailerError(req, typ), ErrorType: typ}
			}
			if c.deliver(id, o) {
				c.writeAccepted()
			} else {
				c.writeInvalidID(id)
			}
			return true
		case "error":
			body, err := c.readBody(req, MaxResponse)
			if err != nil {
				return false
			}
			typ := errorType(req, body)
			if c.deliver(id, Outcome{Payload: JSONOr(body, typ), ErrorType: typ}) {
				c.writeAccepted()
			} else {
				c.writeInvalidID(id)
			}
			return true
		}
	case req.Method == http.MethodPost && p == prefix+"init/error":
		body, err := c.readBody(req, MaxResponse)
		if err != nil {
			return false
		}
		if s.cfg.Flush != nil {
			s.cfg.Flush()
		}
		typ := errorType(req, body)
		s.mu.Lock()
		if s.initErr == nil {
			s.initErr = &Outcome{Payload: JSONOr(body, typ), ErrorType: typ}
		}
		s.mu.Unlock()
		s.readyOnce.Do(func() { close(s.ready) })
		c.writeAccepted()
		return true
	}
	io.Copy(io.Discard, io.LimitReader(req.Body, MaxResponse))
	c.writeStatus(http.StatusNotFound, ErrorDoc("InvalidRequest", "unknown Runtime API path "+p))
	return true
}

// The trailers a runtime ends a streamed response with when it failed
// midway: the error type, and the error document in base64.
const (
	errorTypeTrailer = "Lambda-Runtime-Function-Error-Type"
	errorBodyTrailer = "Lambda-Runtime-Function-Error-Body"
)

func trailerError(req *http.Request, typ string) []byte {
	doc, err := base64.StdEncoding.DecodeString(req.Trailer.Get(errorBodyTrailer))
	if err != nil || len(doc) == 0 {
		return ErrorDoc(typ, "the function failed while streaming its response")
	}
	return JSONOr(doc, typ)
}

// streamOf returns the Stream of request id if it is the invoke the
// runtime holds.
func (s *Server) streamOf(id string) Stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == "" || id != s.current || s.results == nil {
		return nil
	}
	return s.stream
}

// stream passes a streamed response on to st as it arrives, up to
// MaxStreamed bytes; nothing of it is buffered here. Each read may wait
// BodyTimeout for the runtime's next bytes (a stream may last as long as
// the function's timeout). What arrives once the invoke was abandoned (it
// timed out) is read and dropped.
func (c *conn) stream(id string, req *http.Request, st Stream) bool {
	s := c.s
	st.Begin(req.Header.Get("Content-Type"))
	buf := make([]byte, 32<<10)
	var total int64
	writing := true
	for {
		c.readWithin(s.cfg.BodyTimeout)
		n, err := req.Body.Read(buf)
		if n > 0 {
			total += int64(n)
			if total > MaxStreamed {
				const msg = "Response payload size exceeded maximum allowed payload size (20971520 bytes)."
				c.deliver(id, Outcome{Payload: ErrorDoc("Function.ResponseSizeTooLarge", msg), ErrorType: "Function.ResponseSizeTooLarge", Streamed: true})
				c.writeStatus(http.StatusRequestEntityTooLarge, ErrorDoc("RequestEntityTooLarge", msg))
				return false // the rest of the body is unread
			}
			if writing && s.isCurrent(id) {
				if _, werr := st.Write(buf[:n]); werr != nil {
					writing = false // the caller is gone; the function runs on
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false // the runtime's connection broke: the worker sees it end
		}
	}
	o := Outcome{Streamed: true}
	if typ := req.Trailer.Get(errorTypeTrailer); typ != "" {
		o.ErrorType, o.Payload = typ, trailerError(req, typ)
	}
	if c.deliver(id, o) {
		c.writeAccepted()
	} else {
		c.writeInvalidID(id)
	}
	return true
}

// isCurrent says whether id is the invoke the runtime holds.
func (s *Server) isCurrent(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current != "" && id == s.current && s.results != nil
}

// deliver passes the outcome of request id to the invoker, once.
func (c *conn) deliver(id string, o Outcome) bool {
	s := c.s
	s.mu.Lock()
	if s.current == "" || id != s.current || s.results == nil {
		s.mu.Unlock()
		return false
	}
	results := s.results
	s.current, s.results, s.stream = "", nil, nil
	s.mu.Unlock()
	if s.cfg.Flush != nil {
		s.cfg.Flush()
	}
	results <- o
	// Let the invoker answer its caller before this goroutine acknowledges
	// the runtime: the caller waits on that answer, the runtime does not.
	runtime.Gosched()
	return true
}

func errorType(req *http.Request, body []byte) string {
	if t := req.Header.Get("Lambda-Runtime-Function-Error-Type"); t != "" {
		return t
	}
	var doc struct {
		ErrorType string `json:"errorType"`
	}
	if json.Unmarshal(body, &doc) == nil && doc.ErrorType != "" {
		return doc.ErrorType
	}
	return "Unhandled"
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// writeEvent answers a /next with ev: headers and body in one write.
func (c *conn) writeEvent(ev *Event) error {
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: "...)
	b = append(b, ev.RequestID...)
	b = append(b, "\r\nLambda-Runtime-Deadline-Ms: "...)
	b = strconv.AppendInt(b, ev.DeadlineMs, 10)
	b = append(b, "\r\nLambda-Runtime-Invoked-Function-Arn: "...)
	b = append(b, ev.FunctionArn...)
	b = append(b, "\r\nLambda-Runtime-Trace-Id: "...)
	b = append(b, ev.TraceID...)
	if ev.ClientContext != "" {
		b = append(b, "\r\nLambda-Runtime-Client-Context: "...)
		b = append(b, headerSafe(ev.ClientContext)...)
	}
	if ev.CognitoIdentity != "" {
		b = append(b, "\r\nLambda-Runtime-Cognito-Identity: "...)
		b = append(b, headerSafe(ev.CognitoIdentity)...)
	}
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(ev.Payload)), 10)
	b = append(b, "\r\n\r\n"...)
	c.wm.Lock()
	var err error
	if len(ev.Payload) <= 16<<10 {
		b = append(b, ev.Payload...)
		_, err = c.nc.Write(b)
	} else {
		bufs := net.Buffers{b, ev.Payload}
		_, err = bufs.WriteTo(c.nc)
	}
	c.wm.Unlock()
	*bp = b
	bufPool.Put(bp)
	return err
}

// headerSafe keeps a header value on one line.
func headerSafe(v string) string {
	return strings.NewReplacer("\r", "", "\n", "").Replace(v)
}

func (c *conn) writeAccepted() {
	c.writeStatus(http.StatusAccepted, []byte(`{"status":"OK"}`))
}

func (c *conn) writeInvalidID(id string) {
	c.writeStatus(http.StatusBadRequest, ErrorDoc("InvalidRequestID", "Invalid request ID: "+id))
}

func (c *conn) writeStatus(status int, body []byte) {
	b := make([]byte, 0, 128+len(body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	c.wm.Lock()
	c.nc.Write(b)
	c.wm.Unlock()
}

// ErrorDoc is Lambda's error document {"errorMessage","errorType"}.
func ErrorDoc(typ, msg string) []byte {
	b, _ := json.Marshal(map[string]string{"errorMessage": msg, "errorType": typ})
	return b
}

// JSONOr returns body when it is JSON, else wraps it in an error document,
// so callers always get a parseable error whatever the runtime posted.
func JSONOr(body []byte, typ string) []byte {
	if json.Valid(body) {
		return body
	}
	return ErrorDoc(typ, string(body))
}
