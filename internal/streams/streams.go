// Package streams is Kiln's stream service: Kinesis Data Streams' API (AWS
// JSON 1.1, X-Amz-Target Kinesis_20131202.*) on Kiln's endpoint, so that
// `aws kinesis`, boto3 and the SDKs' Kinesis clients work unchanged, over
// JetStream.
//
// # Storage
//
// A stream is one JetStream stream, KILN_KINESIS_ID (ID is the stream's
// StreamId, new with every incarnation of a name), with one subject per
// shard, kiln.kinesis.ID.N, limits retention and a maximum age of the
// stream's retention period (24 hours): a shard's records are its
// subject's messages, in order. A partition key hashes to a shard as
// Kinesis's do (the MD5 of the key as a 128-bit integer, shards owning
// contiguous ranges of it; ExplicitHashKey chooses the hash instead). A
// record's sequence number is derived from its JetStream sequence (see
// seqNumber), so sequence numbers increase in each shard. Reads are batched
// direct gets of the shard's subject from a JetStream sequence on, which
// any replica answers: a replica a moment behind returns fewer records,
// never a gap, since the next read starts after the last record returned.
// Descriptions live in KV bucket kiln-kinesis-streams, key ACCOUNT.NAME
// (dots in the name written =2E), with the key that seals shard iterators.
//
// # Go API
//
// The stream event source mappings read streams without HTTP:
//
//	s.Describe(ctx, account, name)            // *Description (ARN, status, shard count)
//	s.Shards(ctx, account, name)              // []Shard: ids, hash key ranges
//	s.Read(ctx, account, name, shardID, from, limit)
//	                                          // *Batch: records from a Position on, the Position after them
//	s.Put(ctx, account, name, entries)        // what PutRecords does
//	ParseARN(arn), ARN(region, account, name) // arn:aws:kinesis:REGION:ACCOUNT:stream/NAME
//
// A Position is a starting point as GetShardIterator takes it (Type
// TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER or
// AT_TIMESTAMP); Batch.Next is always concrete (LATEST resolved), so a
// reader that stores it as its checkpoint resumes where it stopped.
// Errors are *Error, matched with errors.Is against ErrNotFound and the
// other Err values.
package streams

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	bucket = "kiln-kinesis-streams"
	// secretKey holds the key shard iterators are sealed with; stream keys
	// always have a dot, so never collide with it.
	secretKey = "iterator-secret"
	// DefaultRetention is a new stream's retention period.
	DefaultRetention = 24 * time.Hour
	// onDemandShards is the shard count of an ON_DEMAND stream (Kinesis
	// starts one with 4; Kiln does not scale it).
	onDemandShards = 4
)

// Stream modes and statuses, as Kinesis names them.
const (
	ModeProvisioned = "PROVISIONED"
	ModeOnDemand    = "ON_DEMAND"
	StatusCreating  = "CREATING"
	StatusActive    = "ACTIVE"
	StatusDeleting  = "DELETING"
)

// Config configures the service. NATS is required.
type Config struct {
	NATS *nats.Conn
	// Region goes into stream ARNs; empty means us-east-1.
	Region string
	// Replicas of each stream's JetStream stream and of the descriptions
	// (cluster mode); 0 means 1.
	Replicas int
	Logger   *slog.Logger
}

// Service is the stream service.
type Service struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     *natsd.KV // read so that a stream created through another frontend a moment ago is found
	secret []byte
	log    *slog.Logger
	metrics

	open *natsd.Cache[*meta] // by KV key, while their description is current
}

// meta is a stream's description, as stored.
type meta struct {
	Account, Name string
	ID            string // StreamId: names the JetStream stream
	Shards        int
	Mode          string
	Retention     time.Duration
	Created       time.Time
	Status        string
	rev           uint64
}

func (m *meta) jsName() string           { return "KILN_KINESIS_" + m.ID }
func (m *meta) subject(shard int) string { return "kiln.kinesis." + m.ID + "." + strconv.Itoa(shard) }

