package agentproto

import (
	"errors"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Listener turns the first descriptor of a handover into the Runtime API's
// listener: the listening socket itself, or (h.Conns) a unix socket that
// carries one connection per message.
func Listener(h Handover, f *os.File) (net.Listener, error) {
	if !h.Conns {
		return net.FileListener(f)
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	return &connListener{fd: fd, addr: addr(h.RuntimeAPI), done: make(chan struct{})}, nil
}

// SendConn passes the connected socket conn over the unix socket sock, for a
// Listener on the other end.
func SendConn(sock, conn int) error {
	return unix.Sendmsg(sock, []byte{'c'}, unix.UnixRights(conn), nil, 0)
}

type connListener struct {
	fd   int
	addr net.Addr

	closeOnce sync.Once
	done      chan struct{}
	mu        sync.Mutex // one Accept at a time
}

type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }

func (l *connListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
		n, oobn, _, _, err := unix.Recvmsg(l.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			select {
			case <-l.done:
				return nil, net.ErrClosed
			default:
			}
			if err == nil {
				err = net.ErrClosed // the agent is gone
			}
			return nil, err
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			continue
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		f := os.NewFile(uintptr(fds[0]), "runtime-api-conn")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			continue
		}
		return c, nil
	}
}

// Close stops Accept: shutting the socket down wakes a blocked recvmsg.
func (l *connListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		unix.Shutdown(l.fd, unix.SHUT_RDWR)
		go func() { l.mu.Lock(); unix.Close(l.fd); l.mu.Unlock() }()
	})
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
