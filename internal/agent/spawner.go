package agent

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/kiln-dev/kiln/internal/agentproto"
	"golang.org/x/sys/unix"
)

// Spawner serves agentproto spawn requests on the unix SOCK_SEQPACKET
// socket fd: it starts each agent in the namespaces asked for (a user
// namespace among them, which rules out vfork, so a small process forks
// faster than the worker could), answers with the agent's pid and pidfd,
// reaps the agents and reports their exits. It ends when the worker's end
// of the socket closes; the agents die with it (their parent-death signal).
func Spawner(fd int) error {
	unix.CloseOnExec(fd)
	discardSignals() // it ends with the worker's socket, not by a stray signal
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	s := &spawner{sock: fd, devnull: int(devnull.Fd()), replied: map[int]bool{}, early: map[int]int{}}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	go s.reap(sigchld)
	buf := make([]byte, agentproto.MaxSpawnMessage)
	for {
		var req agentproto.SpawnRequest
		fds, err := agentproto.RecvMsg(fd, buf, &req)
		if err != nil {
			if errors.Is(err, agentproto.ErrPeerClosed) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EBADF) {
				return nil
			}
			if _, ok := err.(unix.Errno); ok {
				return err
			}
			continue // a malformed request
		}
		go func() {
			s.spawn(&req, fds)
			for _, f := range fds {
				unix.Close(f)
			}
		}()
	}
}

type spawner struct {
	sock    int
	devnull int

	// A reply goes out before its agent's exit: exits reaped before their
	// reply wait in early.
	mu      sync.Mutex
	replied map[int]bool
	early   map[int]int
}

func (s *spawner) spawn(req *agentproto.SpawnRequest, fds []int) {
	reply := agentproto.SpawnReply{Seq: req.Seq}
	files := []uintptr{uintptr(s.devnull), 2, 2}
	sys := &syscall.SysProcAttr{
		Cloneflags: req.Cloneflags,
		Pdeathsig:  syscall.SIGKILL,
	}
	if req.CgroupFD {
		if len(fds) == 0 {
			reply.Err = "cgroup descriptor missing"
			s.send(agentproto.SpawnMessage{Reply: &reply})
			return
		}
		sys.UseCgroupFD, sys.CgroupFD = true, fds[len(fds)-1]
		fds = fds[:len(fds)-1]
	}
	for _, f := range fds {
		files = append(files, uintptr(f))
	}
	if req.Cloneflags&syscall.CLONE_NEWUSER != 0 {
		m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(req.UIDBase), Size: int(req.IDCount)}}
		sys.UidMappings, sys.GidMappings = m, m
		sys.GidMappingsEnableSetgroups = true // so that the agent starts with no supplementary groups
		sys.Credential = &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}
	}
	pidfd := -1
	sys.PidFD = &pidfd
	pid, err := syscall.ForkExec("/proc/self/exe", req.Args, &syscall.ProcAttr{Dir: "/", Env: req.Env, Files: files, Sys: sys})
	if err != nil {
		reply.Err = err.Error()
		s.send(agentproto.SpawnMessage{Reply: &reply})
		return
	}
	reply.Pid = pid
	s.mu.Lock()
	defer s.mu.Unlock()
	if pidfd >= 0 {
		s.send(agentproto.SpawnMessage{Reply: &reply}, pidfd)
		unix.Close(pidfd)
	} else {
		s.send(agentproto.SpawnMessage{Reply: &reply})
	}
	if ws, ok := s.early[pid]; ok {
		delete(s.early, pid)
		s.send(agentproto.SpawnMessage{Exit: &agentproto.SpawnExit{Pid: pid, Status: ws}})
		return
	}
	s.replied[pid] = true
}

func (s *spawner) send(m agentproto.SpawnMessage, fds ...int) {
	agentproto.SendMsg(s.sock, m, fds...)
}

func (s *spawner) reap(sigchld <-chan os.Signal) {
	reapChildren(sigchld, func(pid int, ws syscall.WaitStatus) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.replied[pid] {
			delete(s.replied, pid)
			s.send(agentproto.SpawnMessage{Exit: &agentproto.SpawnExit{Pid: pid, Status: int(ws)}})
		} else {
			s.early[pid] = int(ws)
		}
	})
}
