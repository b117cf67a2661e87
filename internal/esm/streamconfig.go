package esm

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
)

// Starting positions of a stream mapping.
const (
	TrimHorizon = "TRIM_HORIZON"
	Latest      = "LATEST"
	AtTimestamp = "AT_TIMESTAMP"
)

// KafkaServersKey is the Endpoints key of a Kafka source's bootstrap
// servers.
const KafkaServersKey = "KAFKA_BOOTSTRAP_SERVERS"

// Defaults and limits of stream mappings, as Lambda's.
const (
	DefaultStreamBatchSize = 100
	MaxParallelization     = 10
	MaxRetryAttempts       = 10000
	MinRecordAge           = 60
	MaxRecordAge           = 604800
	MaxTumblingWindow      = 900
)

// KafkaConfig is SelfManagedKafkaEventSourceConfig.
type KafkaConfig struct {
	ConsumerGroupId string `json:",omitempty"`
}

// StreamSettings are the fields of a stream mapping (Kinesis or Kafka)
// beyond a queue mapping's; nil on a queue mapping, so that its document
// stays as Lambda's.
type StreamSettings struct {
	StartingPosition                  string                 `json:",omitempty"`
	StartingPositionTimestamp         *float64               `json:",omitempty"`
	ParallelizationFactor             *int                   `json:",omitempty"`
	MaximumRecordAgeInSeconds         *int                   `json:",omitempty"`
	BisectBatchOnFunctionError        *bool                  `json:",omitempty"`
	MaximumRetryAttempts              *int                   `json:",omitempty"`
	TumblingWindowInSeconds           *int                   `json:",omitempty"`
	DestinationConfig                 *api.DestinationConfig `json:",omitempty"`
	SelfManagedKafkaEventSourceConfig *KafkaConfig           `json:",omitempty"`
}

// Kafka tells whether the mapping reads a Kafka topic.
func (m *Mapping) Kafka() bool {
	return m.SelfManagedEventSource != nil && len(m.SelfManagedEventSource.Endpoints[KafkaServersKey]) > 0
}

// Kinesis tells whether the mapping reads a Kiln stream.
func (m *Mapping) Kinesis() bool { return strings.HasPrefix(m.EventSourceArn, "arn:aws:kinesis:") }

// Stream tells whether the mapping reads shards (Kinesis, Kafka).
func (m *Mapping) Stream() bool { return m.Kafka() || m.Kinesis() }

// policy is what the decisions read of the mapping.
func (m *Mapping) policy() streamPolicy {
	pol := streamPolicy{maxRetries: -1}
	if s := m.StreamSettings; s != nil {
		if s.BisectBatchOnFunctionError != nil {
			pol.bisect = *s.BisectBatchOnFunctionError
		}
		if s.MaximumRetryAttempts != nil {
			pol.maxRetries = *s.MaximumRetryAttempts
		}
		if s.MaximumRecordAgeInSeconds != nil && *s.MaximumRecordAgeInSeconds > 0 {
			pol.maxAge = time.Duration(*s.MaximumRecordAgeInSeconds) * time.Second
		}
	}
	return pol
}

// parallelization is the concurrent batches per shard (1 with tumbling
// windows, whose state follows the shard's order).
func (m *Mapping) parallelization() int {
	if s := m.StreamSettings; s != nil && s.ParallelizationFactor != nil && m.window() == 0 {
		return max(*s.ParallelizationFactor, 1)
	}
	return 1
}

// window is the tumbling window, 0 for none.
func (m *Mapping) window() time.Duration {
	if s := m.StreamSettings; s != nil && s.TumblingWindowInSeconds != nil {
		return time.Duration(*s.TumblingWindowInSeconds) * time.Second
	}
	return 0
}

