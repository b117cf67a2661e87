package cluster

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/replica"
	"github.com/kiln-dev/kiln/internal/worker"
)

// The worker's HTTP API between roles, over TLS that admits only
// frontends and assignment members holding a certificate of the cluster's
// CA. Every call also carries the cluster token as "Authorization: Bearer
// TOKEN" (compared in constant time). Environments are named by the ids
// assignment gives them.
//
//	POST   /kiln/envs/{id}          EnvSpec JSON → {"init": ns} | 422 InitError | 5xx
//	POST   /kiln/envs/{id}/invoke   payload; X-Kiln-* headers → payload; X-Kiln-* headers
//	                                with X-Kiln-Stream: true, the response streams: the body is the
//	                                function's bytes as they arrive (X-Kiln-Streamed: true and
//	                                X-Kiln-Content-Type in the head) or the buffered payload, and
//	                                the X-Kiln-* result headers come as trailers
//	DELETE /kiln/envs/{id}

// workerServer serves a worker.Worker to the other roles.
type workerServer struct {
	W     *worker.Worker
	Token string

	mu   sync.Mutex
	envs map[string]string // assignment's id → the worker's
}

func (s *workerServer) Handler() http.Handler {
	s.envs = map[string]string{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /kiln/envs/{id}", s.create)
	mux.HandleFunc("POST /kiln/envs/{id}/invoke", s.invoke)
	mux.HandleFunc("DELETE /kiln/envs/{id}", s.destroy)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) != 1 {
			http.Error(w, "bad cluster token", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Count is the number of environments.
func (s *workerServer) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.envs)
}

// createReply answers a create: the environment's init and its phases.
type createReply struct {
	Init   time.Duration    `json:"init"`
	Phases invoke.ColdStart `json:"phases"`
}

func (s *workerServer) create(w http.ResponseWriter, r *http.Request) {
	var spec invoke.EnvSpec
	if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	info, err := s.W.Create(r.Context(), spec)
	var ie *invoke.InitError
	switch {
	case errors.As(err, &ie):
		w.WriteHeader(http.StatusUnprocessableEntity)
		json.NewEncoder(w).Encode(ie)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.mu.Lock()
	s.envs[r.PathValue("id")] = info.ID
	s.mu.Unlock()
	json.NewEncoder(w).Encode(createReply{Init: info.InitDuration, Phases: info.Phases})
}

func (s *workerServer) local(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.envs[id]
	return l, ok
}

func (s *workerServer) invoke(w http.ResponseWriter, r *http.Request) {
	id, ok := s.local(r.PathValue("id"))
	if !ok {
		http.Error(w, invoke.ErrNoEnv.Error(), http.StatusNotFound)
		return
	}
	payload, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cc, _ := base64.StdEncoding.DecodeString(r.Header.Get("X-Kiln-Client-Context"))
	inv := &invoke.Invocation{
		RequestID: r.Header.Get("X-Kiln-Request-Id"), FunctionArn: r.Header.Get("X-Kiln-Function-Arn"),
		TraceID: r.Header.Get("X-Kiln-Trace-Id"), ClientContext: string(cc), Payload: payload,
		Background: r.Header.Get("X-Kiln-Background") == "true"}
	var stream *wireStream
	if r.Header.Get("X-Kiln-Stream") == "true" {
		stream = &wireStream{w: w}
		inv.Stream = stream
		w.Header().Set("Trailer", strings.Join(resultHeaders, ", "))
	}
	res, err := s.W.Invoke(context.WithoutCancel(r.Context()), id, inv)
	if stream != nil && stream.end() && err != nil {
		// The head has gone: the error can only end the stream.
		w.Header().Set("X-Kiln-Error-Type", "Runtime.ExitError")
		return
	}
	if errors.Is(err, invoke.ErrNoEnv) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if !res.Reusable {
		s.mu.Lock()
		delete(s.envs, r.PathValue("id"))
		s.mu.Unlock()
	}
	h := w.Header()
	h.Set("X-Kiln-Error-Type", res.ErrorType)
	h.Set("X-Kiln-Duration", strconv.FormatInt(int64(res.Duration), 10))
	h.Set("X-Kiln-Reusable", strconv.FormatBool(res.Reusable))
	h.Set("X-Kiln-Log-Tail", base64.StdEncoding.EncodeToString(res.LogTail))
	if stream != nil {
		if !res.Streamed {
			w.Write(res.Payload) // a buffered answer: the head goes now, the result in trailers
			return
		}
		h.Set("X-Kiln-Error-Body", base64.StdEncoding.EncodeToString(res.Payload))
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(res.Payload)))
	w.Write(res.Payload)
}

// resultHeaders are the invoke's result, sent as trailers when it streams.
var resultHeaders = []string{"X-Kiln-Error-Type", "X-Kiln-Duration", "X-Kiln-Reusable", "X-Kiln-Log-Tail", "X-Kiln-Error-Body"}

// wireStream passes a streamed response on to the frontend: each write is
// flushed, so the bytes cross as the function sends them. Writes after the
// handler ended (the runtime's connection outlived a timeout) are dropped.
type wireStream struct {
	w     http.ResponseWriter
	mu    sync.Mutex
	began bool
	ended bool
}

func (s *wireStream) Begin(contentType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.began = true
	s.w.Header().Set("X-Kiln-Streamed", "true")
	s.w.Header().Set("X-Kiln-Content-Type", contentType)
	s.w.WriteHeader(http.StatusOK)
	http.NewResponseController(s.w).Flush()
}

func (s *wireStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return 0, net.ErrClosed
	}
	n, err := s.w.Write(p)
	if err == nil {
		err = http.NewResponseController(s.w).Flush()
	}
	return n, err
}

