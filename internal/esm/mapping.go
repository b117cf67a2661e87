// Package esm is event source mappings: their state (KV bucket kiln-esm,
// one key per mapping UUID), the checks of their configuration, and the
// pollers that read a source, filter, batch and invoke the function
// synchronously, deleting what succeeded.
//
// # Pollers
//
// A Pollers component (one per `kiln up`, or a poller role in a cluster)
// watches the mappings. It moves each through Lambda's states (Creating and
// Updating to Enabled or Disabled, Deleting to gone) and runs every enabled
// mapping whose lease it holds (KV bucket kiln-esm-leases, key = UUID, as
// the async pollers' queue leases): a process that dies stops renewing and
// another takes the mapping over. What a dead poller had received comes
// back after the queue's visibility timeout: at least once, nothing lost.
//
// A mapping runs one to MaximumConcurrency batch loops: a loop that filled
// a batch starts another, one whose receive found nothing ends (the last one
// stays). A batch is up to BatchSize records and 6 MB of payload, gathered
// for up to MaximumBatchingWindowInSeconds. Records no filter matches are
// deleted without an invoke. A throttled invoke is retried with backoff
// (the loop slows; the batch's visibility is extended meanwhile), never
// dropped. A function error leaves the whole batch to come back after the
// visibility timeout (then to the dead-letter queue by the queue's redrive
// policy); with ReportBatchItemFailures only the items the function names.
package esm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/eventfilter"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/nats-io/nats.go/jetstream"
)

// Mapping states, as Lambda names them.
const (
	StateCreating = "Creating"
	StateEnabled  = "Enabled"
	StateDisabled = "Disabled"
	StateUpdating = "Updating"
	StateDeleting = "Deleting"
)

// ReportBatchItemFailures is the one FunctionResponseTypes value.
const ReportBatchItemFailures = "ReportBatchItemFailures"

// Filter is one of FilterCriteria's patterns.
type Filter struct {
	Pattern string `json:"Pattern,omitempty"`
}

// FilterCriteria is a mapping's filters.
type FilterCriteria struct {
	Filters []Filter `json:"Filters,omitempty"`
}

// ScalingConfig bounds a mapping's concurrent batches.
type ScalingConfig struct {
	MaximumConcurrency *int `json:"MaximumConcurrency,omitempty"`
}

// Configuration is Lambda's EventSourceMappingConfiguration.
type Configuration struct {
	UUID                           string
	EventSourceArn                 string
	EventSourceMappingArn          string
	FunctionArn                    string
	BatchSize                      int
	MaximumBatchingWindowInSeconds int
	FilterCriteria                 *FilterCriteria             `json:",omitempty"`
	FunctionResponseTypes          []string                    `json:",omitempty"`
	ScalingConfig                  *ScalingConfig              `json:",omitempty"`
	SelfManagedEventSource         *SelfManagedEventSource     `json:",omitempty"`
	SourceAccessConfigurations     []SourceAccessConfiguration `json:",omitempty"`
	Queues                         []string                    `json:",omitempty"`
	Topics                         []string                    `json:",omitempty"`
	LastModified                   float64
	LastProcessingResult           string
	State                          string
	StateTransitionReason          string
	*StreamSettings                // stream mappings only
}

// SelfManagedEventSource names a source by its servers (a NATS source:
// Endpoints NATS_SERVERS; Kafka: KAFKA_BOOTSTRAP_SERVERS).
type SelfManagedEventSource struct {
	Endpoints map[string][]string
}

// SourceAccessConfiguration is one of a broker source's settings.
type SourceAccessConfiguration struct {
	Type string
	URI  string
}

// Mapping is a stored mapping: its document, its account and whether it is
// to be enabled (the State says whether it is). HoldSeconds is a broker
// source's hold; BasicAuth a RabbitMQ source's USER:PASSWORD (the
// document shows it masked).
type Mapping struct {
	Configuration
	Account     string
	Enabled     bool
	HoldSeconds int    `json:",omitempty"`
	BasicAuth   string `json:",omitempty"`
}

// NATS tells whether the mapping reads a NATS stream.
func (m *Mapping) NATS() bool {
	return m.SelfManagedEventSource != nil && m.SelfManagedEventSource.Endpoints[NATSServersKey] != nil
}

// RabbitMQ tells whether the mapping reads a RabbitMQ queue (its
// EventSourceArn names an Amazon MQ broker).
func (m *Mapping) RabbitMQ() bool { return IsBrokerARN(m.EventSourceArn) }

// IsBrokerARN tells whether arn names an Amazon MQ broker.
func IsBrokerARN(arn string) bool { return strings.HasPrefix(arn, "arn:aws:mq:") }

// SetRabbitMQ makes the mapping read src, keeping its password out of
// the document.
func (m *Mapping) SetRabbitMQ(src RabbitMQ) {
	m.SelfManagedEventSource = &SelfManagedEventSource{Endpoints: map[string][]string{RabbitMQBrokersKey: {src.URL}}}
	m.Queues = []string{src.Queue}
	m.BasicAuth = src.User + ":" + src.Password
	m.SourceAccessConfigurations = []SourceAccessConfiguration{{Type: BasicAuth, URI: src.User + ":********"}, {Type: VirtualHost, URI: src.VirtualHost}}
}

