package agentproto

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// The spawner protocol: a worker that isolates environments in user
// namespaces asks a small helper process of its own (the spawner) to start
// each agent, because forking a large process into a new user namespace
// cannot use vfork and costs milliseconds per environment. Messages are
// JSON, one per SOCK_SEQPACKET datagram, with descriptors as SCM_RIGHTS.

// SpawnRequest asks the spawner to start an agent. The descriptors sent
// with it become the agent's fds 3, 4, ... in order, except the last one
// when CgroupFD is set: that is the cgroup v2 directory to start it in.
type SpawnRequest struct {
	Seq  uint64   `json:"seq"`
	Args []string `json:"args"` // argv, argv[0] included; the spawner executes its own binary
	Env  []string `json:"env"`
	// Cloneflags are the namespaces to create.
	Cloneflags uintptr `json:"cloneflags"`
	// UIDBase..UIDBase+IDCount-1 on the host are 0..IDCount-1 in the user
	// namespace (the same for gids); the agent starts as root in it.
	UIDBase uint32 `json:"uidBase"`
	IDCount uint32 `json:"idCount"`
	// CgroupFD says the last descriptor is a cgroup v2 directory.
	CgroupFD bool `json:"cgroupFd,omitempty"`
}

// SpawnReply answers a SpawnRequest, with the agent's pidfd when Err is empty.
type SpawnReply struct {
	Seq uint64 `json:"seq"`
	Pid int    `json:"pid"`
	Err string `json:"err,omitempty"`
}

// SpawnExit reports that an agent ended (and was reaped).
type SpawnExit struct {
	Pid    int `json:"pid"`
	Status int `json:"status"` // wait status
}

// SpawnMessage is what the spawner sends: a reply or an exit.
type SpawnMessage struct {
	Reply *SpawnReply `json:"reply,omitempty"`
	Exit  *SpawnExit  `json:"exit,omitempty"`
}

// MaxSpawnMessage bounds a spawner datagram.
const MaxSpawnMessage = 256 << 10

// MaxSpawnFDs bounds the descriptors of one spawner datagram.
const MaxSpawnFDs = 16

// SendMsg sends v as one datagram with fds.
func SendMsg(sock int, v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > MaxSpawnMessage {
		return errors.New("agentproto: spawner message too large")
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err = unix.Sendmsg(sock, b, oob, nil, 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// RecvMsg receives one datagram into v and returns the descriptors that came
// with it (close-on-exec). It returns io.EOF-like ErrClosed when the peer is
// gone.
func RecvMsg(sock int, buf []byte, v any) ([]int, error) {
	oob := make([]byte, unix.CmsgSpace(MaxSpawnFDs*4))
	var n, oobn int
	var err error
	for {
		n, oobn, _, _, err = unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if n == 0 && oobn == 0 {
		return nil, ErrPeerClosed
	}
	var fds []int
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for i := range msgs {
			got, err := unix.ParseUnixRights(&msgs[i])
			if err == nil {
				fds = append(fds, got...)
			}
		}
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("agentproto: spawner message: %w", err)
	}
	return fds, nil
}

// ErrPeerClosed means the other end of a spawner socket is gone.
var ErrPeerClosed = errors.New("agentproto: peer closed")
