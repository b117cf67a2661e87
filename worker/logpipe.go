package worker

import (
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// logPipe reads the runtime's stdout and stderr (the read end of the pipe the
// agent opened inside the sandbox).
//
// Every byte the runtime wrote before it posted an invoke's result must be
// read before that result is delivered, so its lines are counted in that
// invoke. A background reader waits for output; flush reads whatever is left,
// without blocking, from the goroutine that delivers the result. Both read
// and hand on under one lock, so output keeps the pipe's order.
type logPipe struct {
	rfd    int
	output func([]byte)

	mu  sync.Mutex
	buf []byte
	eof bool
}

func newLogPipe(f *os.File, output func([]byte)) (*logPipe, error) {
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	p := &logPipe{rfd: fd, output: output, buf: make([]byte, 64<<10)}
	go p.wait()
	return p, nil
}

// wait blocks until output is readable, then hands it on, until EOF (every
// process holding the write end is gone).
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

// flush hands on everything readable now and reports whether the pipe ended.
func (p *logPipe) flush() (eof bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.eof {
		n, err := unix.Read(p.rfd, p.buf)
		if n > 0 {
			p.output(p.buf[:n])
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