// RabbitMQSource is the queue a RabbitMQ mapping reads.
func (m *Mapping) RabbitMQSource() RabbitMQ {
	src := RabbitMQ{URL: m.SelfManagedEventSource.Endpoints[RabbitMQBrokersKey][0], Queue: m.Queues[0], ARN: m.EventSourceArn}
	src.User, src.Password, _ = strings.Cut(m.BasicAuth, ":")
	for _, c := range m.SourceAccessConfigurations {
		if c.Type == VirtualHost {
			src.VirtualHost = c.URI
		}
	}
	return src
}

// SourceKey names the mapping's source: two mappings of one function may
// not share it.
func (m *Mapping) SourceKey() string {
	if m.SelfManagedEventSource == nil {
		return m.EventSourceArn
	}
	return fmt.Sprint(m.EventSourceArn, m.SelfManagedEventSource.Endpoints, m.Queues, m.Topics)
}

// NATSServers is a NATS source's server URLs, comma-separated.
func (m *Mapping) NATSServers() string {
	return strings.Join(m.SelfManagedEventSource.Endpoints[NATSServersKey], ",")
}

// Filters parses the mapping's filter patterns (checked when stored).
func (m *Mapping) Filters() (eventfilter.Filters, error) {
	var ps []string
	if m.FilterCriteria != nil {
		for _, f := range m.FilterCriteria.Filters {
			ps = append(ps, f.Pattern)
		}
	}
	return eventfilter.ParseAll(ps)
}

// Reports tells whether the function reports batch item failures.
func (m *Mapping) Reports() bool {
	for _, t := range m.FunctionResponseTypes {
		if t == ReportBatchItemFailures {
			return true
		}
	}
	return false
}

// MaxConcurrency is the most batches the mapping runs at once.
func (m *Mapping) MaxConcurrency() int {
	if m.ScalingConfig != nil && m.ScalingConfig.MaximumConcurrency != nil {
		return *m.ScalingConfig.MaximumConcurrency
	}
	return DefaultMaxConcurrency
}

// DefaultMaxConcurrency bounds a mapping without ScalingConfig (Lambda
// scales SQS pollers to 1,250 concurrent invokes).
const DefaultMaxConcurrency = 1250

const (
	bucket      = "kiln-esm"
	leaseBucket = "kiln-esm-leases"
)

// ErrNotFound is returned for a UUID no mapping has.
var ErrNotFound = errors.New("event source mapping not found")

// ErrConflict is returned when a mapping changed since it was read.
var ErrConflict = errors.New("event source mapping changed concurrently")

// Store keeps mappings in JetStream KV, read so that a mapping is found
// right after it was created (natsd.KV.Read) and listed (natsd.KV.ReadKeys).
type Store struct{ kv *natsd.KV }

// OpenStore opens (creating it if needed) the mappings' bucket.
func OpenStore(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := natsd.OpenKV(ctx, js, jetstream.KeyValueConfig{Bucket: bucket, History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("esm: %w", err)
	}
	return &Store{kv: kv}, nil
}

// Create stores a new mapping.
func (s *Store) Create(ctx context.Context, m *Mapping) error {
	b, _ := json.Marshal(m)
	_, err := s.kv.Create(ctx, m.UUID, b)
	return err
}

// Get reads a mapping and its revision.
func (s *Store) Get(ctx context.Context, uuid string) (*Mapping, uint64, error) {
	v, rev, err := s.kv.Read(ctx, uuid)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	var m Mapping
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, 0, fmt.Errorf("mapping %s: %w", uuid, err)
	}
	return &m, rev, nil
}

// Modify changes a mapping by compare-and-set, retrying on a concurrent
// change; change's error aborts.
func (s *Store) Modify(ctx context.Context, uuid string, change func(*Mapping) error) (*Mapping, error) {
	for range 10 {
		m, rev, err := s.Get(ctx, uuid)
		if err != nil {
			return nil, err
		}
		if err := change(m); err != nil {
			return nil, err
		}
		b, _ := json.Marshal(m)
		_, err = s.kv.Update(ctx, uuid, b, rev)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			continue
		}
		return m, err
	}
	return nil, ErrConflict
}

// Remove deletes a mapping's key.
func (s *Store) Remove(ctx context.Context, uuid string) error {
	err := s.kv.Delete(ctx, uuid)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// List returns every mapping, sorted by UUID.
func (s *Store) List(ctx context.Context) ([]*Mapping, error) {
	keys, err := s.kv.ReadKeys(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []*Mapping
	for _, k := range keys {
		m, _, err := s.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UUID < out[j].UUID })
	return out, nil
}

// now is the LastModified clock: seconds, as Lambda's epoch float.
func now() float64 { return float64(time.Now().UnixMilli()) / 1000 }
