package natsd

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/sys/unix"
)

// A full disk. nats-server shuts JetStream down when a write finds no
// space, and does not start it again by itself; meanwhile every
// JetStream call hangs or fails with an internal error. So the server
// watches the file system of its directory: below Config.Reserve free
// bytes (or with JetStream shut down) StoreFull reports it, callers refuse
// writes with a clear error before JetStream reaches the end of the disk,
// and once space is back JetStream is started again over the same files.

// diskEvery is how often the free space is read.
const diskEvery = 250 * time.Millisecond

// DiskState is what the watch saw last.
type DiskState struct {
	Full      bool   // writes are refused
	FreeBytes uint64 // free on the store's file system, for unprivileged writers
	Restarts  int64  // times JetStream was started again after running out of space
}

// Disk reports the store's disk state; the zero value without a directory.
func (s *Server) Disk() DiskState {
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	return s.disk
}

// StoreFull says why writes to JetStream are refused now, nil when they
// are not: a 503 ServiceException (the SDKs retry 503s) naming the cause.
func (s *Server) StoreFull() error {
	d := s.Disk()
	if !d.Full {
		return nil
	}
	e := api.Errorf(api.Service, "Kiln's store is out of disk space (%d bytes free on the file system of %s): the request was not taken. Retry once space is freed.",
		d.FreeBytes, s.dir)
	e.Status = http.StatusServiceUnavailable
	return e
}

// reserve is the free space kept back: 64 MB, or 5% of a smaller file system.
func reserve(fsBytes uint64) uint64 {
	return min(64<<20, fsBytes/20)
}

func (s *Server) watchDisk(dir string, stop <-chan struct{}) {
	t := time.NewTicker(diskEvery)
	defer t.Stop()
	for {
		s.checkDisk(dir)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (s *Server) checkDisk(dir string) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return
	}
	free := st.Bavail * uint64(st.Bsize)
	low := free < reserve(st.Blocks*uint64(st.Bsize))
	s.diskMu.Lock()
	wasFull := s.disk.Full
	s.diskMu.Unlock()
	restarted := false
	if !low && (wasFull || !s.srv.JetStreamEnabled()) {
		// Space is back. A stream whose write failed for lack of space
		// keeps failing (the file store holds on to the error), and
		// JetStream itself may have stopped: start it again; it recovers
		// every stream from the same directory.
		if s.srv.JetStreamEnabled() {
			s.srv.ShutdownJetStream()
		}
		restarted = s.srv.EnableJetStream(&server.JetStreamConfig{StoreDir: dir}) == nil
	}
	full := low || !s.srv.JetStreamEnabled()
	s.diskMu.Lock()
	s.disk.Full, s.disk.FreeBytes = full, free
	if restarted {
		s.disk.Restarts++
	}
	s.diskMu.Unlock()
	switch {
	case full && !wasFull:
		slog.Warn("store disk full: refusing Event invokes and changes until space is freed", "dir", dir, "free", free)
	case wasFull && !full:
		slog.Info("store disk has space again: taking requests", "dir", dir, "free", free, "jetstream_restarted", restarted)
	}
}
