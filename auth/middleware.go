package auth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/kiln-dev/kiln/api"
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

// Middleware reads the whole body (a SigV4 signature covers it), verifies the
// signature, and passes the request on with the caller in its context. The
// body is available as Body(r) and again as r.Body.
func Middleware(k *Keyring, limit BodyLimit, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		max, tooLarge := limit(r)
		if r.ContentLength > max {
			api.WriteError(w, tooLarge)
			return
		}
		body, err := readBody(r, max)
		if errors.Is(err, errTooLarge) {
			api.WriteError(w, tooLarge)
			return
		}
		if err != nil {
			api.WriteError(w, api.Errorf(api.InvalidRequestContent, "reading request body: %v", err))
			return
		}
		caller, err := k.Verify(r, body)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		ctx := context.WithValue(WithCaller(r.Context(), caller), bodyKey{}, body)
		r = r.WithContext(ctx)
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

var errTooLarge = errors.New("body too large")

func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength == 0 {
		return nil, nil
	}
	var buf []byte
	if r.ContentLength > 0 {
		buf = make([]byte, 0, r.ContentLength+1)
	}
	b := bytes.NewBuffer(buf)
	n, err := b.ReadFrom(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, errTooLarge
	}
	return b.Bytes(), nil
}
