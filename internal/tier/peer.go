package tier

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Peer is the peer tier of a cluster's workers, between a worker's own
// caches and the authoritative store: a worker that fetched a blob tells
// the others (Put, which Tiers calls when it fills the caches in front), and
// a worker missing a blob asks the workers that most recently announced it
// before it goes to the store. Peers are trusted no more than a cache: Tiers
// checks what they send against its name, and a corrupt copy is dropped
// (Delete forgets its holder) and fetched from the next tier.
type Peer struct {
	nc    *nats.Conn
	id    string
	local []Store // what this worker serves: its own caches
	// Timeout bounds one request to a peer; 0 means a second.
	Timeout time.Duration

	mu      sync.Mutex
	holders map[string]*list.Element // name → its entry in order
	order   *list.List               // of *holding, least recently announced first
	subs    []*nats.Subscription
}

type holding struct {
	name  string
	peers []string // most recent last
}

// Bounds of what a worker remembers of its peers' caches.
const (
	peerNames       = 1 << 18 // blobs (~100 bytes each)
	peersPerName    = 4
	peerSubject     = "kiln.tier.peer."
	peerAnnounce    = peerSubject + "have"
	peerPartHeader  = "Kiln-Parts"
	peerNotFoundHdr = "Kiln-Not-Found"
)

// NewPeer joins the peer tier as worker id: it serves from local (the
// worker's caches, nearest first, without the peer tier) what peers ask
// for, and follows their announcements.
func NewPeer(nc *nats.Conn, id string, local ...Store) (*Peer, error) {
	p := &Peer{nc: nc, id: id, local: local, holders: map[string]*list.Element{}, order: list.New()}
	s1, err := nc.Subscribe(peerAnnounce, p.announced)
	if err != nil {
		return nil, fmt.Errorf("tier: peer: %w", err)
	}
	s2, err := nc.Subscribe(peerSubject+"get."+id, p.serve)
	if err != nil {
		s1.Unsubscribe()
		return nil, fmt.Errorf("tier: peer: %w", err)
	}
	p.subs = []*nats.Subscription{s1, s2}
	return p, nc.Flush()
}

// Close leaves the peer tier.
func (p *Peer) Close() {
	for _, s := range p.subs {
		s.Unsubscribe()
	}
}

type announcement struct {
	Peer string `json:"peer"`
	Name string `json:"name"`
}

func (p *Peer) announced(m *nats.Msg) {
	var a announcement
	if json.Unmarshal(m.Data, &a) != nil || a.Peer == p.id || validName(a.Name) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var h *holding
	if e := p.holders[a.Name]; e != nil {
		p.order.MoveToBack(e)
		h = e.Value.(*holding)
	} else {
		h = &holding{name: a.Name}
		p.holders[a.Name] = p.order.PushBack(h)
		if p.order.Len() > peerNames {
			old := p.order.Remove(p.order.Front()).(*holding)
			delete(p.holders, old.name)
		}
	}
	h.peers = append(slices.DeleteFunc(h.peers, func(id string) bool { return id == a.Peer }), a.Peer)
	if len(h.peers) > peersPerName {
		h.peers = h.peers[1:]
	}
}

// partSize is what one reply carries, under the connection's limit.
func (p *Peer) partSize() int { return int(p.nc.MaxPayload()) - 4096 }

// serve answers a peer's request "NAME PART" from the local caches.
func (p *Peer) serve(m *nats.Msg) {
	reply := nats.NewMsg(m.Reply)
	name, partStr, _ := strings.Cut(string(m.Data), " ")
	part, err := strconv.Atoi(partStr)
	var b []byte
	if err == nil {
		b, err = p.read(name)
	}
	size := p.partSize()
	if err != nil || part < 0 || part*size > len(b) {
		reply.Header.Set(peerNotFoundHdr, "1")
		m.RespondMsg(reply)
		return
	}
	reply.Header.Set(peerPartHeader, strconv.Itoa(max(1, (len(b)+size-1)/size)))
	reply.Data = b[part*size : min((part+1)*size, len(b))]
	m.RespondMsg(reply)
}

// read finds name in the local caches.
func (p *Peer) read(name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	for _, s := range p.local {
		if b, err := s.Get(context.Background(), name); err == nil {
			return b, nil
		}
	}
	return nil, ErrNotFound
}

// Get asks the peers that most recently announced name, newest first.
func (p *Peer) Get(ctx context.Context, name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	p.mu.Lock()
	var peers []string
	if e := p.holders[name]; e != nil {
		peers = append(peers, e.Value.(*holding).peers...)
	}
	p.mu.Unlock()
	for i := len(peers) - 1; i >= 0; i-- {
		b, err := p.fetch(ctx, peers[i], name)
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		p.forget(name, peers[i])
		if !errors.Is(err, ErrNotFound) {
			slog.Debug("tier: peer fetch failed", "peer", peers[i], "blob", name, "err", err)
		}
	}
	return nil, fmt.Errorf("%w: %s (no peer holds it)", ErrNotFound, name)
}

// fetch reads name from one peer, part by part.
func (p *Peer) fetch(ctx context.Context, peer, name string) ([]byte, error) {
	timeout := p.Timeout
	if timeout == 0 {
		timeout = time.Second
	}
	var out []byte
	for part, parts := 0, 1; part < parts; part++ {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		m, err := p.nc.RequestWithContext(rctx, peerSubject+"get."+peer, []byte(name+" "+strconv.Itoa(part)))
		cancel()
		if err != nil {
			return nil, err
		}
		if m.Header.Get(peerNotFoundHdr) != "" {
			return nil, fmt.Errorf("%w: %s at peer %s", ErrNotFound, name, peer)
		}
		if parts, err = strconv.Atoi(m.Header.Get(peerPartHeader)); err != nil || parts < 1 {
			return nil, fmt.Errorf("tier: peer %s: bad reply", peer)
		}
		out = append(out, m.Data...)
	}
	return out, nil
}

// forget drops peer as a holder of name (it no longer has it), or every
// holder when peer is empty.
func (p *Peer) forget(name, peer string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.holders[name]
	if e == nil {
		return
	}
	h := e.Value.(*holding)
	h.peers = slices.DeleteFunc(h.peers, func(id string) bool { return id == peer || peer == "" })
	if len(h.peers) == 0 {
		p.order.Remove(e)
		delete(p.holders, name)
	}
}

// Put announces that this worker's caches (the tiers in front of this one,
// which Tiers filled first) hold name.
func (p *Peer) Put(ctx context.Context, name string, _ []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	b, _ := json.Marshal(announcement{Peer: p.id, Name: name})
	return p.nc.Publish(peerAnnounce, b)
}

// Delete forgets every holder of name: Tiers calls it when a peer's copy
// was corrupt, and the next read goes to the store.
func (p *Peer) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	p.forget(name, "")
	return nil
}
