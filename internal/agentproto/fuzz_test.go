package agentproto

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzRead reads frames from any bytes, as the worker reads what a
// (possibly subverted) agent sends: each frame is what its length said,
// read without going past it, and its header decodes or fails cleanly.
func FuzzRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := NewConnSize(bytes.NewBuffer(stream), 16)
		var again []byte
		for {
			fr, err := c.Read()
			if err != nil {
				break
			}
			var pre [9]byte
			binary.BigEndian.PutUint32(pre[0:4], uint32(1+4+len(fr.Header)+len(fr.Body)))
			pre[4] = byte(fr.Kind)
			binary.BigEndian.PutUint32(pre[5:9], uint32(len(fr.Header)))
			again = append(append(append(again, pre[:]...), fr.Header...), fr.Body...)
			var e Error
			var x Exit
			fr.Decode(&e)
			fr.Decode(&x)
		}
		if !bytes.HasPrefix(stream, again) {
			t.Fatalf("frames read are not the stream's prefix:\n%x\n%x", again, stream)
		}
	})
}
