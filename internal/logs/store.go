// Package logs keeps execution environments' logs in NATS JetStream and
// serves them through the CloudWatch Logs API (JSON 1.1), so that
// `aws logs tail`, `aws logs filter-log-events` and the SDKs read them.
//
// Storage: one stream (KILN_LOGS) with subjects
// logs.<account>.<group>.<stream> (tokens escaped, see escape), each message a
// batch of one log stream's events in order; and a KV bucket indexing groups
// and streams (creation time, first and last event timestamps, last
// ingestion time, stored bytes). Every process keeps the index in memory,
// loaded at Open and kept current by watching the bucket.
//
// Writes: Append (the worker's logline.Sink), called on the invoke path, only queues. One
// goroutine takes what is queued, publishes one message per log stream per
// round (asynchronously, then waits for the acks), so a stream's events keep
// their order. The queue is bounded (Config.QueueBytes); when it is full,
// Append drops the lines, counts them (Dropped) and logs a warning at most
// every 10 s: a function that floods its log never slows invokes.
//
// Files: store.go opens and closes the store; ingest.go takes lines to the
// stream; index.go keeps the index of groups and streams; read.go scans
// events for the queries; retention.go expires them; api.go is the Logs
// API and its route table.
package logs

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-dev/kiln/internal/logline"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a Store. The zero value works.
type Config struct {
	Stream   string // JetStream stream; default KILN_LOGS
	Bucket   string // KV bucket of the index; default kiln-logs-index
	Replicas int    // default 1
	// MaxBytes bounds the stream, the total of every function's log; the
	// oldest events go first. 0: no bound.
	MaxBytes int64
	// RetentionDays is how long the events of a log group without a
	// retention policy (PutRetentionPolicy) are kept; 0: never expire
	// (CloudWatch Logs' default).
	RetentionDays int
	// ExpireInterval is how often expired events are removed; default 1 h.
	ExpireInterval time.Duration
	// QueueBytes bounds what Append queues before it drops; default 64 MiB.
	QueueBytes int64
	// IndexInterval is how often the index of appended streams is written
	// to the bucket (DescribeLogStreams in this process sees changes at
	// once); default 1 s.
	IndexInterval time.Duration
	// Linger is how long a publishing round waits for more lines after the
	// first, so that invokes in quick succession share one message and one
	// ack; default 10 ms, negative means none. A Flush (every read of the
	// API does one) ends the wait.
	Linger time.Duration
	Logger *slog.Logger
}

const (
	defaultStream = "KILN_LOGS"
	defaultBucket = "kiln-logs-index"
	// maxMessage bounds one stored message (NATS' default max payload is 1 MB).
	maxMessage = 900 << 10
	// maxRound bounds what one publishing round takes from the queue.
	maxRound = 8 << 20
)

// Store is the log store.
type Store struct {
	cfg    Config
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	log    *slog.Logger

	queue    chan item
	queued   atomic.Int64 // bytes waiting in queue
	dropped  atomic.Uint64
	lastWarn atomic.Int64 // unix nanos of the last drop warning
	closed   atomic.Bool
	stop     chan struct{}
	done     chan struct{}
	flushNow chan struct{} // ends a round's linger; capacity 1

	indexMu  sync.Mutex // held while writing the index
	mu       sync.Mutex
	accounts map[string]map[string]*group // account → group name → group
	dirty    map[dirtyKey]struct{}

	watcher jetstream.KeyWatcher
	// ending bounds every wait on NATS; abandon ends it (Shutdown's
	// deadline).
	ending  context.Context
	abandon context.CancelFunc
}

// item is one Append, or a flush marker when mark is set.
type item struct {
	account, group, stream string
	lines                  []logline.Line
	size                   int64
	mark                   chan error // capacity 1
}

// group is one log group in the index.
type group struct {
	Name    string `json:"name"`
	Created int64  `json:"creationTime"`
	// Skew is the most that an event's timestamp has been ahead of its
	// ingestion (ms); readers start time-bounded scans that much earlier.
	Skew int64 `json:"skew,omitempty"`
	// Retention is the group's retention policy in days; 0: none.
	Retention int `json:"retentionInDays,omitempty"`
	streams   map[string]*stream
	rev       uint64
	dirty     bool
}

// stream is one log stream in the index.
type stream struct {
	Name          string `json:"name"`
	Created       int64  `json:"creationTime"`
	First         int64  `json:"firstEventTimestamp,omitempty"`
	Last          int64  `json:"lastEventTimestamp,omitempty"`
	LastIngestion int64  `json:"lastIngestionTime,omitempty"`
	Bytes         int64  `json:"storedBytes,omitempty"`
	rev           uint64
	dirty         bool
}

type dirtyKey struct{ account, group, stream string } // stream "" is the group

// Open creates the stream and the bucket if needed and loads the index.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Stream == "" {
		cfg.Stream = defaultStream
	}
	if cfg.Bucket == "" {
		cfg.Bucket = defaultBucket
	}
	cfg.Replicas = max(cfg.Replicas, 1)
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 64 << 20
	}
	if cfg.IndexInterval <= 0 {
		cfg.IndexInterval = time.Second
	}
	if cfg.Linger == 0 {
		cfg.Linger = 10 * time.Millisecond
	}
	if cfg.ExpireInterval <= 0 {
		cfg.ExpireInterval = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	maxBytes := cfg.MaxBytes
	if maxBytes <= 0 {
		maxBytes = -1
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Kiln: log events (CloudWatch Logs)",
		Subjects:    []string{subjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxBytes:    maxBytes,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("logs stream: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "Kiln: log groups and log streams",
		History:     1,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("logs index bucket: %w", err)
	}
	s := &Store{cfg: cfg, js: js, stream: st, kv: kv, log: cfg.Logger,
		queue: make(chan item, 1<<14), stop: make(chan struct{}), done: make(chan struct{}), flushNow: make(chan struct{}, 1),
		accounts: map[string]map[string]*group{}, dirty: map[dirtyKey]struct{}{}}
	s.ending, s.abandon = context.WithCancel(context.Background())
	if err := s.loadIndex(ctx); err != nil {
		s.abandon()
		return nil, err
	}
	go s.run()
	return s, nil
}

// StoredBytes is what the stream holds now, against Config.MaxBytes (past
// it the oldest events go).
func (s *Store) StoredBytes(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Bytes, nil
}

// Close stores what is queued, writes the index and stops. Lines appended
// after Close are dropped.
func (s *Store) Close() error { return s.Shutdown(context.Background()) }

// Shutdown is Close within ctx: once ctx ends, what is still being stored
// (NATS unreachable) is given up at once rather than after its own
// timeouts, and the index watch is left to the connection's close (its
// stop is a JetStream request of a timeout of its own).
func (s *Store) Shutdown(ctx context.Context) error {
	defer context.AfterFunc(ctx, s.abandon)()
	if s.closed.Swap(true) {
		<-s.done
		return nil
	}
	close(s.stop)
	<-s.done
	if s.watcher != nil && ctx.Err() == nil {
		s.watcher.Stop()
	}
	return ctx.Err()
}
