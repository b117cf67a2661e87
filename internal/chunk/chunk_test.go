package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestConvergence(t *testing.T) {
	a, b := []byte("account-a salt"), []byte("account-b salt")
	plain := bytes.Repeat([]byte("base layer "), 1000)
	r1, c1 := Seal(a, plain)
	r2, c2 := Seal(a, append([]byte(nil), plain...))
	if r1.ID != r2.ID || !bytes.Equal(c1, c2) {
		t.Fatal("equal content in one scope must give equal chunks")
	}
	r3, _ := Seal(b, plain)
	if r3.ID == r1.ID || bytes.Equal(r3.Key, r1.Key) {
		t.Fatal("another scope must share neither key nor id")
	}
	if bytes.Contains(c1, []byte("base layer")) {
		t.Fatal("ciphertext shows plaintext")
	}
	got, err := Open(r1, c1)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open: %v", err)
	}
}

func TestOpenRefusesCorruption(t *testing.T) {
	salt := []byte("s")
	ref, ct := Seal(salt, []byte("hello, world"))
	other, _ := Seal(salt, []byte("other"))
	flip := func(b []byte, i int) []byte { c := append([]byte(nil), b...); c[i] ^= 1; return c }
	for _, tc := range []struct {
		name string
		ref  Ref
		ct   []byte
	}{
		{"flipped byte", ref, flip(ct, 3)},
		{"flipped tag", ref, flip(ct, len(ct)-1)},
		{"truncated", ref, ct[:len(ct)-1]},
		{"other chunk", ref, mustSeal(salt, "other")},
		{"wrong key", Ref{ID: ref.ID, Key: other.Key, Len: ref.Len}, ct},
		{"wrong length", Ref{ID: ref.ID, Key: ref.Key, Len: ref.Len + 1}, ct},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Open(tc.ref, tc.ct)
			if !errors.Is(err, ErrCorrupt) || got != nil {
				t.Fatalf("Open = %q, %v; want ErrCorrupt", got, err)
			}
		})
	}
}

func mustSeal(salt []byte, s string) []byte { _, ct := Seal(salt, []byte(s)); return ct }

func TestSplit(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 16, 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(i)
			}
			store := map[ID][]byte{}
			refs, err := Split(bytes.NewReader(data), 8, []byte("s"), func(r Ref, ct []byte) error {
				store[r.ID] = ct
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := (n + 7) / 8; len(refs) != want {
				t.Fatalf("%d chunks, want %d", len(refs), want)
			}
			var got []byte
			for _, r := range refs {
				p, err := Open(r, store[r.ID])
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, p...)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("reassembled content differs")
			}
		})
	}
}

func TestSplitStopsOnPutError(t *testing.T) {
	boom := errors.New("store full")
	_, err := Split(bytes.NewReader(make([]byte, 20)), 8, nil, func(Ref, []byte) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
}

// BenchmarkSplit measures sealing throughput per chunk size (the per-chunk
// overhead that pushes the size up; the read amplification that pushes it down
// is a property of the access pattern, not measured here).
func BenchmarkSplit(b *testing.B) {
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, size := range []int{64 << 10, 512 << 10, 1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Split(bytes.NewReader(data), size, []byte("s"), func(Ref, []byte) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDecryptInPlace: Decrypt answers in the ciphertext's own buffer, and
// still refuses bytes whose GCM tag does not check under the key.
func TestDecryptInPlace(t *testing.T) {
	plain := []byte("decrypted where it lies")
	ref, ct := Seal([]byte("s"), plain)
	other, _ := Seal([]byte("s"), []byte("other"))
	bad := bytes.Clone(ct)
	got, err := Decrypt(ref, ct)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}
	if &got[0] != &ct[0] {
		t.Fatal("Decrypt allocated a new buffer")
	}
	if got, err := Decrypt(Ref{ID: ref.ID, Key: other.Key, Len: ref.Len}, bad); !errors.Is(err, ErrCorrupt) || got != nil {
		t.Fatalf("Decrypt under another key = %q, %v; want ErrCorrupt", got, err)
	}
}
