package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/kiln-dev/kiln/internal/agentproto"
	"golang.org/x/sys/unix"
)

// spawnerClient talks to the spawner process (agent.Spawner): it starts
// agents and learns when they end.
type spawnerClient struct {
	sock int
	cmd  *exec.Cmd

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]chan spawned
	waiting map[uint64]*process // by request, until the reply
	procs   map[int]*process
	dead    bool
}

type spawned struct {
	pid, pidfd int
	err        error
}

func startSpawner(path string) (*spawnerClient, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	theirs := os.NewFile(uintptr(pair[1]), "spawner")
	defer theirs.Close()
	cmd := &exec.Cmd{
		Path:       path,
		Args:       []string{agentproto.SpawnerName},
		ExtraFiles: []*os.File{theirs},
		Stderr:     os.Stderr,
		// Its own session: a terminal's ^C does not reach it or the agents;
		// it ends when this process's end of the socket closes.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("start spawner: %w", err)
	}
	c := &spawnerClient{sock: pair[0], cmd: cmd, pending: map[uint64]chan spawned{},
		waiting: map[uint64]*process{}, procs: map[int]*process{}}
	go c.read()
	go cmd.Wait()
	return c, nil
}

// spawn starts an agent for p; fds are sent along (see agentproto.SpawnRequest).
func (c *spawnerClient) spawn(req *agentproto.SpawnRequest, p *process, fds []int) (pid, pidfd int, err error) {
	ch := make(chan spawned, 1)
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return 0, -1, errSpawnerGone
	}
	c.seq++
	req.Seq = c.seq
	c.pending[req.Seq] = ch
	// The reader registers p under its pid as soon as the reply arrives,
	// before any exit of that pid can be read.
	c.waiting[req.Seq] = p
	c.mu.Unlock()
	if err := agentproto.SendMsg(c.sock, req, fds...); err != nil {
		c.mu.Lock()
		delete(c.pending, req.Seq)
		delete(c.waiting, req.Seq)
		c.mu.Unlock()
		return 0, -1, fmt.Errorf("spawner: %w", err)
	}
	r := <-ch
	return r.pid, r.pidfd, r.err
}

var errSpawnerGone = errors.New("sandbox: the spawner process is gone")

func (c *spawnerClient) read() {
	buf := make([]byte, agentproto.MaxSpawnMessage)
	for {
		var m agentproto.SpawnMessage
		fds, err := agentproto.RecvMsg(c.sock, buf, &m)
		if err != nil {
			if _, ok := err.(unix.Errno); ok || errors.Is(err, agentproto.ErrPeerClosed) {
				c.gone()
				return
			}
			continue
		}
		switch {
		case m.Reply != nil:
			r := spawned{pid: m.Reply.Pid, pidfd: -1}
			if m.Reply.Err != "" {
				r.err = errors.New(m.Reply.Err)
			} else if len(fds) > 0 {
				r.pidfd = fds[0]
				fds = fds[1:]
			}
			c.mu.Lock()
			ch := c.pending[m.Reply.Seq]
			delete(c.pending, m.Reply.Seq)
			if p := c.waiting[m.Reply.Seq]; p != nil && r.err == nil {
				c.procs[r.pid] = p
			}
			delete(c.waiting, m.Reply.Seq)
			c.mu.Unlock()
			if ch != nil {
				ch <- r
			}
		case m.Exit != nil:
			c.mu.Lock()
			p := c.procs[m.Exit.Pid]
			delete(c.procs, m.Exit.Pid)
			c.mu.Unlock()
			if p != nil {
				p.exited(syscall.WaitStatus(m.Exit.Status))
			}
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// gone handles the spawner's end: its agents died with it.
func (c *spawnerClient) gone() {
	c.mu.Lock()
	c.dead = true
	pending, procs := c.pending, c.procs
	c.pending, c.procs, c.waiting = map[uint64]chan spawned{}, map[int]*process{}, map[uint64]*process{}
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- spawned{err: errSpawnerGone}
	}
	for _, p := range procs {
		p.exited(syscall.WaitStatus(syscall.SIGKILL)) // a signaled status
	}
}

func (c *spawnerClient) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}
