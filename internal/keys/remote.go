package keys

import (
	"container/list"
	"context"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// In a cluster the key service runs where the master secret is, on the
// control planes, and answers the workers' unwraps over NATS the way KMS
// answers Decrypt: a worker never holds the master secret, only the data
// keys of the manifests it opens.
//
// A request is signed with the asker's certificate (its name and role are
// what the service checks and logs) and carries a fresh X25519 public key:
// the data key comes back sealed to it, so a reply read off the bus by
// another role is of no use, and a replayed request gets an answer only its
// first sender can open.

// Subject is the NATS subject the key service answers unwraps on; control
// planes answer it as one queue group.
const Subject = "kiln.keys.unwrap"

// ErrNotServed is returned by the Client's DataKey and Salt: over the
// network the service only unwraps; sealing and chunking (imports) run
// where the master secret is.
var ErrNotServed = errors.New("keys: only unwraps are served over the network")

// Signer proves who asks (pki.Config); Verifier checks it.
type (
	Signer interface {
		Sign(msg []byte) (cert, sig []byte, err error)
	}
	Verifier interface {
		Verify(cert, msg, sig []byte) (name, role string, err error)
	}
)

type unwrapRequest struct {
	Body []byte `json:"body"` // an unwrapBody, as signed
	Cert []byte `json:"cert"`
	Sig  []byte `json:"sig"`
}

type unwrapBody struct {
	Account string `json:"account"`
	Wrapped []byte `json:"wrapped"`
	Pub     []byte `json:"pub"` // X25519: the reply is sealed to it
}

type unwrapReply struct {
	Key    []byte `json:"key,omitempty"` // the service's X25519 public key, then the sealed data key
	Error  string `json:"error,omitempty"`
	Denied bool   `json:"denied,omitempty"` // the error is ErrDenied
}

// replyKey is the key a reply is sealed under, from the X25519 secret
// both ends share.
func replyKey(shared []byte) []byte {
	k, err := hkdf.Key(sha256.New, shared, nil, "kiln keys unwrap reply", 32)
	if err != nil {
		panic(err)
	}
	return k
}

// ServeConfig is what the key service answers with.
type ServeConfig struct {
	Keys     *Service
	Verifier Verifier
	// Roles may ask (their certificates' OU).
	Roles  []string
	Logger *slog.Logger
}

// Serve answers unwraps on Subject until the subscription ends. Every
// answer is logged with the account and the asker: the audit of what each
// worker opened.
func Serve(nc *nats.Conn, cfg ServeConfig) (*nats.Subscription, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nc.QueueSubscribe(Subject, "kiln-keys", func(m *nats.Msg) {
		b, _ := json.Marshal(cfg.answer(m.Data))
		m.Respond(b)
	})
}

func (cfg ServeConfig) answer(data []byte) unwrapReply {
	var req unwrapRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return unwrapReply{Error: "keys: bad request"}
	}
	name, role, err := cfg.Verifier.Verify(req.Cert, req.Body, req.Sig)
	if err != nil {
		cfg.Logger.Warn("keys: unwrap refused", "err", err)
		return unwrapReply{Error: err.Error()}
	}
	var body unwrapBody
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return unwrapReply{Error: "keys: bad request"}
	}
	log := cfg.Logger.With("account", body.Account, "requester", name, "role", role)
	if !slices.Contains(cfg.Roles, role) {
		log.Warn("keys: unwrap refused: role may not ask")
		return unwrapReply{Error: fmt.Sprintf("keys: role %q may not ask for unwraps", role)}
	}
	pub, err := ecdh.X25519().NewPublicKey(body.Pub)
	if err != nil {
		return unwrapReply{Error: "keys: bad reply key"}
	}
	dk, err := cfg.Keys.Unwrap(context.Background(), body.Account, body.Wrapped)
	if err != nil {
		log.Warn("keys: unwrap denied", "err", err)
		return unwrapReply{Error: err.Error(), Denied: errors.Is(err, ErrDenied)}
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return unwrapReply{Error: err.Error()}
	}
	shared, err := eph.ECDH(pub)
	if err != nil {
		return unwrapReply{Error: "keys: bad reply key"}
	}
	sealed, err := seal(replyKey(shared), dk, req.Body)
	if err != nil {
		return unwrapReply{Error: err.Error()}
	}
	log.Info("keys: unwrap")
	return unwrapReply{Key: append(eph.PublicKey().Bytes(), sealed...)}
}

