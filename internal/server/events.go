package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/frontend"
	"github.com/kiln-dev/kiln/internal/handoff"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/roles"
	"github.com/kiln-dev/kiln/internal/sched"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The event-invoke frontend process.
//
// A flood of Event invokes costs CPU in whichever process takes them:
// reading requests, verifying signatures, writing events. Go cannot run some
// goroutines at a lower priority than others, so while sync invokes are
// being served (and until none has run for syncQuiet) `kiln up` hands the
// connections that carry Event invokes (package handoff) to an event-invoke
// frontend process of its own, which runs at idle CPU priority (SCHED_IDLE;
// nice 19 where that is refused): events are then taken with the CPU that
// sync invokes leave. Lambda runs that frontend as a fleet of its own. On a
// machine with no sync traffic, `kiln up` takes events itself, at full
// speed: the process hands connections back at their next Event invoke once
// told that sync invokes are quiet, and at once for any other request. The
// events go to the same JetStream stream, through the embedded NATS
// server's loopback listener, and the pollers here take them. While the
// process is down (it is restarted), Event invokes are taken here.

// Notes on the handoff socket.
const (
	noteSyncActive = 's' // kiln up → event frontend: keep Event invokes
	noteSyncQuiet  = 'q' // kiln up → event frontend: hand them back
	noteEnqueued   = 'e' // event frontend → kiln up: it takes events (pollers yield)
)

// EventFrontendConfig is what `kiln up` gives its event-invoke frontend
// process, on a pipe at file descriptor 4: it holds secrets (the account's
// key, the NATS password), which the environment would show to anyone who
// may read /proc/PID/environ.
type EventFrontendConfig struct {
	NATSURL      string   `json:"natsUrl"`
	NATSPassword string   `json:"natsPassword,omitempty"`
	Region       string   `json:"region"`
	Identity     Identity `json:"identity"`
	Shards       int      `json:"shards"` // eventinvoke.Tuning.Shards: the subjects events go to
}

// EventFrontendEnv is set (to "1") in the event frontend process's
// environment only: it marks the process, and carries nothing secret.
const EventFrontendEnv = "KILN_EVENT_FRONTEND"

// eventFrontend runs and supervises the process and hands connections to it.
type eventFrontend struct {
	argv        []string
	cfg         EventFrontendConfig
	serve       func(net.Listener) // serves connections handed back, on the main HTTP server
	enqueueSeen func()
	logger      *slog.Logger

	handoffs atomic.Int64                     // connections handed to the process
	syncing  atomic.Int64                     // sync invokes under way
	lastSync atomic.Int64                     // unix nanoseconds when the last one ended
	active   atomic.Bool                      // sync invokes are being served: events go to the process
	noteMu   sync.Mutex                       // orders the active flag and its note
	current  atomic.Pointer[handoff.Endpoint] // nil while the process is down
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   <-chan struct{} // of cmd
	closed   bool

	activated chan struct{} // a token when the active state begins
	done      chan struct{} // closed by close
}

// startEventFrontend starts the process and waits until it takes
// connections. enqueueSeen runs when the process reports taking events.
func startEventFrontend(ctx context.Context, argv []string, cfg EventFrontendConfig, serve func(net.Listener), enqueueSeen func(), logger *slog.Logger) (*eventFrontend, error) {
	e := &eventFrontend{argv: argv, cfg: cfg, serve: serve, enqueueSeen: enqueueSeen, logger: logger,
		activated: make(chan struct{}, 1), done: make(chan struct{})}
	exited, err := e.spawn(ctx)
	if err != nil {
		return nil, err
	}
	go e.supervise(exited)
	go e.watchQuiet()
	return e, nil
}

// noteEvery is how often, at most, the event frontend tells kiln up that it
// takes events.
const noteEvery = 10 * time.Millisecond

// syncQuiet is how long after the last sync invoke events keep going to the
// event frontend.
const syncQuiet = 50 * time.Millisecond

// syncInvoke notes a sync invoke starting; the returned func notes its end.
func (e *eventFrontend) syncInvoke() (end func()) {
	if e.syncing.Add(1) == 1 && !e.active.Load() {
		e.setActive(true)
	}
	return func() {
		e.lastSync.Store(time.Now().UnixNano())
		e.syncing.Add(-1)
	}
}

