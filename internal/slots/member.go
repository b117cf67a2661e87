// Package slots runs the counting service across frontends, over NATS: the
// accounts are partitioned (by account, on the assignment ring), one member
// leads each partition (a lease in the KILN_COUNT_LEADERS bucket, renewed
// with revision-checked updates) and decides every slot of its accounts
// with counting.Leases; frontends ask it with Client.
//
// Slots are leases: a frontend numbers each slot it asks for, and six
// times per TTL it publishes what it holds, what it is still waiting for,
// and the number it will use next. The leader frees what a frontend no
// longer lists (a release lost on the way) and everything of a frontend it
// has not heard from for the TTL (a killed one). The state lives only in
// the leader's memory and in the frontends: a member that takes a
// partition over first tells the frontends its epoch and counts what they
// list; it grants nothing until every frontend it heard from recently has
// renewed since (or the TTL ran out, when a silent one's slots would have
// expired anyway), and frontends drop grants of an older epoch, so a grant
// of the old leader still on its way is never missed. Limits are thus
// exact across frontends; no journal write is on the invoke path.
package slots

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/kiln-dev/kiln/internal/metadata"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/kiln-dev/kiln/internal/replica"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Subjects and the lease bucket.
const (
	LeaseBucket      = "KILN_COUNT_LEADERS"
	subjHeartbeat    = "kiln.count.hb"
	subjLead         = "kiln.count.lead"
	subjPartition    = "kiln.count.p" // + partition + ".acquire" | ".release"
	DefaultTTL       = 3 * time.Second
	DefaultLease     = 600 * time.Millisecond
	heartbeatsPerTTL = 6
)

// FunctionStore is where reserved concurrency comes from (*metadata.Store).
type FunctionStore interface {
	Follow(ctx context.Context, fn func(account, name string, f *metadata.Function)) error
}

// Config configures a member.
type Config struct {
	NC         *nats.Conn
	Member     string
	Partitions int // 0 means 1
	Replicas   int // of the lease bucket; 0 means 1
	// Counting is the limits (account concurrency, scaling rate unused here).
	Counting counting.Config
	// Functions gives reserved concurrency; nil means none.
	Functions FunctionStore
	// Lease is how long a silent leader keeps its partitions; 0 means 600 ms.
	Lease time.Duration
	// TTL is how long a silent frontend keeps its slots; 0 means 3 s.
	TTL    time.Duration
	Logger *slog.Logger
}

// Member is one process's membership in every counting partition.
type Member struct {
	cfg   Config
	kv    jetstream.KeyValue
	ring  *partition.Ring
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	hbSub *nats.Subscription
	// started is when this member began hearing heartbeats.
	started time.Time

	mu       sync.Mutex
	parts    []*part
	seen     map[string]time.Time // holder → last heartbeat
	reserved map[counting.Key]*int
}

type part struct {
	id int
	// The lease as this member last saw it (rev, and when it last changed).
	rev     uint64
	revAt   time.Time
	present bool
	myRev   uint64 // while leading: the revision of its last renewal
	epoch   uint64 // while leading: the revision it took the lease at
	leads   bool
	renew   time.Time // last successful renewal
	leases  *counting.Leases
	subs    []*nats.Subscription
}

type leaseValue struct {
	Member string `json:"member"`
}

