// Package agentproto is what a worker and the in-sandbox agent say over their
// one inherited socket: first the agent's handover of the Runtime API listener
// and the log pipe (descriptors passed with SCM_RIGHTS), then small frames
// with JSON headers (shutdown, init failure, the runtime's exit).
package agentproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Kind says what a frame carries.
type Kind uint8

const (
	// Worker to agent.
	KindShutdown Kind = 2 // optional Shutdown header; stop the runtime and exit

	// Agent to worker.
	KindInitError Kind = 11 // Error header, Lambda error document body: the runtime could not start
	KindStarted   Kind = 12 // Started header: the runtime process was started
	KindExit      Kind = 14 // Exit header: the runtime process ended
)

// Shutdown is the (optional) header of KindShutdown.
type Shutdown struct {
	// Reason is what extensions get as shutdownReason: "spindown" (the
	// default), "timeout" or "failure".
	Reason string `json:"reason,omitempty"`
}

// Error carries an init failure's type.
type Error struct {
	ErrorType string `json:"errorType"`
}

// Started tells when the agent began starting the function's processes
// and when the runtime's exec was done, on the host's CLOCK_MONOTONIC (see
// Monotonic), so that the worker can tell the runtime's start from its
// init in a cold start.
type Started struct {
	Begun int64 `json:"begun"` // ns
	Exec  int64 `json:"exec"`  // ns
}

// Monotonic is CLOCK_MONOTONIC in ns: one clock for every process of the
// host (the sandbox has no time namespace), unlike Go's monotonic readings.
func Monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Exit reports how the runtime process ended.
type Exit struct {
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
}

// MaxFrame bounds a frame: the 6 MB payload limit plus headroom, so a
// hostile peer cannot make the other side allocate without limit.
const MaxFrame = 8 << 20

// ErrFrameTooLarge is returned for frames over MaxFrame.
var ErrFrameTooLarge = errors.New("agentproto: frame too large")

// Conn reads and writes frames. Reads are for one goroutine; writes may come
// from several.
type Conn struct {
	r  *bufio.Reader
	wm sync.Mutex
	w  *bufio.Writer
}

// NewConn wraps a stream.
func NewConn(rw io.ReadWriter) *Conn { return NewConnSize(rw, 64<<10) }

// NewConnSize wraps a stream with buffers of size bytes (frames larger than
// the buffers pass through).
func NewConnSize(rw io.ReadWriter, size int) *Conn {
	return &Conn{r: bufio.NewReaderSize(rw, size), w: bufio.NewWriterSize(rw, size)}
}

// Write sends one frame; header may be nil.
func (c *Conn) Write(kind Kind, header any, body []byte) error {
	var hdr []byte
	if header != nil {
		var err error
		if hdr, err = json.Marshal(header); err != nil {
			return fmt.Errorf("agentproto: encode header: %w", err)
		}
	}
	var pre [9]byte
	binary.BigEndian.PutUint32(pre[0:4], uint32(1+4+len(hdr)+len(body)))
	pre[4] = byte(kind)
	binary.BigEndian.PutUint32(pre[5:9], uint32(len(hdr)))
	c.wm.Lock()
	defer c.wm.Unlock()
	c.w.Write(pre[:])
	c.w.Write(hdr)
	c.w.Write(body)
	return c.w.Flush()
}

// Frame is one received frame.
type Frame struct {
	Kind   Kind
	Header []byte
	Body   []byte
}

// Decode unmarshals the frame's header into v.
func (f *Frame) Decode(v any) error {
	if err := json.Unmarshal(f.Header, v); err != nil {
		return fmt.Errorf("agentproto: decode %d header: %w", f.Kind, err)
	}
	return nil
}

// Read receives the next frame.
func (c *Conn) Read() (*Frame, error) {
	var pre [9]byte
	if _, err := io.ReadFull(c.r, pre[:4]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(pre[0:4])
	if n > MaxFrame {
		return nil, ErrFrameTooLarge
	}
	if n < 5 {
		return nil, fmt.Errorf("agentproto: short frame (%d bytes)", n)
	}
	// Grown as bytes arrive, so a peer that claims 8 MB and sends nothing
	// costs nothing.
	buf, err := io.ReadAll(io.LimitReader(c.r, int64(n)))
	if err == nil && len(buf) < int(n) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, fmt.Errorf("agentproto: read frame: %w", err)
	}
	hl := binary.BigEndian.Uint32(buf[1:5])
	if int(hl) > len(buf)-5 {
		return nil, fmt.Errorf("agentproto: header length %d beyond frame", hl)
	}
	return &Frame{Kind: Kind(buf[0]), Header: buf[5 : 5+hl], Body: buf[5+hl:]}, nil
}

// Handover is the agent's first message: sent with two descriptors, the
// Runtime API's listening socket and the read end of the runtime's log pipe,
// both opened inside the sandbox, and a third when KilnAPI is set: the
// listening socket where the function reaches Kiln's API, which the worker
// serves (the sandbox's network namespace reaches nothing else of Kiln).
type Handover struct {
	RuntimeAPI string `json:"runtimeApi"`
	KilnAPI    string `json:"kilnApi,omitempty"`
	// Conns is set when the agent keeps the listener itself (it serves the
	// Extensions API there) and relays the Runtime API: the first descriptor
	// is then a unix socket on which each Runtime API connection arrives as
	// one passed descriptor (see Listener).
	Conns bool `json:"conns,omitempty"`
}

// SendHandover sends h with the listener and log pipe descriptors (and
// Kiln's API listener, when h.KilnAPI is set) over the unix socket fd.
func SendHandover(fd int, h Handover, listener, logs int, kilnAPI ...int) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := unix.Sendmsg(fd, b, unix.UnixRights(append([]int{listener, logs}, kilnAPI...)...), nil, 0); err != nil {
		return fmt.Errorf("agentproto: send handover: %w", err)
	}
	return nil
}

// ErrNoHandover means the agent ended before handing over its descriptors.
var ErrNoHandover = errors.New("agentproto: agent sent no handover")

// Received is a handover as the worker receives it.
type Received struct {
	Handover
	Listener, Logs *os.File
	APIListener    *os.File // nil unless Handover.KilnAPI is set
}

// ReceiveHandover reads the agent's handover from the unix socket fd: the
// message and its descriptors, as files.
func ReceiveHandover(fd int) (Received, error) {
	var h Received
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return h, fmt.Errorf("agentproto: receive handover: %w", err)
	}
	if n == 0 {
		return h, ErrNoHandover
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return h, fmt.Errorf("agentproto: handover without descriptors")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err == nil {
		err = json.Unmarshal(buf[:n], &h.Handover)
	}
	if want := 2 + btoi(h.Handover.KilnAPI != ""); err == nil && len(fds) != want {
		err = fmt.Errorf("wants %d descriptors, got %d", want, len(fds))
	}
	if err != nil {
		for _, f := range fds {
			unix.Close(f)
		}
		return h, fmt.Errorf("agentproto: handover: %w", err)
	}
	h.Listener, h.Logs = os.NewFile(uintptr(fds[0]), "runtime-api"), os.NewFile(uintptr(fds[1]), "runtime-logs")
	if len(fds) == 3 {
		h.APIListener = os.NewFile(uintptr(fds[2]), "kiln-api")
	}
	return h, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