func (m *meta) streamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: m.jsName(), Description: "Kiln stream " + m.Account + "/" + m.Name,
		Subjects: []string{"kiln.kinesis." + m.ID + ".*"}, Retention: jetstream.LimitsPolicy,
		Discard: jetstream.DiscardOld, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
		MaxAge: m.Retention, AllowDirect: true}
}

// New opens the stream service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.NATS == nil {
		return nil, errors.New("streams: NATS connection required")
	}
	cfg.Region, cfg.Logger = cmp.Or(cfg.Region, "us-east-1"), cmp.Or(cfg.Logger, slog.Default())
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, err
	}
	kv, open, err := natsd.OpenCatalog[*meta](ctx, js, bucket, cfg.Replicas)
	if err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	s := &Service{cfg: cfg, nc: cfg.NATS, js: js, kv: kv, log: cfg.Logger, metrics: newMetrics(), open: open}
	if s.secret, err = s.loadSecret(ctx); err != nil {
		return nil, fmt.Errorf("streams: iterator key: %w", err)
	}
	return s, nil
}

// loadSecret returns the key every process sealing shard iterators for
// this Kiln shares, creating it the first time.
func (s *Service) loadSecret(ctx context.Context) ([]byte, error) {
	fresh := make([]byte, 32)
	rand.Read(fresh)
	_, err := s.kv.Create(ctx, secretKey, fresh)
	if err == nil {
		return fresh, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, err
	}
	b, _, err := s.kv.Read(ctx, secretKey)
	if err == nil && len(b) != 32 {
		err = fmt.Errorf("stored key of %d bytes", len(b))
	}
	return b, err
}

// key is a stream's KV key: KV keys may not hold "..", nor end in a dot,
// which stream names may.
func key(account, name string) string { return account + "." + strings.ReplaceAll(name, ".", "=2E") }

// nameRe is the model's pattern of a stream name.
var nameRe = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)

func checkName(name string) error {
	if name == "" || len(name) > 128 {
		return invalidValue(name, "streamName", "have length less than or equal to 128 and greater than or equal to 1")
	}
	if !nameRe.MatchString(name) {
		return invalidValue(name, "streamName", "satisfy regular expression pattern: [a-zA-Z0-9_.-]+")
	}
	return nil
}