// Start joins every partition.
func Start(ctx context.Context, cfg Config) (*Member, error) {
	if cfg.Partitions < 1 {
		cfg.Partitions = 1
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	js, err := jetstream.New(cfg.NC)
	if err != nil {
		return nil, err
	}
	kv, err := LeaseKV(ctx, js, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	m := &Member{cfg: cfg, kv: kv, ring: partition.NewRing(cfg.Partitions), seen: map[string]time.Time{},
		reserved: map[counting.Key]*int{}}
	for p := 0; p < cfg.Partitions; p++ {
		m.parts = append(m.parts, &part{id: p})
	}
	m.ctx, m.stop = context.WithCancel(context.Background())
	if cfg.Functions != nil {
		if err := m.loadReserved(ctx); err != nil {
			m.stop()
			return nil, err
		}
	}
	m.mu.Lock()
	m.started = time.Now()
	m.mu.Unlock()
	if m.hbSub, err = cfg.NC.Subscribe(subjHeartbeat, m.onHeartbeat); err != nil {
		m.stop()
		return nil, err
	}
	m.wg.Add(1)
	go m.run()
	return m, nil
}

// LeaseKV opens (creating) the leader lease bucket.
func LeaseKV(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return replica.OpenLeaseKV(ctx, js, LeaseBucket, replicas)
}

// Leader names the member leading partition p, as the lease bucket's
// stream leader says (a lagging replica may name a member that has lost
// the lease); "" when none ever did.
func Leader(ctx context.Context, nc *nats.Conn, p int) string {
	v, _, err := natsd.LeaderGet(ctx, nc, LeaseBucket, leaseKey(p))
	if err != nil {
		return ""
	}
	var l leaseValue
	json.Unmarshal(v, &l)
	return l.Member
}

// Close leaves every partition; the leases lapse (nothing is handed over).
func (m *Member) Close() {
	m.stop()
	m.hbSub.Unsubscribe()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.parts {
		m.stepDownLocked(p, "closing")
	}
}

// PartitionOf is the counting partition of an account.
func PartitionOf(r *partition.Ring, account string) int { return r.Of(account, "") }

// loadReserved follows every function's reserved concurrency: the current
// values before it returns, then each write in the bucket's order (a
// listing beside a watch could cross a write and put back an older value).
func (m *Member) loadReserved(ctx context.Context) error {
	lctx, cancel := context.WithCancel(m.ctx)
	stop := context.AfterFunc(ctx, cancel) // Start's ctx bounds the load only
	defer stop()
	err := m.cfg.Functions.Follow(lctx, func(account, name string, f *metadata.Function) {
		var r *int
		if f != nil {
			r = f.ReservedConcurrency
		}
		m.setReserved(counting.Key{Account: account, Function: name}, r)
	})
	if err != nil {
		return fmt.Errorf("counting: functions: %w", err)
	}
	return nil
}

func (m *Member) setReserved(k counting.Key, r *int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r == nil {
		delete(m.reserved, k)
	} else {
		m.reserved[k] = r
	}
	if p := m.parts[PartitionOf(m.ring, k.Account)]; p.leases != nil {
		p.leases.Counter().SetReserved(k, r)
	}
}

// run follows the lease bucket, and every Lease/3 renews the partitions
// this member leads (expiring silent frontends' slots) and campaigns for
// those whose lease lapsed.
func (m *Member) run() {
	defer m.wg.Done()
	w, err := m.kv.WatchAll(m.ctx)
	if err != nil {
		m.cfg.Logger.Error("counting: lease watch", "err", err)
		return
	}
	defer w.Stop()
	t := time.NewTicker(m.cfg.Lease / 3)
	defer t.Stop()
	synced := false // the watch delivered the bucket as it was
	for {
		select {
		case <-m.ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				synced = true
				continue
			}
			p, err := strconv.Atoi(strings.TrimPrefix(e.Key(), "p"))
			if err != nil || p < 0 || p >= len(m.parts) {
				continue
			}
			m.mu.Lock()
			pt := m.parts[p]
			pt.rev, pt.revAt, pt.present = e.Revision(), time.Now(), e.Operation() == jetstream.KeyValuePut
			if pt.leads && pt.rev > pt.myRev {
				m.stepDownLocked(pt, "lease taken")
			}
			m.mu.Unlock()
		case <-t.C:
			if synced {
				for _, p := range m.parts {
					m.tick(p)
				}
			}
		}
	}
}

func (m *Member) tick(p *part) {
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Lease/2)
	defer cancel()
	key := leaseKey(p.id)
	val, _ := json.Marshal(leaseValue{Member: m.cfg.Member})
	m.mu.Lock()
	leads, myRev, rev, present, lapsed := p.leads, p.myRev, p.rev, p.present, time.Since(p.revAt) > m.cfg.Lease
	m.mu.Unlock()
	if leads {
		newRev, err := m.kv.Update(ctx, key, val, myRev)
		m.mu.Lock()
		defer m.mu.Unlock()
		now := time.Now()
		switch {
		case err == nil:
			p.myRev, p.renew = newRev, now
			p.leases.Expire(now)
			if !p.leases.Counting(now) {
				m.announce(p)
			}
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), now.Sub(p.renew) > m.cfg.Lease:
			m.stepDownLocked(p, "lease renewal failed: "+err.Error())
		}
		return
	}
	var newRev uint64
	var err error
	first := false
	switch {
	case rev == 0:
		// Nobody ever led it: nothing was granted, nothing to count.
		newRev, err = m.kv.Create(ctx, key, val)
		first = err == nil
	case !present || lapsed: // deleted, or its leader silent
		newRev, err = m.kv.Update(ctx, key, val, rev)
	default:
		return
	}
	if err != nil {
		return // another member won, or JetStream is unreachable
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leadLocked(p, newRev, first)
}

