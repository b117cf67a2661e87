// Package agentproto is the framing between a worker and the in-sandbox agent
// over their one inherited socket: small JSON headers with raw payload bodies,
// so that a 6 MB payload is copied, never re-encoded.
package agentproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Kind says what a frame carries.
type Kind uint8

const (
	// Worker to agent.
	KindInvoke   Kind = 1 // Invoke header, event body
	KindShutdown Kind = 2 // no header; stop the runtime and exit

	// Agent to worker.
	KindReady     Kind = 10 // Ready header: the runtime asked for its first event
	KindInitError Kind = 11 // Error header, Lambda error document body
	KindResult    Kind = 12 // Result header, response or error document body
	KindLog       Kind = 13 // no header; a chunk of the runtime's stdout/stderr
	KindExit      Kind = 14 // Exit header: the runtime process ended
)

// Invoke is the header of an invocation.
type Invoke struct {
	RequestID       string `json:"id"`
	DeadlineMs      int64  `json:"deadline"`
	FunctionArn     string `json:"arn"`
	TraceID         string `json:"trace,omitempty"`
	ClientContext   string `json:"cc,omitempty"`
	CognitoIdentity string `json:"ci,omitempty"`
}

// Ready is sent once, when init is done.
type Ready struct {
	InitDurationMs float64 `json:"initMs"`
	// RuntimePid is the runtime's process id as the agent sees it.
	RuntimePid int `json:"pid"`
}

// Result ends an invocation. ErrorType is empty on success.
type Result struct {
	RequestID string `json:"id"`
	ErrorType string `json:"errorType,omitempty"`
}

// Error carries an init failure's type.
type Error struct {
	ErrorType string `json:"errorType"`
}

// Exit reports how the runtime process ended.
type Exit struct {
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
	// LastDelivered is the request id of the last invoke the runtime
	// received; any later one never ran.
	LastDelivered string `json:"lastDelivered,omitempty"`
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
func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{r: bufio.NewReaderSize(rw, 64<<10), w: bufio.NewWriterSize(rw, 64<<10)}
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
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return nil, fmt.Errorf("agentproto: read frame: %w", err)
	}
	hl := binary.BigEndian.Uint32(buf[1:5])
	if int(hl) > len(buf)-5 {
		return nil, fmt.Errorf("agentproto: header length %d beyond frame", hl)
	}
	return &Frame{Kind: Kind(buf[0]), Header: buf[5 : 5+hl], Body: buf[5+hl:]}, nil
}
