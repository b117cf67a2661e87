package agent

import (
	"errors"
	"os"
	"sync"

	"github.com/kiln-dev/kiln/agentproto"
	"golang.org/x/sys/unix"
)

// logPipe carries the runtime's stdout and stderr to the worker as log frames.
//
// Every byte the runtime wrote before it posted an invoke's response must
// reach the worker before that response, so its log lines are counted in that
// invoke. A background reader waits for output; flush reads whatever is left,
// without blocking, from the goroutine that is about to send the result. Both
// read and send under one lock, so frames keep the pipe's order.
type logPipe struct {
	w    *os.File // the runtime's end
	rfd  int      // our end, non-blocking
	conn *agentproto.Conn

	mu  sync.Mutex
	buf []byte
	eof bool
}

func newLogPipe(conn *agentproto.Conn) (*logPipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		return nil, err
	}
	p := &logPipe{w: os.NewFile(uintptr(fds[1]), "runtime-output"), rfd: fds[0], conn: conn, buf: make([]byte, 64<<10)}
	go p.wait()
	return p, nil
}

// wait blocks until output is readable, then forwards it, until EOF.
func (p *logPipe) wait() {
	pfd := []unix.PollFd{{Fd: int32(p.rfd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(pfd, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if p.flush() {
			return
		}
	}
}

// flush forwards everything readable now and reports whether the pipe ended.
func (p *logPipe) flush() (eof bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.eof {
		n, err := unix.Read(p.rfd, p.buf)
		if n > 0 {
			p.conn.Write(agentproto.KindLog, nil, p.buf[:n])
			continue
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			break
		}
		p.eof = true // n == 0: every writer closed; or a hard error
		unix.Close(p.rfd)
	}
	return p.eof
}