// leadLocked takes partition p at epoch: fresh counts, filled in by the
// frontends' next heartbeats before anything is granted (unless first).
func (m *Member) leadLocked(p *part, epoch uint64, first bool) {
	now := time.Now()
	p.leads, p.epoch, p.myRev, p.renew = true, epoch, epoch, now
	c := counting.New(m.cfg.Counting)
	for k, r := range m.reserved {
		if PartitionOf(m.ring, k.Account) == p.id {
			c.SetReserved(k, r)
		}
	}
	p.leases = counting.NewLeases(c, m.cfg.TTL)
	if !first {
		p.leases.TakeOver(m.seen, m.started, now)
	}
	// One subscription for both, so a frontend's release and its next
	// acquire are decided in the order it sent them.
	s, err := m.cfg.NC.Subscribe(partitionSubject(p.id, "*"), func(msg *nats.Msg) {
		if strings.HasSuffix(msg.Subject, ".release") {
			m.onRelease(p, msg)
		} else {
			m.onAcquire(p, msg)
		}
	})
	if err != nil {
		m.stepDownLocked(p, "subscribe: "+err.Error())
		return
	}
	p.subs = append(p.subs, s)
	m.cfg.Logger.Info("counting: leading", "partition", p.id, "epoch", epoch, "member", m.cfg.Member,
		"counting", p.leases.Counting(now))
	m.announce(p)
}

func leaseKey(p int) string { return "p" + strconv.Itoa(p) }

func partitionSubject(p int, op string) string { return subjPartition + strconv.Itoa(p) + "." + op }

// announce tells the frontends this leader's epoch: from then on they drop
// grants of older ones, and their heartbeats say they have heard it.
func (m *Member) announce(p *part) {
	b, _ := json.Marshal(leadMsg{Partition: p.id, Epoch: p.epoch})
	m.cfg.NC.Publish(subjLead, b)
}

func (m *Member) stepDownLocked(p *part, why string) {
	if p.leads {
		m.cfg.Logger.Info("counting: stepping down", "partition", p.id, "epoch", p.epoch, "member", m.cfg.Member, "why", why)
	}
	for _, s := range p.subs {
		s.Unsubscribe()
	}
	p.subs, p.leads, p.leases = nil, false, nil
}

// ---- protocol ----

type acquireMsg struct {
	Holder string       `json:"h"`
	ID     uint64       `json:"i"`
	Key    counting.Key `json:"k"`
}

type acquireReply struct {
	Epoch  uint64 `json:"e"`
	Retry  bool   `json:"retry,omitempty"` // no leader here (yet): ask again
	Reason string `json:"reason,omitempty"`
}

type releaseMsg struct {
	Holder string `json:"h"`
	ID     uint64 `json:"i"`
}

type leadMsg struct {
	Partition int    `json:"p"`
	Epoch     uint64 `json:"e"`
}

type heartbeat struct {
	Holder  string          `json:"h"`
	Held    []counting.Held `json:"held,omitempty"`
	Pending []counting.Held `json:"pending,omitempty"`
	Next    uint64          `json:"next"`
	Epochs  []uint64        `json:"epochs"` // the newest leader epoch heard, per partition
}

func (m *Member) onAcquire(p *part, msg *nats.Msg) {
	var req acquireMsg
	if err := json.Unmarshal(msg.Data, &req); err != nil || req.Holder == "" {
		return
	}
	var rep acquireReply
	m.mu.Lock()
	now := time.Now()
	rep.Epoch = p.epoch
	switch {
	case !p.leads || now.Sub(p.renew) > m.cfg.Lease:
		rep.Retry = true
	default:
		err := p.leases.Grant(req.Holder, req.ID, req.Key, now)
		switch {
		case errors.Is(err, counting.ErrTakingOver):
			rep.Retry = true
		case err != nil:
			rep.Reason = reasonOf(err)
		}
	}
	m.mu.Unlock()
	b, _ := json.Marshal(rep)
	msg.Respond(b)
}

func (m *Member) onRelease(p *part, msg *nats.Msg) {
	var req releaseMsg
	if json.Unmarshal(msg.Data, &req) != nil {
		return
	}
	m.mu.Lock()
	if p.leases != nil {
		p.leases.Return(req.Holder, req.ID)
	}
	m.mu.Unlock()
}

func (m *Member) onHeartbeat(msg *nats.Msg) {
	var hb heartbeat
	if json.Unmarshal(msg.Data, &hb) != nil || hb.Holder == "" {
		return
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen[hb.Holder] = now
	for h, at := range m.seen {
		if now.Sub(at) > 2*m.cfg.TTL {
			delete(m.seen, h)
		}
	}
	for _, p := range m.parts {
		if !p.leads {
			continue
		}
		var held []counting.Held
		var pending []uint64
		for _, s := range hb.Held {
			if PartitionOf(m.ring, s.Key.Account) == p.id {
				held = append(held, s)
			}
		}
		for _, s := range hb.Pending {
			if PartitionOf(m.ring, s.Key.Account) == p.id {
				pending = append(pending, s.ID)
			}
		}
		p.leases.Renew(hb.Holder, held, pending, hb.Next, now)
		if p.id < len(hb.Epochs) && hb.Epochs[p.id] >= p.epoch {
			p.leases.Renewed(hb.Holder, now)
		}
	}
}

// leads reports whether this member leads partition p and counts in it.
func (m *Member) leads(p int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	pt := m.parts[p]
	return pt.leads && pt.leases.Counting(time.Now())
}
