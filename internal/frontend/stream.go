package frontend

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
)

// streamWriteTimeout bounds one write to a caller of a streamed response:
// a caller that stops reading must not hold the runtime's connection (and
// the environment) for longer.
const streamWriteTimeout = time.Minute

// httpStream passes a streamed response to an HTTP caller as it arrives:
// head writes the response's head at Begin, each write is flushed, and
// nothing is written once the handler has ended (a runtime's connection
// can outlive its invoke's timeout).
type httpStream struct {
	w    http.ResponseWriter
	head func(contentType string)
	// write, when set, writes p (framing it, flushing what it wrote)
	// instead of w.Write and a flush.
	write func(p []byte) error

	mu    sync.Mutex
	began bool
	ended bool
}

func (s *httpStream) Begin(contentType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.began || s.ended {
		return
	}
	s.began = true
	s.head(contentType)
}

func (s *httpStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || !s.began {
		return 0, net.ErrClosed
	}
	rc := http.NewResponseController(s.w)
	rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	var err error
	if s.write != nil {
		err = s.write(p)
	} else if _, err = s.w.Write(p); err == nil {
		err = rc.Flush()
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// end stops writes from the stream's producer and says whether the head
// went out. The connection's write deadline is lifted: a kept-alive
// connection's next response may take longer.
func (s *httpStream) end() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	http.NewResponseController(s.w).SetWriteDeadline(time.Time{})
	return s.began
}

// writeLocked writes as the handler, after end.
func (s *httpStream) writeLocked(p []byte) error {
	if s.write != nil {
		return s.write(p)
	}
	_, err := s.w.Write(p)
	return err
}

// invokeWithResponseStream serves InvokeWithResponseStream: the response
// is an application/vnd.amazon.eventstream of PayloadChunk events as the
// function's bytes arrive and one InvokeComplete (ErrorCode, ErrorDetails,
// LogResult) at the end. A runtime that answers buffered (aws-lambda-go,
// Python) gives one chunk.
func (f *Frontend) invokeWithResponseStream(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, payload, clientContext, fail, err := f.invokeRequest(w, r)
	if err != nil {
		return
	}
	if _, ok := invocationType(w, r, t, fail, false); !ok {
		return
	}
	requestID := api.NewUUID()
	enc := eventstream.NewEncoder()
	event := func(typ, contentType string, payload []byte) error {
		var h eventstream.Headers
		h.Set(":event-type", eventstream.StringValue(typ))
		h.Set(":content-type", eventstream.StringValue(contentType))
		h.Set(":message-type", eventstream.StringValue("event"))
		return enc.Encode(w, eventstream.Message{Headers: h, Payload: payload})
	}
	st := &httpStream{w: w,
		head: func(string) {
			h := w.Header()
			h.Set("Content-Type", "application/vnd.amazon.eventstream")
			h.Set("X-Amzn-Requestid", requestID)
			h.Set("X-Amz-Executed-Version", t.Config.Version)
			w.WriteHeader(http.StatusOK)
		},
		write: func(p []byte) error {
			if err := event("PayloadChunk", "application/octet-stream", p); err != nil {
				return err
			}
			return http.NewResponseController(w).Flush()
		},
	}
	res, err := f.invokeTarget(ctx, t, &invoke.Invocation{RequestID: requestID, Payload: payload, ClientContext: clientContext,
		TraceID: r.Header.Get("X-Amzn-Trace-Id"), Stream: st})
	began := st.end()
	if err != nil && !began {
		fail(err)
		return
	}
	if !began {
		st.began = true
		st.head("")
	}
	var complete struct {
		ErrorCode    string `json:"ErrorCode,omitempty"`
		ErrorDetails string `json:"ErrorDetails,omitempty"`
		LogResult    string `json:"LogResult,omitempty"`
	}
	switch {
	case err != nil: // the head went: the error ends the stream
		complete.ErrorCode, complete.ErrorDetails = api.Service, err.Error()
	case res.ErrorType != "":
		complete.ErrorCode, complete.ErrorDetails = res.ErrorType, errorMessage(res.Payload)
	case !res.Streamed && len(res.Payload) > 0:
		if st.writeLocked(res.Payload) != nil {
			return
		}
	}
	if err == nil && r.Header.Get("X-Amz-Log-Type") == "Tail" {
		complete.LogResult = base64.StdEncoding.EncodeToString(res.LogTail)
	}
	doc, _ := json.Marshal(complete)
	event("InvokeComplete", "application/json", doc)
}

// errorMessage is the errorMessage of a Lambda error document, or the
// document itself when it has none.
func errorMessage(doc []byte) string {
	var d struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if json.Unmarshal(doc, &d) == nil && d.ErrorMessage != "" {
		return d.ErrorMessage
	}
	return string(doc)
}
