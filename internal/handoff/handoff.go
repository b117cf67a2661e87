// Package handoff moves a client's HTTP connection, with the request being
// served on it, from one process to another, so that two processes can
// serve one listener and each take the requests meant for it: `kiln up`
// passes the connections that carry Event invokes to its event-invoke
// frontend, which runs at idle CPU priority, and that process passes a
// connection back when a request on it is for anything else.
//
// The connection travels as a file descriptor over a SOCK_SEQPACKET Unix
// socket, together with the request's head (serialized again) and whatever
// the sender had read past it; the body still unread stays in the socket
// for the receiver. Neither side copies bodies nor proxies.
package handoff

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxHead bounds a request head that can be handed off; servers that hand
// off set it as http.Server.MaxHeaderBytes (net/http allows 4 KB over it),
// so that every message fits one datagram of the Unix socket.
const MaxHead = 64 << 10

// maxMessage is the largest message: a head, plus what the sender's
// buffered reader held past it, plus net/http's slack.
const maxMessage = 2*MaxHead + 64<<10

// Pair returns the two ends of a socket for handing off connections; each
// end can send and receive.
func Pair() (a, b *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff socket pair: %w", err)
	}
	for _, fd := range fds {
		// Room for a full message: the default buffer can be smaller.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, maxMessage)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, maxMessage)
	}
	return os.NewFile(uintptr(fds[0]), "handoff-a"), os.NewFile(uintptr(fds[1]), "handoff-b"), nil
}

// Endpoint is one end of a handoff socket.
type Endpoint struct {
	sock *net.UnixConn
	addr net.Addr

	onNote  func(byte)
	conns   chan net.Conn
	errOnce sync.Once
	err     error
	done    chan struct{}
}

// Open serves one end of a handoff socket (a file from Pair, or one
// inherited). addr is what received connections report as their local
// address; onNote, if set, runs for every Note from the other end.
func Open(f *os.File, addr net.Addr, onNote func(byte)) (*Endpoint, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("handoff socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("handoff socket: %T is not a Unix socket", c)
	}
	e := &Endpoint{sock: uc, addr: addr, onNote: onNote, conns: make(chan net.Conn), done: make(chan struct{})}
	go e.receive()
	return e, nil
}

// ErrNotPassed means Pass left the request where it was (its head is too
// large to send): the caller still serves it.
var ErrNotPassed = errors.New("handoff: request head too large to pass")

// Pass hands the connection of the request r to the other end, which
// serves r as if it had read it itself. Pass hijacks the connection: when
// it returns nil the request is the other side's; on an error the
// connection has been closed (the client sees it drop, as when a server
// dies, and retries), unless the error is ErrNotPassed. Call it before
// reading r's body.
func (e *Endpoint) Pass(w http.ResponseWriter, r *http.Request) error {
	head, err := Head(r)
	if err != nil {
		return err
	}
	if len(head) > MaxHead+4<<10 {
		return ErrNotPassed
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fmt.Errorf("handoff: %w", err)
	}
	defer conn.Close() // the other side holds its own descriptor
	msg := head
	if n := rw.Reader.Buffered(); n > 0 {
		rest, _ := rw.Reader.Peek(n)
		msg = append(msg, rest...)
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("handoff: %T has no descriptor", conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	if err := raw.Control(func(fd uintptr) {
		_, _, sendErr = e.sock.WriteMsgUnix(msg, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	if sendErr != nil {
		return fmt.Errorf("handoff: %w", sendErr)
	}
	return nil
}

// Head serializes the head of a request as read by a server: what a client
// sent, up to the body, in the form net/http parses back to the same
// request (the SigV4 signature still verifies).
func Head(r *http.Request) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/%d.%d\r\nHost: %s\r\n", r.Method, r.RequestURI, r.ProtoMajor, r.ProtoMinor, r.Host)
	h := r.Header.Clone()
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	if err := h.Write(&b); err != nil {
		return nil, err
	}
	switch {
	case len(r.TransferEncoding) > 0:
		fmt.Fprintf(&b, "Transfer-Encoding: %s\r\n", r.TransferEncoding[len(r.TransferEncoding)-1])
	case r.ContentLength > 0:
		fmt.Fprintf(&b, "Content-Length: %d\r\n", r.ContentLength)
	}
	if r.Close && len(r.Header["Connection"]) == 0 { // an empty Connection header is kept as it came
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes(), nil
}

// Note sends the other end a one-byte message that carries no connection:
// its onNote runs with b. Notes and connections arrive in the order sent.
func (e *Endpoint) Note(b byte) error {
	_, err := e.sock.Write([]byte{b})
	return err
}

// receive turns every message from the other end into a connection for Accept.
func (e *Endpoint) receive() {
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := e.sock.ReadMsgUnix(buf, oob)
		if err != nil || (n == 0 && oobn == 0) {
			e.fail(fmt.Errorf("handoff socket: %w", errors.Join(err, io.EOF)))
			return
		}
		if oobn == 0 { // a note
			if e.onNote != nil && n == 1 {
				e.onNote(buf[0])
			}
			continue
		}
		c, err := connFrom(buf[:n], oob[:oobn], e.addr)
		if err != nil {
			continue // a broken message loses that one connection only
		}
		select {
		case e.conns <- c:
		case <-e.done:
			c.Close()
			return
		}
	}
}

func connFrom(msg, oob []byte, local net.Addr) (net.Conn, error) {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(cmsgs) != 1 {
		return nil, errors.New("handoff: no descriptor")
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, errors.New("handoff: no descriptor")
	}
	f := os.NewFile(uintptr(fds[0]), "handed-off")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return &prefixed{Conn: c, prefix: bytes.Clone(msg), local: local}, nil
}

// prefixed reads the bytes the sender had already taken off the wire first.
type prefixed struct {
	net.Conn
	prefix []byte
	local  net.Addr
}

func (p *prefixed) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// SyscallConn lets a received connection be passed on again.
func (p *prefixed) SyscallConn() (syscall.RawConn, error) {
	sc, ok := p.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("handoff: %T has no descriptor", p.Conn)
	}
	return sc.SyscallConn()
}

func (p *prefixed) LocalAddr() net.Addr {
	if p.local != nil {
		return p.local
	}
	return p.Conn.LocalAddr()
}

func (e *Endpoint) fail(err error) {
	e.errOnce.Do(func() { e.err = err; close(e.done) })
}

// Accept returns the next connection handed over by the other end: the
// Endpoint is a net.Listener for http.Server.Serve.
func (e *Endpoint) Accept() (net.Conn, error) {
	select {
	case c := <-e.conns:
		return c, nil
	case <-e.done:
		return nil, e.err
	}
}

// Close stops receiving and closes this end.
func (e *Endpoint) Close() error {
	e.fail(net.ErrClosed)
	return e.sock.Close()
}

// Addr is the address given to Open.
func (e *Endpoint) Addr() net.Addr {
	if e.addr != nil {
		return e.addr
	}
	return e.sock.LocalAddr()
}