// end stops further writes and says whether the head had gone.
func (s *wireStream) end() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	return s.began
}

func (s *workerServer) destroy(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	id, ok := s.envs[r.PathValue("id")]
	delete(s.envs, r.PathValue("id"))
	s.mu.Unlock()
	if ok {
		s.W.Destroy(r.Context(), id)
	}
	w.WriteHeader(http.StatusNoContent)
}

// workerClient calls workers' HTTP APIs: replica.Workers for assignment,
// replica.Invoker for frontends.
type workerClient struct {
	Token string
	HTTP  *http.Client
}

func (c *workerClient) do(ctx context.Context, method, url string, body []byte, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return c.HTTP.Do(req)
}

// unreachable reports an error that happened before the request reached
// the worker (so the invoke never started).
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (c *workerClient) Create(ctx context.Context, w replica.WorkerRef, envID string, spec invoke.EnvSpec) (*invoke.EnvInfo, error) {
	b, _ := json.Marshal(spec)
	resp, err := c.do(ctx, http.MethodPost, w.Addr+"/kiln/envs/"+envID, b, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		var out createReply
		json.Unmarshal(body, &out)
		return &invoke.EnvInfo{ID: envID, InitDuration: out.Init, Phases: out.Phases}, nil
	case http.StatusUnprocessableEntity:
		var ie invoke.InitError
		if err := json.Unmarshal(body, &ie); err != nil {
			return nil, err
		}
		return nil, &ie
	}
	return nil, fmt.Errorf("worker %s: %s: %s", w.ID, resp.Status, bytes.TrimSpace(body))
}

func (c *workerClient) Destroy(ctx context.Context, w replica.WorkerRef, envID string) error {
	resp, err := c.do(ctx, http.MethodDelete, w.Addr+"/kiln/envs/"+envID, nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (c *workerClient) Invoke(ctx context.Context, addr, envID string, inv *invoke.Invocation) (*invoke.Result, error) {
	hdr := map[string]string{
		"X-Kiln-Request-Id": inv.RequestID, "X-Kiln-Function-Arn": inv.FunctionArn, "X-Kiln-Trace-Id": inv.TraceID,
		"X-Kiln-Client-Context": base64.StdEncoding.EncodeToString([]byte(inv.ClientContext)),
		"X-Kiln-Background":     strconv.FormatBool(inv.Background),
	}
	if inv.Stream != nil {
		hdr["X-Kiln-Stream"] = "true"
	}
	resp, err := c.do(ctx, http.MethodPost, addr+"/kiln/envs/"+envID+"/invoke", inv.Payload, hdr)
	if err != nil {
		if unreachable(err) {
			// The invoke never started: the frontend may try another env.
			return nil, fmt.Errorf("%w: worker at %s unreachable: %v", invoke.ErrNoEnv, addr, err)
		}
		return nil, workerFailed(addr, inv, err)
	}
	defer resp.Body.Close()
	if inv.Stream != nil && resp.StatusCode == http.StatusOK && resp.Header.Get("X-Kiln-Streamed") == "true" {
		return readStream(resp, addr, inv)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, workerFailed(addr, inv, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, invoke.ErrNoEnv
	default:
		return nil, fmt.Errorf("worker at %s: %s: %s", addr, resp.Status, bytes.TrimSpace(body))
	}
	h := resp.Header
	if inv.Stream != nil {
		h = resp.Trailer
	}
	return result(h, body), nil
}

// result reads an invoke's result from the worker's X-Kiln-* headers (or
// trailers).
func result(h http.Header, payload []byte) *invoke.Result {
	d, _ := strconv.ParseInt(h.Get("X-Kiln-Duration"), 10, 64)
	tail, _ := base64.StdEncoding.DecodeString(h.Get("X-Kiln-Log-Tail"))
	return &invoke.Result{Payload: payload, ErrorType: h.Get("X-Kiln-Error-Type"), LogTail: tail,
		Duration: time.Duration(d), Reusable: h.Get("X-Kiln-Reusable") == "true"}
}

// readStream passes a streamed response on to inv.Stream as its bytes
// arrive from the worker, then reads the result from the trailers.
func readStream(resp *http.Response, addr string, inv *invoke.Invocation) (*invoke.Result, error) {
	inv.Stream.Begin(resp.Header.Get("X-Kiln-Content-Type"))
	buf := make([]byte, 32<<10)
	writing := true
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 && writing {
			if _, werr := inv.Stream.Write(buf[:n]); werr != nil {
				writing = false // the caller is gone; the function runs on
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The head has gone: the worker's failure can only end the stream.
			doc, _ := json.Marshal(map[string]string{"errorType": "Runtime.ExitError", "errorMessage": workerFailed(addr, inv, err).Error()})
			return &invoke.Result{Streamed: true, ErrorType: "Runtime.ExitError", Payload: doc}, nil
		}
	}
	body, _ := base64.StdEncoding.DecodeString(resp.Trailer.Get("X-Kiln-Error-Body"))
	res := result(resp.Trailer, body)
	res.Streamed = true
	return res, nil
}

// workerFailed is what the caller sees when a worker dies mid-invoke.
func workerFailed(addr string, inv *invoke.Invocation, err error) error {
	return &api.Error{Status: http.StatusBadGateway, Type: api.Service, Message: fmt.Sprintf(
		"The worker running this invoke (%s) failed before the function returned (request %s): %v; the invoke may or may not have run",
		addr, inv.RequestID, err)}
}