// Client asks the key service over NATS: a worker's images.KeyService. It
// keeps the data keys it unwrapped for a while (a manifest is opened on
// every cold start of its image), at most cacheSize of them.
type Client struct {
	nc     *nats.Conn
	signer Signer
	// Attempt bounds one request before it is sent again (to another
	// control plane: the one asked may have died holding it).
	Attempt time.Duration

	mu    sync.Mutex
	cache *list.List // of *cached, most recent first
	index map[string]*list.Element
}

type cached struct {
	key     string // account, NUL, wrapped key
	dk      []byte
	expires time.Time
}

// Bounds of the Client's cache of data keys.
const (
	cacheSize = 1024
	cacheTTL  = 15 * time.Minute
)

// NewClient returns a client asking over nc, its requests signed by signer.
func NewClient(nc *nats.Conn, signer Signer) *Client {
	return &Client{nc: nc, signer: signer, Attempt: 5 * time.Second, cache: list.New(), index: map[string]*list.Element{}}
}

// DataKey is not served: see ErrNotServed.
func (c *Client) DataKey(context.Context, string) (plain, wrapped []byte, err error) {
	return nil, nil, ErrNotServed
}

// Salt is not served: see ErrNotServed.
func (c *Client) Salt(context.Context, string) ([]byte, error) { return nil, ErrNotServed }

// Unwrap asks a control plane for the data key wrapped for account (from
// the cache when it asked lately), trying again, until ctx ends, while none
// answers; another account's key is ErrDenied.
func (c *Client) Unwrap(ctx context.Context, account string, wrapped []byte) ([]byte, error) {
	ck := account + "\x00" + string(wrapped)
	if dk := c.cached(ck); dk != nil {
		return dk, nil
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(unwrapBody{Account: account, Wrapped: wrapped, Pub: priv.PublicKey().Bytes()})
	cert, sig, err := c.signer.Sign(body)
	if err != nil {
		return nil, err
	}
	req, _ := json.Marshal(unwrapRequest{Body: body, Cert: cert, Sig: sig})
	msg, err := c.request(ctx, req)
	if err != nil {
		return nil, err
	}
	var rep unwrapReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return nil, fmt.Errorf("keys: reply: %w", err)
	}
	switch {
	case rep.Denied:
		return nil, fmt.Errorf("%w: %s", ErrDenied, rep.Error)
	case rep.Error != "":
		return nil, fmt.Errorf("keys: unwrap: %s", rep.Error)
	case len(rep.Key) < 32:
		return nil, errors.New("keys: reply: short key")
	}
	pub, err := ecdh.X25519().NewPublicKey(rep.Key[:32])
	if err != nil {
		return nil, fmt.Errorf("keys: reply: %w", err)
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("keys: reply: %w", err)
	}
	dk, err := open(replyKey(shared), rep.Key[32:], body)
	if err != nil {
		return nil, fmt.Errorf("keys: reply: %w", err)
	}
	c.put(ck, dk)
	return dk, nil
}

// request sends req until a control plane answers: none may be subscribed
// (no responders) or the one asked may die before it answers (no reply
// within Attempt).
func (c *Client) request(ctx context.Context, req []byte) (*nats.Msg, error) {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		actx, cancel := context.WithTimeout(ctx, c.Attempt)
		msg, err := c.nc.RequestWithContext(actx, Subject, req)
		cancel()
		switch {
		case err == nil:
			return msg, nil
		case errors.Is(err, nats.ErrConnectionClosed):
			return nil, fmt.Errorf("keys: unwrap: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("keys: unwrap: no key service answered: %w (last: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

func (c *Client) cached(k string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.index[k]
	if !ok {
		return nil
	}
	if ce := e.Value.(*cached); time.Now().Before(ce.expires) {
		c.cache.MoveToFront(e)
		return ce.dk
	}
	c.cache.Remove(e)
	delete(c.index, k)
	return nil
}

func (c *Client) put(k string, dk []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.index[k]; ok {
		c.cache.Remove(e)
	}
	c.index[k] = c.cache.PushFront(&cached{key: k, dk: dk, expires: time.Now().Add(cacheTTL)})
	for c.cache.Len() > cacheSize {
		delete(c.index, c.cache.Remove(c.cache.Back()).(*cached).key)
	}
}
