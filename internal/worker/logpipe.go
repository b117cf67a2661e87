package worker

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// logPipe reads the runtime's stdout and stderr (the read end of the pipe the
// agent opened inside the sandbox).
//
// Every byte the runtime wrote before it posted an invoke's result must be
// read before that result is delivered, so its lines are counted in that
// invoke. A background reader waits on the netpoller (no thread per
// environment) and reads what arrives; flush reads whatever is left, without
// blocking, from the goroutine that delivers the result. Both read and hand
// on under one lock, so output keeps the pipe's order.
type logPipe struct {
	f      *os.File // non-blocking, registered with the netpoller
	rc     syscall.RawConn
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
	// os.NewFile on a non-blocking descriptor uses the netpoller.
	p := &logPipe{f: os.NewFile(uintptr(fd), "runtime-output"), output: output, buf: make([]byte, 16<<10)}
	if p.rc, err = p.f.SyscallConn(); err != nil {
		p.f.Close()
		return nil, err
	}
	go p.wait()
	return p, nil
}

// wait parks until output is readable, then hands it on, until EOF (every
// process holding the write end is gone).
func (p *logPipe) wait() {
	p.rc.Read(func(fd uintptr) bool { return p.drain(int(fd)) })
	p.f.Close()
}

// flush hands on everything readable now.
func (p *logPipe) flush() {
	p.rc.Control(func(fd uintptr) { p.drain(int(fd)) })
}

// drain reads until the pipe is empty and reports whether it ended.
func (p *logPipe) drain(fd int) (eof bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.eof {
		n, err := unix.Read(fd, p.buf)
		if n > 0 {
			p.output(p.buf[:n])
			continue
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			break
		}
		p.eof = true // n == 0: every writer closed; or a hard error
	}
	return p.eof
}