// onFailure is the failure destination's ARN, "" for none.
func (m *Mapping) onFailure() string {
	if s := m.StreamSettings; s != nil && s.DestinationConfig != nil && s.DestinationConfig.OnFailure != nil {
		return s.DestinationConfig.OnFailure.Destination
	}
	return ""
}

// NewStreamSettings are a new stream mapping's settings before the
// request's: Lambda's defaults for the kind.
func NewStreamSettings(kind Kind, uuid string) *StreamSettings {
	one, none, no := 1, -1, false
	zero := 0
	if kind == KindKafka {
		return &StreamSettings{SelfManagedKafkaEventSourceConfig: &KafkaConfig{ConsumerGroupId: uuid},
			MaximumRetryAttempts: &none, MaximumRecordAgeInSeconds: &none, BisectBatchOnFunctionError: &no}
	}
	return &StreamSettings{ParallelizationFactor: &one, MaximumRetryAttempts: &none, MaximumRecordAgeInSeconds: &none,
		BisectBatchOnFunctionError: &no, TumblingWindowInSeconds: &zero, DestinationConfig: &api.DestinationConfig{OnFailure: &api.OnFailure{}}}
}

// checkStream checks a stream mapping's own fields.
func (r *Request) checkStream(kind Kind, create bool) error {
	if p := r.StartingPosition; p != nil {
		switch *p {
		case TrimHorizon, Latest, AtTimestamp:
		default:
			return validation(*p, "startingPosition", "Member must satisfy enum value set: [TRIM_HORIZON, LATEST, AT_TIMESTAMP]")
		}
		if !create {
			return api.Errorf(api.InvalidParameterValue, "StartingPosition cannot be updated.")
		}
	} else if create {
		return validation(nil, "startingPosition", "Member must not be null")
	}
	if create && (*r.StartingPosition == AtTimestamp) != (r.StartingPositionTimestamp != nil) {
		return api.Errorf(api.InvalidParameterValue, "StartingPositionTimestamp must be set exactly when StartingPosition is AT_TIMESTAMP.")
	}
	for _, b := range []struct {
		v        *int
		field    string
		min, max int
	}{
		{r.ParallelizationFactor, "parallelizationFactor", 1, MaxParallelization},
		{r.MaximumRetryAttempts, "maximumRetryAttempts", -1, MaxRetryAttempts},
		{r.MaximumRecordAgeInSeconds, "maximumRecordAgeInSeconds", -1, MaxRecordAge},
		{r.TumblingWindowInSeconds, "tumblingWindowInSeconds", 0, MaxTumblingWindow},
	} {
		switch {
		case b.v == nil:
		case *b.v < b.min:
			return validation(*b.v, b.field, fmt.Sprintf("Member must have value greater than or equal to %d", b.min))
		case *b.v > b.max:
			return validation(*b.v, b.field, fmt.Sprintf("Member must have value less than or equal to %d", b.max))
		}
	}
	if a := r.MaximumRecordAgeInSeconds; a != nil && *a != -1 && *a < MinRecordAge {
		return api.Errorf(api.InvalidParameterValue, "MaximumRecordAgeInSeconds must be -1 or between %d and %d.", MinRecordAge, MaxRecordAge)
	}
	if d := r.DestinationConfig; d != nil {
		if d.OnSuccess != nil && d.OnSuccess.Destination != "" {
			return api.Errorf(api.InvalidParameterValue, "Unsupported DestinationConfig.OnSuccess parameter for stream event sources.")
		}
		if f := d.OnFailure; f != nil && f.Destination != "" {
			if _, err := api.ParseDestination(f.Destination); err != nil {
				return api.Errorf(api.InvalidParameterValue, "The provided destination config DestinationArn %s is invalid. %v.", f.Destination, err)
			}
		}
	}
	if r.SourceAccessConfigurations != nil {
		return api.Errorf(api.InvalidParameterValue, "Unsupported SourceAccessConfigurations parameter: Kiln reads plaintext Kafka brokers and its own streams.")
	}
	if kind == KindKinesis && (r.Topics != nil || r.Queues != nil || r.SelfManagedEventSource != nil) {
		return api.Errorf(api.InvalidParameterValue, "Unsupported Topics, Queues or SelfManagedEventSource parameter for Kinesis event source.")
	}
	if kind == KindKafka && r.TumblingWindowInSeconds != nil {
		return api.Errorf(api.InvalidParameterValue, "Unsupported TumblingWindowInSeconds parameter for Kafka event source.")
	}
	if r.ScalingConfig != nil {
		return api.Errorf(api.InvalidParameterValue, "Unsupported ScalingConfig parameter for stream event sources.")
	}
	if r.SelfManagedKafkaEventSourceConfig != nil && (kind != KindKafka || !create) {
		return api.Errorf(api.InvalidParameterValue, "SelfManagedKafkaEventSourceConfig is set only when a Kafka mapping is created.")
	}
	return nil
}

var topicRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)

// CheckKafka checks a new mapping's Kafka source: bootstrap servers
// (HOST:PORT), one topic, an optional consumer group id.
func (r *Request) CheckKafka() error {
	eps := r.SelfManagedEventSource.Endpoints
	if len(eps) != 1 || len(eps[KafkaServersKey]) == 0 || len(eps[KafkaServersKey]) > 10 {
		return api.Errorf(api.InvalidParameterValue, "A Kafka event source takes SelfManagedEventSource.Endpoints %s: one to ten HOST:PORT.", KafkaServersKey)
	}
	for _, s := range eps[KafkaServersKey] {
		if i := strings.LastIndexByte(s, ':'); i <= 0 || i == len(s)-1 || strings.ContainsAny(s, "/, ") {
			return api.Errorf(api.InvalidParameterValue, "Invalid bootstrap server %q: HOST:PORT.", s)
		}
	}
	if r.Topics == nil || len(*r.Topics) != 1 || !topicRe.MatchString((*r.Topics)[0]) {
		return api.Errorf(api.InvalidParameterValue, "A Kafka event source takes Topics: the name of one topic.")
	}
	if r.Queues != nil {
		return api.Errorf(api.InvalidParameterValue, "Unsupported Queues parameter for Kafka event source.")
	}
	if c := r.SelfManagedKafkaEventSourceConfig; c != nil && c.ConsumerGroupId != "" && !topicRe.MatchString(c.ConsumerGroupId) {
		return validation(c.ConsumerGroupId, "selfManagedKafkaEventSourceConfig.consumerGroupId", "Member must satisfy regular expression pattern: [a-zA-Z0-9-\\/*:_+=.@-]*")
	}
	return nil
}

// applyStream sets the stream fields the request sets.
func (r *Request) applyStream(s *StreamSettings) {
	if r.StartingPosition != nil {
		s.StartingPosition = *r.StartingPosition
	}
	if r.StartingPositionTimestamp != nil {
		s.StartingPositionTimestamp = r.StartingPositionTimestamp
	}
	for _, f := range []struct{ from, to **int }{
		{&r.ParallelizationFactor, &s.ParallelizationFactor}, {&r.MaximumRetryAttempts, &s.MaximumRetryAttempts},
		{&r.MaximumRecordAgeInSeconds, &s.MaximumRecordAgeInSeconds}, {&r.TumblingWindowInSeconds, &s.TumblingWindowInSeconds},
	} {
		if *f.from != nil {
			*f.to = *f.from
		}
	}
	if r.BisectBatchOnFunctionError != nil {
		s.BisectBatchOnFunctionError = r.BisectBatchOnFunctionError
	}
	if r.DestinationConfig != nil {
		s.DestinationConfig = r.DestinationConfig
	}
	if c := r.SelfManagedKafkaEventSourceConfig; c != nil && c.ConsumerGroupId != "" {
		s.SelfManagedKafkaEventSourceConfig = c
	}
}