// watchQuiet ends the active state once sync invokes have been quiet for
// syncQuiet. Outside the active state it sleeps, so that an idle Kiln is
// not woken for it.
func (e *eventFrontend) watchQuiet() {
	for {
		select {
		case <-e.activated:
		case <-e.done:
			return
		}
		for e.active.Load() {
			select {
			case <-time.After(syncQuiet / 5):
			case <-e.done:
				return
			}
			if quiet(e.syncing.Load(), e.lastSync.Load(), time.Now().UnixNano()) {
				e.setActive(false)
			}
		}
	}
}

// setActive flips the state and tells the process, before any connection
// is handed over in the new state (the socket keeps the order): the process
// never hands back a connection kiln up would pass again.
func (e *eventFrontend) setActive(active bool) {
	e.noteMu.Lock()
	defer e.noteMu.Unlock()
	if e.active.Load() == active {
		return
	}
	note := byte(noteSyncQuiet)
	if active {
		note = noteSyncActive
	}
	if ep := e.current.Load(); ep != nil {
		ep.Note(note)
	}
	e.active.Store(active)
	if active {
		select {
		case e.activated <- struct{}{}:
		default:
		}
	}
}

// spawn starts one process over a new handoff socket.
func (e *eventFrontend) spawn(ctx context.Context) (<-chan struct{}, error) {
	cfg, err := json.Marshal(e.cfg)
	if err != nil {
		return nil, err
	}
	// The config is written whole into a pipe before the child starts (it
	// is far below a pipe's buffer), so the child reads it to EOF.
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer cfgR.Close()
	_, err = cfgW.Write(cfg)
	cfgW.Close()
	if err != nil {
		return nil, err
	}
	ours, theirs, err := handoff.Pair()
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	cmd := exec.Command(e.argv[0], e.argv[1:]...)
	cmd.Env = append(os.Environ(), EventFrontendEnv+"=1")
	cmd.ExtraFiles = []*os.File{theirs, cfgR} // fd 3, fd 4
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		ours.Close()
		return nil, err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		ours.Close()
		return nil, errors.New("event frontend: closed")
	}
	err = cmd.Start()
	e.cmd = cmd
	e.mu.Unlock()
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("event frontend: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	e.mu.Lock()
	e.exited = exited
	e.mu.Unlock()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok && sc.Text() == eventFrontendReady {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	fail := func(err error) (<-chan struct{}, error) {
		cmd.Process.Kill()
		<-exited
		ours.Close()
		return nil, fmt.Errorf("event frontend: %w", err)
	}
	select {
	case ok := <-ready:
		if !ok {
			return fail(errors.New("exited before it was ready"))
		}
	case <-time.After(30 * time.Second):
		return fail(errors.New("not ready after 30 s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	ep, err := handoff.Open(ours, nil, func(note byte) {
		if note == noteEnqueued {
			e.enqueueSeen()
		}
	})
	if err != nil {
		return fail(err)
	}
	e.noteMu.Lock()
	if e.active.Load() { // a restarted process starts quiet
		ep.Note(noteSyncActive)
	}
	e.current.Store(ep)
	e.noteMu.Unlock()
	go e.serve(ep)
	return exited, nil
}

// supervise restarts the process when it dies, until close.
func (e *eventFrontend) supervise(exited <-chan struct{}) {
	for {
		<-exited
		if ep := e.current.Swap(nil); ep != nil {
			ep.Close()
		}
		if e.isClosed() {
			return
		}
		e.logger.Warn("event frontend process exited; Event invokes are taken in process until it is back")
		for {
			time.Sleep(time.Second)
			var err error
			if exited, err = e.spawn(context.Background()); err == nil {
				e.logger.Info("event frontend process restarted")
				break
			}
			if e.isClosed() {
				return
			}
			e.logger.Warn("event frontend", "err", err)
		}
	}
}

// serveHTTP hands r's connection to the process when r is an Event invoke
// while sync invokes are being served; else next serves r here.
func (e *eventFrontend) serveHTTP(w http.ResponseWriter, r *http.Request, next http.Handler) {
	ep := e.current.Load()
	switch upRoute(isInvoke(r), r.Header.Get("X-Amz-Invocation-Type"), e.active.Load(), ep != nil) {
	case serveHere:
		next.ServeHTTP(w, r)
		return
	case serveSync:
		defer e.syncInvoke()()
		next.ServeHTTP(w, r)
		return
	}
	switch err := ep.Pass(w, r); {
	case errors.Is(err, handoff.ErrNotPassed):
		next.ServeHTTP(w, r)
	case err != nil:
		e.logger.Warn("hand off to the event frontend", "err", err)
	default:
		e.handoffs.Add(1)
	}
}

func (e *eventFrontend) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// close stops the process, letting it finish the enqueues under way (their
// events must reach JetStream, which outlives it).
func (e *eventFrontend) close() {
	e.mu.Lock()
	if !e.closed {
		close(e.done)
	}
	e.closed = true
	cmd, exited := e.cmd, e.exited
	e.mu.Unlock()
	ep := e.current.Swap(nil) // Event invokes are taken here meanwhile
	if cmd != nil && exited != nil {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(6 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	if ep != nil {
		ep.Close()
	}
}

func isInvoke(r *http.Request) bool {
	_, _, ok := frontend.BodyLimit(r)
	return ok
}

func isEventInvoke(r *http.Request) bool {
	return isInvoke(r) && r.Header.Get("X-Amz-Invocation-Type") == "Event"
}

// eventFrontendReady is the line the process prints once it takes connections.
const eventFrontendReady = "event frontend ready"

// RunEventFrontend is the event-invoke frontend process (`kiln
// event-frontend`, started by `kiln up`): it serves the Event invokes on
// the connections handed to it on file descriptor 3 until ctx ends.
func RunEventFrontend(ctx context.Context, logger *slog.Logger) error {
	if err := sched.IdleSelf(); err != nil {
		logger.Warn("idle CPU priority", "err", err)
	}
	var cfg EventFrontendConfig
	cfgFile := os.NewFile(4, "config")
	b, err := io.ReadAll(cfgFile)
	cfgFile.Close()
	if err != nil {
		return fmt.Errorf("event frontend: config on fd 4: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("event frontend: config on fd 4: %w", err)
	}
	opts := []nats.Option{nats.Name("kiln-event-frontend"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	if cfg.NATSPassword != "" {
		opts = append(opts, nats.UserInfo(natsd.User, cfg.NATSPassword))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("event frontend: nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := metadata.Open(ctx, js, metadata.Config{})
	if err != nil {
		return err
	}
	// Enqueue only: the pollers are `kiln up`'s.
	async, err := eventinvoke.New(ctx, eventinvoke.Config{NATS: nc, Region: cfg.Region,
		Tuning: eventinvoke.Tuning{Shards: cfg.Shards, Pollers: -1}, Logger: logger})
	if err != nil {
		return err
	}
	keyring, _, err := cfg.Identity.FollowKeyring(ctx, js, cfg.Region, 1)
	if err != nil {
		return err
	}
	front, err := roles.NewFrontend(ctx, roles.FrontendConfig{Keyring: keyring,
		Config: frontend.Config{Functions: store, Async: async, Region: cfg.Region, Logger: logger}})
	if err != nil {
		return err
	}
	var active atomic.Bool // sync invokes are being served in kiln up
	ep, err := handoff.Open(os.NewFile(3, "handoff"), nil, func(note byte) { active.Store(note == noteSyncActive) })
	if err != nil {
		return err
	}
	var lastNote atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 30 * time.Second, MaxHeaderBytes: handoff.MaxHead,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Event invokes while kiln up serves sync ones are ours; the
			// rest goes back to kiln up, with its connection.
			if frontendRoute(isEventInvoke(r), active.Load()) == serveHere {
				if now := time.Now().UnixNano(); now-lastNote.Load() > int64(noteEvery) {
					lastNote.Store(now)
					ep.Note(noteEnqueued) // its pollers yield to events being taken
				}
				front.Handler.ServeHTTP(w, r)
				return
			}
			if err := ep.Pass(w, r); err != nil {
				if errors.Is(err, handoff.ErrNotPassed) {
					w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
					return
				}
				logger.Warn("hand back to kiln up", "err", err)
			}
		})}
	fmt.Println(eventFrontendReady)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	err = srv.Serve(ep)
	if errors.Is(err, io.EOF) { // kiln up closed its end: it is going away
		logger.Info("kiln up is gone; stopping")
		return nil
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
		return fmt.Errorf("event frontend: %w", err)
	}
	return nil
}

// natsPassword is a fresh secret for the event frontend's NATS user.
func natsPassword() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}
