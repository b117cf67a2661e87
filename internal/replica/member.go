// Package replica runs the assignment service as replicated partitions over
// NATS JetStream: every partition has a journal stream (KILN_ASSIGN_<p>) and
// members in different zones. One member leads a partition (a lease in a
// JetStream KV bucket, taken and renewed with revision-checked updates); it
// decides, appends the decision's records to the journal with
// expected-last-sequence (so a deposed leader cannot append), applies them,
// and only then acts (asks a worker to create an environment, answers the
// frontend). Followers tail the journal into the same partition.State; the
// one that takes over finishes replaying first, so every warm environment
// stays assigned. A new member replays from the oldest live lease: the
// leader renews old leases and purges the journal behind them.
//
// Frontends reach a partition's leader on kiln.assign.p<N>.<member>, the
// subject of the member the lease bucket names (only that member, once it
// leads, subscribes), and follow the bucket to re-send on failover: a
// deposed or cut-off leader is never sent anything once the lease moved.
package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/assignment"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/partition"
	"github.com/kiln-dev/kiln/internal/placement"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Mode selects how partitions survive their leader.
type Mode string

const (
	// Replicated: followers tail the journal and take over with its state.
	Replicated Mode = "replicated"
	// SingleOwner is the old Worker Manager design, kept as a measured
	// baseline: a partition's state lives only in its owner's memory; a
	// member that takes over starts empty, orphaning every environment.
	SingleOwner Mode = "single-owner"
)

// Subjects and buckets.
const (
	LeaseBucket   = "KILN_ASSIGN_LEADERS"
	WorkerDown    = "kiln.worker.down"  // {"id": ...}: placement gave up on a worker
	WorkerDrain   = "kiln.worker.drain" // {"id": ...}: no new invokes on it
	MembersSubj   = "kiln.assign.members"
	subjectPrefix = "kiln.assign.p"
)

// Subject is where member takes requests for partition p while it leads.
func Subject(p int, member string) string {
	return subjectPrefix + strconv.Itoa(p) + "." + subjectToken(member)
}

// subjectToken makes a member name one NATS subject token.
func subjectToken(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}

// StreamName is partition p's journal.
func StreamName(p int) string { return "KILN_ASSIGN_" + strconv.Itoa(p) }

func leaseKey(p int) string { return "p" + strconv.Itoa(p) }

// WorkerRef is a worker as placement names it.
type WorkerRef struct {
	ID   string `json:"id"`
	Zone string `json:"zone,omitempty"`
	Addr string `json:"addr"`
}

// Placer chooses workers (the placement service).
type Placer interface {
	Place(ctx context.Context, req placement.Request) (WorkerRef, error)
	Release(workerID string, req placement.Request)
}

// Workers creates and destroys environments on workers.
type Workers interface {
	Create(ctx context.Context, w WorkerRef, envID string, spec invoke.EnvSpec) (*invoke.EnvInfo, error)
	Destroy(ctx context.Context, w WorkerRef, envID string) error
}

// Config configures a member.
type Config struct {
	NC         *nats.Conn
	Member     string // unique name
	Zone       string
	Partitions int // number of partitions (every member serves all)
	// Index and Members spread initial leadership: partition p prefers
	// member p % Members with Index p % Members.
	Index, Members int
	Replicas       int // journal and lease bucket replicas; 0 means 1
	Mode           Mode
	// Lease is how long a silent leader keeps its partitions; 0 means 600 ms.
	Lease time.Duration
	// IdleTimeout reaps idle environments; 0 means 10 min.
	IdleTimeout time.Duration
	// OrphanGrace is how long past its function's timeout a busy
	// environment waits for its release before it is retired as
	// orphaned (its frontend died mid-invoke); 0 means 30 s.
	OrphanGrace time.Duration
	// RenewAge is how old a lease gets before the leader renews it (and
	// trims the journal behind the oldest); 0 means 30 s.
	RenewAge time.Duration
	Placer   Placer
	Workers  Workers
	// Scale, when set, is asked before every new environment: a function
	// lives in one partition, so its leader alone rations the scaling rate
	// across every frontend (a new leader starts with a full bucket).
	Scale  assignment.ScaleLimiter
	Logger *slog.Logger
}

// Member is one process's membership in every partition.
type Member struct {
	cfg   Config
	ring  *partition.Ring
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	parts []*part
	subs  []*nats.Subscription
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	// handedOut counts environments this member handed to invokes.
	handedOut atomic.Int64
	// causes labels the cold starts of the partitions this member leads.
	causes assignment.Causes
}

