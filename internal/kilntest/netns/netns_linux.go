package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Split is two network namespaces the test creates, joined by a veth pair:
// "hub" holds relays to addresses on the host's 127.0.0.1, "cut" holds the
// isolated sockets or processes. Addresses exist only inside the two
// namespaces; cutting takes the veth down, silently: connections across it
// stall, as in a real partition, rather than being reset.
type Split struct {
	tb       testing.TB
	hub, cut string // namespace names
	cutIf    string
	hubIP    string
	mu       sync.Mutex
	closers  []io.Closer // listeners and relayed connections
	closed   bool
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %v: %v: %s", args, err, out)
	}
	return nil
}

// New creates the namespaces and removes them when the test ends. It skips
// the test when not root or without iproute2.
func New(tb testing.TB) *Split {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs iproute2")
	}
	var b [3]byte
	rand.Read(b[:])
	sfx := hex.EncodeToString(b[:])
	s := &Split{tb: tb, hub: "kiln-hub-" + sfx, cut: "kiln-cut-" + sfx, cutIf: "kc" + sfx}
	// A /30 inside the two namespaces only; never on the host.
	s.hubIP = fmt.Sprintf("10.%d.%d.1", 200+int(b[0])%50, b[1])
	cutIP := s.hubIP[:len(s.hubIP)-1] + "2"
	tb.Cleanup(s.close)
	for _, args := range [][]string{
		{"netns", "add", s.hub},
		{"netns", "add", s.cut},
		{"-n", s.hub, "link", "add", "kh" + sfx, "type", "veth", "peer", "name", s.cutIf, "netns", s.cut},
		{"-n", s.hub, "addr", "add", s.hubIP + "/30", "dev", "kh" + sfx},
		{"-n", s.cut, "addr", "add", cutIP + "/30", "dev", s.cutIf},
		{"-n", s.hub, "link", "set", "lo", "up"},
		{"-n", s.cut, "link", "set", "lo", "up"},
		{"-n", s.hub, "link", "set", "kh" + sfx, "up"},
		{"-n", s.cut, "link", "set", s.cutIf, "up"},
	} {
		if err := ip(args...); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// run runs fn on an OS thread switched into the named namespace, and
// switches it back. Sockets fn creates, and processes it starts, stay in
// that namespace. Threads the runtime starts meanwhile do not inherit it (a
// locked thread never clones itself). If the thread cannot be restored it
// is left locked, so it dies with the goroutine.
func run(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := os.Open("/run/netns/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("restoring network namespace: %w", err)
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Forward relays connections made, from the cut namespace, to the
// returned hub address on to target on the host.
func (s *Split) Forward(target string) string {
	s.tb.Helper()
	var ln net.Listener
	if err := run(s.hub, func() (err error) {
		ln, err = net.Listen("tcp", s.hubIP+":0")
		return err
	}); err != nil {
		s.tb.Fatal(err)
	}
	s.track(ln)
	go s.relay(ln, func() (net.Conn, error) { return net.Dial("tcp", target) })
	// The veth pair may take a moment to carry traffic.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := s.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
			return ln.Addr().String()
		}
		if time.Now().After(end) {
			s.tb.Fatalf("no route through the namespaces: %v", err)
		}
	}
}

// Expose makes target, an address on the host's 127.0.0.1, reachable at the
// same address inside the cut namespace, through the veth: a process
// started there (Start) is given the host's addresses unchanged.
func (s *Split) Expose(target string) {
	s.tb.Helper()
	hub := s.Forward(target)
	var ln net.Listener
	if err := run(s.cut, func() (err error) {
		ln, err = net.Listen("tcp", target)
		return err
	}); err != nil {
		s.tb.Fatal(err)
	}
	s.track(ln)
	go s.relay(ln, func() (net.Conn, error) { return s.Dial("tcp", hub) })
}

// relay copies every connection accepted on ln to one dial makes.
func (s *Split) relay(ln net.Listener, dial func() (net.Conn, error)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			up, err := dial()
			if err != nil {
				c.Close()
				return
			}
			if !s.track(c, up) {
				return
			}
			go func() { io.Copy(up, c); up.Close() }()
			io.Copy(c, up)
			c.Close()
		}()
	}
}

// track remembers closers for cleanup; after it, it closes them at once.
func (s *Split) track(cs ...io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	s.closers = append(s.closers, cs...)
	return true
}

// Dial implements nats.CustomDialer: the socket lives in the cut namespace.
func (s *Split) Dial(network, address string) (net.Conn, error) {
	var c net.Conn
	err := run(s.cut, func() (err error) {
		c, err = net.DialTimeout(network, address, time.Second)
		return err
	})
	return c, err
}

// Start starts cmd inside the cut namespace (it reaches the host only
// through addresses Forwarded or Exposed) and kills it, by its PID, when
// the test ends.
func (s *Split) Start(cmd *exec.Cmd) error {
	if err := run(s.cut, cmd.Start); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.tb.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return nil
}

// SetLink takes the cut namespace's side of the veth down or up.
func (s *Split) SetLink(up bool) {
	s.tb.Helper()
	state := "down"
	if up {
		state = "up"
	}
	if err := ip("-n", s.cut, "link", "set", s.cutIf, state); err != nil {
		s.tb.Fatal(err)
	}
}

func (s *Split) close() {
	s.mu.Lock()
	cs := s.closers
	s.closers, s.closed = nil, true
	s.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	ip("netns", "del", s.cut) // removes the veth pair too
	ip("netns", "del", s.hub)
}