// stream opens account's stream name, whatever its status.
func (s *Service) stream(ctx context.Context, account, name string) (*meta, error) {
	if !nameRe.MatchString(name) {
		return nil, notFound(account, name)
	}
	k := key(account, name)
	if m, ok := s.open.Get(k); ok {
		return m, nil
	}
	b, rev, err := s.kv.Read(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, notFound(account, name)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	m := &meta{}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	m.rev = rev
	s.open.Put(key(m.Account, m.Name), m, m.rev)
	return m, nil
}

// active opens a stream records are written to and read from.
func (s *Service) active(ctx context.Context, account, name string) (*meta, error) {
	m, err := s.stream(ctx, account, name)
	if err != nil {
		return nil, err
	}
	return m, m.isActive()
}

func (m *meta) isActive() error {
	if m.Status != StatusActive {
		return errorf(ErrInUse, "Stream %s under account %s is %s, not ACTIVE.", m.Name, m.Account, m.Status)
	}
	return nil
}

// store writes m over the revision it was read at.
func (s *Service) store(ctx context.Context, m *meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	rev, err := s.kv.Update(ctx, key(m.Account, m.Name), b, m.rev)
	if err != nil {
		return err
	}
	// Cached at once: this process's next call sees what it wrote.
	m.rev = rev
	s.open.Put(key(m.Account, m.Name), m, m.rev)
	return nil
}

// streamID is a new StreamId, in the model's shape ([a-z0-9]{20}-[a-z0-9]{3}).
func streamID() string {
	b := make([]byte, 15)
	rand.Read(b)
	id := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return id[:20] + "-" + id[20:23]
}

// Create creates a provisioned stream of shards shards.
func (s *Service) Create(ctx context.Context, account, name string, shards int) error {
	return s.create(ctx, account, name, shards, ModeProvisioned)
}

func (s *Service) create(ctx context.Context, account, name string, shards int, mode string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if shards < 1 {
		return invalidValue(shards, "shardCount", "have value greater than or equal to 1")
	}
	if shards > MaxShards {
		return errorf(ErrLimitExceeded, "This request would exceed the shard limit for the account %s in %s. Current limit of shards per stream is %d. Number of additional shards that would have resulted from this request: %d.",
			account, s.cfg.Region, MaxShards, shards)
	}
	m := &meta{Account: account, Name: name, ID: streamID(), Shards: shards, Mode: mode,
		Retention: DefaultRetention, Created: time.Now().UTC().Truncate(time.Millisecond), Status: StatusCreating}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	// The description first, CREATING: it claims the name. A crash before
	// ACTIVE leaves a stream that DeleteStream removes.
	if m.rev, err = s.kv.Create(ctx, key(account, name), b); errors.Is(err, jetstream.ErrKeyExists) {
		return errorf(ErrInUse, "Stream %s under account %s already exists.", name, account)
	} else if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	if _, err := s.js.CreateStream(ctx, m.streamConfig(s.cfg.Replicas)); err != nil {
		s.kv.Delete(context.WithoutCancel(ctx), key(account, name), jetstream.LastRevision(m.rev))
		return fmt.Errorf("stream %s: %w", name, err)
	}
	m.Status = StatusActive
	if err := s.store(ctx, m); err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	return nil
}

// Delete deletes a stream and its records. A stream whose deletion was cut
// short (DELETING) or whose creation was (CREATING) is deleted again.
func (s *Service) Delete(ctx context.Context, account, name string) error {
	for attempt := 0; ; attempt++ {
		m, err := s.stream(ctx, account, name)
		if err != nil {
			return err
		}
		err = s.delete(ctx, m)
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		// The description changed since this process read it (deleted, or
		// created again, through another one): read it again, once.
		s.open.Forget(key(account, name), m.rev+1)
		if attempt > 0 {
			return errorf(ErrInUse, "Stream %s under account %s changed while being deleted; try again.", name, account)
		}
	}
}

// delete deletes the stream m describes; jetstream.ErrKeyExists if its
// description is not m's any more.
func (s *Service) delete(ctx context.Context, m *meta) error {
	if m.Status != StatusDeleting {
		d := *m
		d.Status = StatusDeleting
		if err := s.store(ctx, &d); err != nil {
			return fmt.Errorf("stream %s: %w", m.Name, err)
		}
		m = &d
	}
	if err := s.js.DeleteStream(ctx, m.jsName()); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", m.Name, err)
	}
	k := key(m.Account, m.Name)
	if err := s.kv.Delete(ctx, k, jetstream.LastRevision(m.rev)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("stream %s: %w", m.Name, err)
	}
	s.open.Forget(k, m.rev+1)
	return nil
}

// Retention periods a stream may have.
const (
	MinRetention = 24 * time.Hour
	MaxRetention = 8760 * time.Hour
)