// Start joins every partition.
func Start(ctx context.Context, cfg Config) (*Member, error) {
	if cfg.Partitions < 1 {
		cfg.Partitions = 1
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Mode == "" {
		cfg.Mode = Replicated
	}
	if cfg.Lease == 0 {
		cfg.Lease = 600 * time.Millisecond
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.OrphanGrace == 0 {
		cfg.OrphanGrace = 30 * time.Second
	}
	if cfg.RenewAge == 0 {
		cfg.RenewAge = 30 * time.Second
	}
	if cfg.Members < 1 {
		cfg.Members = 1
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
	m := &Member{cfg: cfg, js: js, kv: kv, ring: partition.NewRing(cfg.Partitions)}
	m.ctx, m.stop = context.WithCancel(context.Background())
	for p := 0; p < cfg.Partitions; p++ {
		if err := CreateJournal(ctx, js, p, cfg.Replicas); err != nil {
			return nil, err
		}
		m.parts = append(m.parts, &part{m: m, id: p, st: partition.New()})
	}
	for _, sub := range []struct {
		subj string
		fn   nats.MsgHandler
	}{{WorkerDown, m.onWorker(partition.OpDead)}, {WorkerDrain, m.onWorker(partition.OpDrain)}, {MembersSubj, m.onMembers}} {
		s, err := cfg.NC.Subscribe(sub.subj, sub.fn)
		if err != nil {
			m.Close()
			return nil, err
		}
		m.subs = append(m.subs, s)
	}
	for _, p := range m.parts {
		if err := p.follow(); err != nil {
			m.Close()
			return nil, err
		}
		m.wg.Add(1)
		go p.elect()
	}
	return m, nil
}

// CreateJournal creates (or finds) partition p's journal stream.
func CreateJournal(ctx context.Context, js jetstream.JetStream, p, replicas int) error {
	if _, err := js.Stream(ctx, StreamName(p)); err == nil {
		return nil
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamName(p), Subjects: []string{"kiln.journal." + strconv.Itoa(p)},
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("journal of partition %d: %w", p, err)
	}
	return nil
}

// LeaseKV opens (creating) the leader lease bucket.
func LeaseKV(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return OpenLeaseKV(ctx, js, LeaseBucket, replicas)
}

// OpenLeaseKV opens (creating) a bucket of leader leases: one value per
// key, on disk (the counting service keeps its leaders' in one too).
func OpenLeaseKV(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	kv, err := natsd.OpenKV(ctx, js, jetstream.KeyValueConfig{Bucket: bucket, History: 1, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("lease %w", err)
	}
	return kv, nil
}

// Close leaves every partition (without appending anything).
func (m *Member) Close() {
	m.stop()
	for _, s := range m.subs {
		s.Unsubscribe()
	}
	m.wg.Wait()
	for _, p := range m.parts {
		p.mu.Lock()
		p.stepDownLocked("closing")
		if p.cons != nil {
			p.cons.Stop()
		}
		p.mu.Unlock()
	}
}

// Lease is the value of a partition's key in the lease bucket.
type Lease struct {
	Member string `json:"member"`
	Zone   string `json:"zone"`
	Epoch  uint64 `json:"epoch"`
	PID    int    `json:"pid"`
}

// PartitionStatus is one member's view of one partition.
type PartitionStatus struct {
	Partition int             `json:"partition"`
	Leading   bool            `json:"leading"`
	Epoch     uint64          `json:"epoch"`
	Leader    string          `json:"leader"`
	Applied   uint64          `json:"applied"`
	Base      uint64          `json:"base"`
	Envs      map[string]int  `json:"envs"`
	EnvList   []partition.Env `json:"env_list,omitempty"`
}

// MemberStatus answers MembersSubj.
type MemberStatus struct {
	Member     string            `json:"member"`
	Zone       string            `json:"zone"`
	PID        int               `json:"pid"`
	Mode       Mode              `json:"mode"`
	Partitions []PartitionStatus `json:"partitions"`
}

// Status reports this member's view of every partition.
func (m *Member) Status(withEnvs bool) MemberStatus {
	ms := MemberStatus{Member: m.cfg.Member, Zone: m.cfg.Zone, PID: os.Getpid(), Mode: m.cfg.Mode}
	for _, p := range m.parts {
		p.mu.Lock()
		ps := PartitionStatus{Partition: p.id, Leading: p.leading, Epoch: p.st.Epoch, Leader: p.st.Leader,
			Applied: p.st.Applied, Base: p.st.Base, Envs: map[string]int{}}
		for s, n := range p.st.Count() {
			ps.Envs[s.String()] = n
		}
		if withEnvs {
			ps.EnvList = p.st.Envs()
		}
		p.mu.Unlock()
		ms.Partitions = append(ms.Partitions, ps)
	}
	return ms
}

// State runs fn on partition p's state (tests).
func (m *Member) State(p int, fn func(st *partition.State, leading bool)) {
	pt := m.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	fn(pt.st, pt.leading)
}

func (m *Member) onMembers(msg *nats.Msg) {
	withEnvs := string(msg.Data) == "envs"
	b, _ := json.Marshal(m.Status(withEnvs))
	msg.Respond(b)
}

// onWorker retires (OpDead) or drains (OpDrain) the environments of a
// worker, in every partition this member leads.
func (m *Member) onWorker(op partition.Op) nats.MsgHandler {
	return func(msg *nats.Msg) {
		var w struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(msg.Data, &w) != nil || w.ID == "" {
			return
		}
		for _, p := range m.parts {
			go p.retireWorker(w.ID, op)
		}
	}
}

// ---- protocol ----

// Request is a frontend's call to a partition leader.
type Request struct {
	Op    string `json:"op"` // "acquire" | "release"
	Token string `json:"token"`
	// Acquire: the function version to run.
	Account  string                     `json:"account,omitempty"`
	Function *api.FunctionConfiguration `json:"function,omitempty"`
	// Release.
	Env      string `json:"env,omitempty"`
	Reusable bool   `json:"reusable,omitempty"`
}

// Reply answers a Request.
type Reply struct {
	Env          *partition.Env    `json:"env,omitempty"`
	Cold         bool              `json:"cold,omitempty"`
	Cause        string            `json:"cause,omitempty"` // of a cold start
	InitDuration time.Duration     `json:"init,omitempty"`
	Phases       invoke.ColdStart  `json:"phases,omitzero"`
	InitError    *invoke.InitError `json:"init_error,omitempty"`
	Error        string            `json:"error,omitempty"`
	APIError     *api.Error        `json:"api_error,omitempty"`
	Retry        bool              `json:"retry,omitempty"` // safe to send again (same token)
	Leader       string            `json:"leader,omitempty"`
}

var errNotLeader = errors.New("replica: not the partition's leader")
