// Package chunk cuts file contents into fixed-size chunks and encrypts each
// one convergently, as Lambda does for container images: a chunk's key is
// derived from its own plaintext and a scope salt, so equal content within a
// scope encrypts to equal bytes (and is stored once) while no key is shared
// across scopes, and a chunk's ID is the hash of its ciphertext, so any tier
// holding it can be checked without a key.
//
// The package does no I/O of its own: Split reads a reader and hands each
// sealed chunk to a callback.
package chunk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// DefaultSize is the chunk size: 512 KiB, Lambda's. Measured with
// BenchmarkSplit: at 64 KiB the per-chunk cost (one object, one fetch) is
// eight times as many objects for a file; above 1 MiB a 4 KiB read fetches
// (and decrypts) more than it needs.
const DefaultSize = 512 << 10

// ErrCorrupt is returned (wrapped) for a chunk whose bytes do not match its
// ID or do not decrypt under its key.
var ErrCorrupt = errors.New("chunk: corrupt")

// ID names a chunk: the SHA-256 of its ciphertext.
type ID [sha256.Size]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the hex form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("chunk: bad id %q", s)
	}
	copy(id[:], b)
	return id, nil
}

// MarshalText and UnmarshalText make IDs hex in JSON.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	*id = v
	return err
}

// Sum returns the ID of ciphertext.
func Sum(ciphertext []byte) ID { return sha256.Sum256(ciphertext) }

// Ref is what a reader needs to fetch and open one chunk. Refs live only in
// manifests, which are encrypted under their account's key.
type Ref struct {
	ID  ID     `json:"id"`
	Key []byte `json:"key"`
	Len int    `json:"len"` // plaintext length
}

const keyInfo = "kiln chunk key v1"

// Key derives the convergent key of plain within the scope salt.
func Key(salt, plain []byte) []byte {
	h := sha256.Sum256(plain)
	k, err := hkdf.Key(sha256.New, h[:], salt, keyInfo, 32)
	if err != nil { // only for lengths HKDF cannot produce
		panic(err)
	}
	return k
}

// aead returns AES-256-GCM under key. The nonce is fixed (zero): a key is
// derived from exactly one plaintext, so it never encrypts two.
func aead(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// ad is the associated data: the format and the plaintext length. The chunk's
// ID cannot be bound here (it is the hash of the output); the ID is checked
// against the ciphertext before decrypting, and the key against the content.
func ad(n int) []byte {
	b := make([]byte, 0, 24)
	b = append(b, "kiln-chunk-v1"...)
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

var zeroNonce = make([]byte, 12)

// Seal encrypts plain convergently within the scope salt.
func Seal(salt, plain []byte) (Ref, []byte) {
	key := Key(salt, plain)
	g, err := aead(key)
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	ct := g.Seal(nil, zeroNonce, plain, ad(len(plain)))
	return Ref{ID: Sum(ct), Key: key, Len: len(plain)}, ct
}

// Open checks ciphertext against ref and decrypts it into a new buffer. A
// mismatch of either the ID or the GCM tag is ErrCorrupt: such bytes are
// never returned.
func Open(ref Ref, ciphertext []byte) ([]byte, error) {
	if Sum(ciphertext) != ref.ID {
		return nil, fmt.Errorf("%w: %s: ciphertext does not match its id", ErrCorrupt, ref.ID)
	}
	return decrypt(ref, ciphertext, nil)
}

// Decrypt is Open for ciphertext already checked against ref.ID (as
// tier.Tiers checks every blob it reads), decrypting in ciphertext's own
// buffer, which the caller gives up: a new plaintext buffer allocated and
// zeroed cost more than the decryption. The GCM tag is still checked, so
// bytes that do not decrypt under the key are ErrCorrupt (and the buffer
// is then cleared).
func Decrypt(ref Ref, ciphertext []byte) ([]byte, error) {
	return decrypt(ref, ciphertext, ciphertext[:0])
}

func decrypt(ref Ref, ciphertext, dst []byte) ([]byte, error) {
	g, err := aead(ref.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, ref.ID, err)
	}
	plain, err := g.Open(dst, zeroNonce, ciphertext, ad(ref.Len))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, ref.ID, err)
	}
	return plain, nil
}

// Split reads r to its end in chunks of size bytes (the last may be shorter),
// seals each within salt and hands it to put, and returns the refs in order.
// An empty reader has no chunks.
func Split(r io.Reader, size int, salt []byte, put func(Ref, []byte) error) ([]Ref, error) {
	if size <= 0 {
		size = DefaultSize
	}
	buf := make([]byte, size)
	var refs []Ref
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			ref, ct := Seal(salt, buf[:n])
			if perr := put(ref, ct); perr != nil {
				return nil, perr
			}
			refs = append(refs, ref)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return refs, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