// SetRetention changes how long a stream keeps its records, as
// IncreaseStreamRetentionPeriod (increase) and
// DecreaseStreamRetentionPeriod (!increase) do: records older than a
// shorter period go at once.
func (s *Service) SetRetention(ctx context.Context, account, name string, retention time.Duration, increase bool) error {
	m, err := s.active(ctx, account, name)
	if err != nil {
		return err
	}
	hours := int(retention / time.Hour)
	switch {
	case retention < MinRetention || retention > MaxRetention || retention%time.Hour != 0:
		return errorf(ErrInvalidArgument, "Minimum allowed retention period is %d hours. Maximum allowed retention period is %d hours. Requested retention period (%d hours) is out of range.",
			int(MinRetention/time.Hour), int(MaxRetention/time.Hour), hours)
	case increase && retention < m.Retention:
		return errorf(ErrInvalidArgument, "Requested retention period (%d hours) for stream %s can not be shorter than existing retention period (%d hours). Use DecreaseRetentionPeriod API.",
			hours, name, int(m.Retention/time.Hour))
	case !increase && retention > m.Retention:
		return errorf(ErrInvalidArgument, "Requested retention period (%d hours) for stream %s can not be longer than existing retention period (%d hours). Use IncreaseRetentionPeriod API.",
			hours, name, int(m.Retention/time.Hour))
	}
	// The stream first: a crash before the description leaves the old
	// period shown, and the same call again sets both.
	u := *m
	u.Retention = retention
	if _, err := s.js.UpdateStream(ctx, u.streamConfig(s.cfg.Replicas)); err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	if err := s.store(ctx, &u); errors.Is(err, jetstream.ErrKeyExists) {
		return errorf(ErrInUse, "Stream %s under account %s changed meanwhile; try again.", name, account)
	} else if err != nil {
		return fmt.Errorf("stream %s: %w", name, err)
	}
	return nil
}

// Description is what DescribeStreamSummary tells of a stream.
type Description struct {
	Name, ARN, ID string
	Status, Mode  string
	Shards        int
	Retention     time.Duration
	Created       time.Time
}

func (s *Service) describe(m *meta) *Description {
	return &Description{Name: m.Name, ARN: ARN(s.cfg.Region, m.Account, m.Name), ID: m.ID, Status: m.Status,
		Mode: m.Mode, Shards: m.Shards, Retention: m.Retention, Created: m.Created}
}

// Describe describes account's stream name.
func (s *Service) Describe(ctx context.Context, account, name string) (*Description, error) {
	m, err := s.stream(ctx, account, name)
	if err != nil {
		return nil, err
	}
	return s.describe(m), nil
}

// List describes account's streams, sorted by name.
func (s *Service) List(ctx context.Context, account string) ([]*Description, error) {
	w, err := s.kv.WatchFiltered(ctx, []string{account + ".*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var out []*Description
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
				return out, nil
			}
			var m meta
			if json.Unmarshal(e.Value(), &m) == nil {
				out = append(out, s.describe(&m))
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Shard is one of a stream's shards.
type Shard struct {
	ID string
	// The range of hash keys it owns, decimal, both ends included.
	StartingHashKey, EndingHashKey string
	// StartingSequenceNumber precedes all of its records.
	StartingSequenceNumber string
}

// Shards lists a stream's shards.
func (s *Service) Shards(ctx context.Context, account, name string) ([]Shard, error) {
	m, err := s.active(ctx, account, name)
	if err != nil {
		return nil, err
	}
	return m.shards(), nil
}

func (m *meta) shards() []Shard {
	out := make([]Shard, m.Shards)
	for i := range out {
		start, end := hashRange(i, m.Shards)
		out[i] = Shard{ID: ShardID(i), StartingHashKey: start.String(), EndingHashKey: end.String(),
			StartingSequenceNumber: seqNumber(i, 0)}
	}
	return out
}

// ARN is a stream's ARN.
func ARN(region, account, name string) string {
	return "arn:aws:kinesis:" + region + ":" + account + ":stream/" + name
}

// ParseARN parses a stream's ARN, arn:aws:kinesis:REGION:ACCOUNT:stream/NAME.
func ParseARN(arn string) (region, account, name string, err error) {
	p := strings.SplitN(arn, ":", 6)
	if len(p) != 6 || p[0] != "arn" || !strings.HasPrefix(p[1], "aws") || p[2] != "kinesis" || p[3] == "" ||
		len(p[4]) != 12 || strings.Trim(p[4], "0123456789") != "" {
		return "", "", "", fmt.Errorf("%q is not a stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)", arn)
	}
	name, ok := strings.CutPrefix(p[5], "stream/")
	if !ok || !nameRe.MatchString(name) {
		return "", "", "", fmt.Errorf("%q is not a stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)", arn)
	}
	return p[3], p[4], name, nil
}
