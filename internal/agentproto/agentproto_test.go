package agentproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	c := NewConnSize(&buf, 16) // frames larger than the buffers pass through
	big := bytes.Repeat([]byte("x"), 1000)
	if err := c.Write(KindExit, Exit{Code: 3}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(KindShutdown, Shutdown{Reason: "timeout"}, big); err != nil {
		t.Fatal(err)
	}
	f, err := c.Read()
	var e Exit
	if err != nil || f.Kind != KindExit || f.Decode(&e) != nil || e.Code != 3 {
		t.Fatalf("exit frame: %+v %v %+v", f, err, e)
	}
	f, err = c.Read()
	var s Shutdown
	if err != nil || f.Kind != KindShutdown || f.Decode(&s) != nil || s.Reason != "timeout" || !bytes.Equal(f.Body, big) {
		t.Fatalf("shutdown frame: %v %+v", err, s)
	}
	if _, err := c.Read(); err != io.EOF {
		t.Fatalf("after the frames: %v", err)
	}
}

// TestSpawnMessages passes a message with descriptors over a SOCK_SEQPACKET pair.
func TestSpawnMessages(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	r, w, _ := os.Pipe()
	defer r.Close()
	req := SpawnRequest{Seq: 7, Args: []string{"kiln-agent"}, UIDBase: 1 << 29, IDCount: 65536}
	if err := SendMsg(pair[1], req, int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var got SpawnRequest
	fds, err := RecvMsg(pair[0], make([]byte, 4096), &got)
	if err != nil || len(fds) != 1 || got.Seq != 7 || got.UIDBase != 1<<29 {
		t.Fatalf("got %+v %v %v", got, fds, err)
	}
	passed := os.NewFile(uintptr(fds[0]), "passed")
	passed.Write([]byte("hello"))
	passed.Close()
	b, _ := io.ReadAll(r)
	if string(b) != "hello" {
		t.Fatalf("through the passed descriptor: %q", b)
	}
	unix.Close(pair[1])
	if _, err := RecvMsg(pair[0], make([]byte, 4096), &got); err != ErrPeerClosed {
		t.Fatalf("after close: %v", err)
	}
}

// TestConnListener: connections passed one per message come out of Accept.
func TestConnListener(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[1])
	f := os.NewFile(uintptr(pair[0]), "conns")
	ln, err := Listener(Handover{RuntimeAPI: "127.0.0.1:9001", Conns: true}, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ln.Addr().String() != "127.0.0.1:9001" {
		t.Errorf("addr %s", ln.Addr())
	}
	c, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := SendConn(pair[1], c[1]); err != nil {
		t.Fatal(err)
	}
	unix.Close(c[1])
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(c[0], []byte("ping"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(conn, b); err != nil || string(b) != "ping" {
		t.Fatalf("read %q %v", b, err)
	}
	conn.Close()
	unix.Close(c[0])
	done := make(chan error, 1)
	go func() { _, err := ln.Accept(); done <- err }()
	ln.Close()
	if err := <-done; err != net.ErrClosed {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// TestClaimedLengthCostsNothing: a frame that claims the maximum and then
// ends is an error, and reading it does not allocate what it claimed.
func TestClaimedLengthCostsNothing(t *testing.T) {
	var ms runtime.MemStats
	var before uint64
	for i := range 2 { // the first round warms what the runtime allocates once
		stream := append(binary.BigEndian.AppendUint32(nil, MaxFrame), byte(KindExit), 0, 0, 0, 0)
		c := NewConnSize(&rw{Reader: bytes.NewReader(stream)}, 16)
		runtime.ReadMemStats(&ms)
		before = ms.TotalAlloc
		if _, err := c.Read(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("truncated frame: %v", err)
		}
		runtime.ReadMemStats(&ms)
		if got := ms.TotalAlloc - before; i == 1 && got > 1<<20 {
			t.Fatalf("reading a frame that claims %d bytes allocated %d", MaxFrame, got)
		}
	}
}

type rw struct {
	io.Reader
	io.Writer
}
