package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
)

type bodyKey struct{}

// Body returns the request body that Middleware read and verified.
func Body(r *http.Request) []byte {
	b, _ := r.Context().Value(bodyKey{}).([]byte)
	return b
}

// BodyLimit says how many body bytes a request may carry, and the error to
// answer with beyond that.
type BodyLimit func(r *http.Request) (limit int64, tooLarge *api.Error)

// BodyIdle is how long a request body may send nothing before its
// connection is dropped; BodyTotal bounds the whole body's reading.
const (
	BodyIdle  = 20 * time.Second
	BodyTotal = 5 * time.Minute
)

// Middleware verifies a request's SigV4 signature, reads its body (a
// signature covers it), and passes the request on with the caller in its
// context. The body is available as Body(r) and again as r.Body; only the
// x-amz-* headers the caller signed remain.
//
// Nothing is buffered for a caller whose key, scope or date is wrong. When
// the client signed X-Amz-Content-Sha256, the whole signature is checked
// before the body is read, and the body is then checked against the hash;
// otherwise (the AWS SDKs send that header to S3 only) the body is read
// first, into buffers filled as bytes arrive and never beyond the limit,
// under idle and total read deadlines; what all requests hold before their
// signatures are checked is bounded by Keyring.MaxUnverified.
func Middleware(k *Keyring, limit BodyLimit, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		max, tooLarge := limit(r)
		if r.ContentLength > max {
			api.WriteError(w, tooLarge)
			return
		}
		sig, err := k.head(r)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		var caller Caller
		claimed, signedHash := sig.signedPayloadHash(r)
		if signedHash && (r.ContentLength >= 0 || !sig.signs("content-length")) {
			if caller, err = sig.verify(r, claimed); err != nil {
				api.WriteError(w, err)
				return
			}
		}
		var held *int64
		if caller.Account == "" {
			// Bytes held before the signature can be checked count against
			// Keyring.MaxUnverified until it is.
			held = new(int64)
			defer func() { k.unverified.Add(-*held) }()
		}
		body, sum, err := readBody(w, r, max, k.holder(held))
		switch {
		case errors.Is(err, errTooLarge):
			api.WriteError(w, tooLarge)
			return
		case errors.Is(err, errUnverifiedFull):
			api.WriteError(w, api.Errorf(api.TooManyRequests, "Too many request bodies are being received before their signatures can be checked. Retry the request."))
			return
		case err != nil:
			api.WriteError(w, api.Errorf(api.InvalidRequestContent, "reading request body: %v", err))
			return
		case signedHash && sum != claimed:
			api.WriteError(w, errPayloadHash)
			return
		case caller.Account == "":
			r.ContentLength = int64(len(body))
			if caller, err = sig.verify(r, sum); err != nil {
				api.WriteError(w, err)
				return
			}
		}
		if held != nil { // verified: no longer held for an unknown caller
			k.unverified.Add(-*held)
			*held = 0
		}
		sig.dropUnsigned(r)
		ctx := context.WithValue(WithCaller(r.Context(), caller), bodyKey{}, body)
		r = r.WithContext(ctx)
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

var (
	errTooLarge       = errors.New("body too large")
	errUnverifiedFull = errors.New("too many unverified body bytes held")
)

// defaultMaxUnverified is Keyring.MaxUnverified's default.
const defaultMaxUnverified = 512 << 20

// holder returns what readBody calls before it keeps n more bytes: with
// held set, it counts them against MaxUnverified (and in *held); nil
// (no accounting) without.
func (k *Keyring) holder(held *int64) func(n int64) bool {
	if held == nil {
		return nil
	}
	limit := k.MaxUnverified
	if limit <= 0 {
		limit = defaultMaxUnverified
	}
	return func(n int64) bool {
		if k.unverified.Add(n) > limit {
			k.unverified.Add(-n)
			return false
		}
		*held += n
		return true
	}
}

// readChunk is how much of a body is read into one buffer.
const readChunk = 64 << 10

// readBody reads r's body, at most limit bytes, and its hex SHA-256. w
// (for read deadlines) and hold may be nil. It
// reads into buffers of readChunk as bytes arrive, so that what a request
// holds is what its client sent, never what Content-Length announces (nor
// twice that, as a doubling buffer would).
func readBody(w http.ResponseWriter, r *http.Request, limit int64, hold func(n int64) bool) ([]byte, string, error) {
	h := sha256.New()
	if r.ContentLength == 0 {
		return nil, hex.EncodeToString(h.Sum(nil)), nil
	}
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(BodyTotal)
	// The server's own deadlines take over again for the next request; a
	// deadline left behind would end the connection during a long invoke.
	defer rc.SetReadDeadline(time.Time{})
	var chunks [][]byte
	var total int64
	for {
		next := time.Now().Add(BodyIdle)
		if next.After(deadline) {
			next = deadline
		}
		rc.SetReadDeadline(next)
		size := int64(readChunk)
		if r.ContentLength > 0 {
			size = min(size, r.ContentLength-total+1) // +1: a body longer than announced ends in an error
		}
		size = max(size, 1)
		if hold != nil && !hold(size) {
			return nil, "", errUnverifiedFull
		}
		buf := make([]byte, size)
		n, err := io.ReadFull(r.Body, buf)
		chunks, total = append(chunks, buf[:n]), total+int64(n)
		h.Write(buf[:n])
		if total > limit {
			return nil, "", errTooLarge
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, "", errors.New("the request body was not sent in time")
		}
		if err != nil {
			return nil, "", err
		}
	}
	body := chunks[0]
	if len(chunks) > 1 {
		body = bytes.Join(chunks, nil)
	}
	return body, hex.EncodeToString(h.Sum(nil)), nil
}
