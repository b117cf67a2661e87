package esm

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/eventfilter"
)

// Request is the body of CreateEventSourceMapping and
// UpdateEventSourceMapping: what a caller may set.
type Request struct {
	EventSourceArn                 *string
	FunctionName                   *string
	Enabled                        *bool
	BatchSize                      *int
	MaximumBatchingWindowInSeconds *int
	FilterCriteria                 *FilterCriteria
	FunctionResponseTypes          *[]string
	ScalingConfig                  *ScalingConfig

	// Settings of other sources (streams, brokers): refused for queues.
	StartingPosition           *string
	StartingPositionTimestamp  *float64
	ParallelizationFactor      *int
	MaximumRetryAttempts       *int
	MaximumRecordAgeInSeconds  *int
	BisectBatchOnFunctionError *bool
	TumblingWindowInSeconds    *int
	DestinationConfig          *api.DestinationConfig

	// A RabbitMQ source: credentials and virtual host.
	SourceAccessConfigurations *[]SourceAccessConfiguration

	// A Kafka source's consumer group.
	SelfManagedKafkaEventSourceConfig *KafkaConfig

	// A NATS source: servers, stream, subject filter. A RabbitMQ source:
	// the broker's URL, the queue.
	SelfManagedEventSource *SelfManagedEventSource
	Queues                 *[]string
	Topics                 *[]string
}

// Kind is a kind of source, as a mapping's checks tell them apart.
type Kind int

// Kinds of sources.
const (
	KindQueue     Kind = iota // a Kiln queue
	KindFifoQueue             // a Kiln FIFO queue
	KindNATS                  // a stream of a user's NATS
	KindKinesis               // a Kiln stream (Kinesis API)
	KindKafka                 // a topic of a user's Kafka
	KindRabbitMQ              // a queue of a user's RabbitMQ
)

// Limits of a mapping.
const (
	DefaultBatchSize       = 10  // of a Kiln queue, as SQS's
	DefaultBrokerBatchSize = 100 // of a NATS stream or a RabbitMQ queue, as Amazon MQ's
	MaxBatchSize           = 10000
	MaxFifoBatchSize       = 10
	MaxWindow              = 300
	MaxFilters             = 5
	// MaxPayload is the most a batch's payload holds (Lambda's synchronous
	// invoke limit).
	MaxPayload = 6 << 20
)

func validation(value any, field, constraint string) *api.Error {
	v := "null"
	if value != nil {
		v = fmt.Sprintf("'%v'", value)
	}
	return api.Errorf(api.InvalidParameterValue, "1 validation error detected: Value %s at '%s' failed to satisfy constraint: %s", v, field, constraint)
}

// Check validates a request as Lambda's model and its rules for the kind
// of source do; create tells CreateEventSourceMapping from
// UpdateEventSourceMapping.
func (r *Request) Check(kind Kind, create bool) error {
	fifo, stream := kind == KindFifoQueue, kind == KindKinesis || kind == KindKafka
	if n := r.BatchSize; n != nil {
		switch {
		case *n < 1:
			return validation(*n, "batchSize", "Member must have value greater than or equal to 1")
		case *n > MaxBatchSize:
			return validation(*n, "batchSize", "Member must have value less than or equal to 10000")
		case fifo && *n > MaxFifoBatchSize:
			return api.Errorf(api.InvalidParameterValue, "BatchSize must be less than or equal to 10 for SQS FIFO queues.")
		}
	}
	if w := r.MaximumBatchingWindowInSeconds; w != nil {
		switch {
		case *w < 0:
			return validation(*w, "maximumBatchingWindowInSeconds", "Member must have value greater than or equal to 0")
		case *w > MaxWindow:
			return validation(*w, "maximumBatchingWindowInSeconds", "Member must have value less than or equal to 300")
		case fifo && *w > 0:
			return api.Errorf(api.InvalidParameterValue, "Batching window is not supported for FIFO queues")
		}
	}
	if !stream && r.BatchSize != nil && *r.BatchSize > 10 && (r.MaximumBatchingWindowInSeconds == nil || *r.MaximumBatchingWindowInSeconds == 0) {
		return api.Errorf(api.InvalidParameterValue, "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10")
	}
	if sc := r.ScalingConfig; sc != nil && sc.MaximumConcurrency != nil {
		switch n := *sc.MaximumConcurrency; {
		case n < 2:
			return validation(n, "scalingConfig.maximumConcurrency", "Member must have value greater than or equal to 2")
		case n > 1000:
			return validation(n, "scalingConfig.maximumConcurrency", "Member must have value less than or equal to 1000")
		}
	}
	if t := r.FunctionResponseTypes; t != nil {
		for _, v := range *t {
			if v != ReportBatchItemFailures {
				return validation(fmt.Sprintf("[%s]", strings.Join(*t, ", ")), "functionResponseTypes",
					"Member must satisfy constraint: [Member must satisfy enum value set: [ReportBatchItemFailures]]")
			}
		}
	}
	if fc := r.FilterCriteria; fc != nil {
		if len(fc.Filters) > MaxFilters {
			return api.Errorf(api.InvalidParameterValue, "The maximum number of filters (%d) per event source mapping has been exceeded.", MaxFilters)
		}
		for i, f := range fc.Filters {
			if len(f.Pattern) > eventfilter.MaxLength {
				return validation(f.Pattern, fmt.Sprintf("filterCriteria.filters.%d.member.pattern", i+1), "Member must have length less than or equal to 4096")
			}
			if _, err := eventfilter.Parse(f.Pattern); err != nil {
				return api.Errorf(api.InvalidParameterValue, "Invalid filter pattern definition. %s", strings.TrimPrefix(err.Error(), eventfilter.ErrInvalid.Error()+": "))
			}
		}
	}
	if stream {
		return r.checkStream(kind, create)
	}
	source, nats, rabbit := "SQS", kind == KindNATS, kind == KindRabbitMQ
	switch {
	case nats:
		source = "NATS"
	case rabbit:
		source = "MQ"
	}
	broker := nats || rabbit
	for name, set := range map[string]bool{
		"FunctionResponseTypes": r.FunctionResponseTypes != nil && rabbit,
		"StartingPosition":      r.StartingPosition != nil, "StartingPositionTimestamp": r.StartingPositionTimestamp != nil,
		"ParallelizationFactor": r.ParallelizationFactor != nil, "MaximumRetryAttempts": r.MaximumRetryAttempts != nil,
		"MaximumRecordAgeInSeconds": r.MaximumRecordAgeInSeconds != nil, "BisectBatchOnFunctionError": r.BisectBatchOnFunctionError != nil,
		"TumblingWindowInSeconds": r.TumblingWindowInSeconds != nil, "DestinationConfig": r.DestinationConfig != nil,
		"SourceAccessConfigurations": r.SourceAccessConfigurations != nil && !rabbit, "SelfManagedKafkaEventSourceConfig": r.SelfManagedKafkaEventSourceConfig != nil,
		"Topics": r.Topics != nil && !nats, "Queues": r.Queues != nil && !broker, "SelfManagedEventSource": r.SelfManagedEventSource != nil && !broker,
	} {
		if set {
			return api.Errorf(api.InvalidParameterValue, "Unsupported %s parameter for %s event source.", name, source)
		}
	}
	return nil
}

var streamNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// CheckNATS checks a new mapping's NATS source: servers, one stream, at
// most one subject.
func (r *Request) CheckNATS() error {
	if r.SelfManagedEventSource == nil || len(r.SelfManagedEventSource.Endpoints[NATSServersKey]) == 0 ||
		len(r.SelfManagedEventSource.Endpoints) != 1 {
		return api.Errorf(api.InvalidParameterValue, "A NATS event source takes SelfManagedEventSource.Endpoints %s: the server URLs.", NATSServersKey)
	}
	for _, u := range r.SelfManagedEventSource.Endpoints[NATSServersKey] {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") || strings.ContainsAny(u, ", ") {
			return api.Errorf(api.InvalidParameterValue, "Invalid NATS server URL %q: nats://HOST:PORT or tls://HOST:PORT.", u)
		}
	}
	if r.Queues == nil || len(*r.Queues) != 1 || !streamNameRe.MatchString((*r.Queues)[0]) {
		return api.Errorf(api.InvalidParameterValue, "A NATS event source takes Queues: the name of one JetStream stream.")
	}
	if r.Topics != nil && (len(*r.Topics) > 1 || len(*r.Topics) == 1 && (*r.Topics)[0] == "") {
		return api.Errorf(api.InvalidParameterValue, "A NATS event source takes at most one subject filter in Topics.")
	}
	return nil
}

var rabbitQueueRe = regexp.MustCompile(`^[\s\S]{1,1000}$`)

// CheckRabbitMQ checks a new mapping's RabbitMQ source and returns it:
// the broker's URL, one queue, BASIC_AUTH USER:PASSWORD and optionally a
// VIRTUAL_HOST ("/" when not given).
func (r *Request) CheckRabbitMQ(arn string) (RabbitMQ, error) {
	if r.SelfManagedEventSource == nil || len(r.SelfManagedEventSource.Endpoints[RabbitMQBrokersKey]) != 1 ||
		len(r.SelfManagedEventSource.Endpoints) != 1 {
		return RabbitMQ{}, api.Errorf(api.InvalidParameterValue, "A RabbitMQ event source takes SelfManagedEventSource.Endpoints %s: the broker's URL.", RabbitMQBrokersKey)
	}
	src := RabbitMQ{URL: r.SelfManagedEventSource.Endpoints[RabbitMQBrokersKey][0], VirtualHost: "/", ARN: arn}
	if u, err := url.Parse(src.URL); err != nil || u.Scheme != "amqp" && u.Scheme != "amqps" || u.Host == "" || u.User != nil || u.Path != "" {
		return RabbitMQ{}, api.Errorf(api.InvalidParameterValue, "Invalid RabbitMQ broker URL %q: amqp://HOST:PORT or amqps://HOST:PORT, credentials in BASIC_AUTH.", src.URL)
	}
	if r.Queues == nil || len(*r.Queues) != 1 || !rabbitQueueRe.MatchString((*r.Queues)[0]) {
		return RabbitMQ{}, api.Errorf(api.InvalidParameterValue, "A RabbitMQ event source takes Queues: the name of one queue.")
	}
	src.Queue = (*r.Queues)[0]
	var auth, vhost int
	if r.SourceAccessConfigurations != nil {
		for _, c := range *r.SourceAccessConfigurations {
			switch c.Type {
			case BasicAuth:
				auth++
				var ok bool
				if src.User, src.Password, ok = strings.Cut(c.URI, ":"); !ok || src.User == "" {
					return RabbitMQ{}, api.Errorf(api.InvalidParameterValue, "BASIC_AUTH of a RabbitMQ event source in Kiln is USER:PASSWORD.")
				}
			case VirtualHost:
				vhost++
				src.VirtualHost = c.URI
			default:
				return RabbitMQ{}, api.Errorf(api.InvalidParameterValue, "Unsupported source access configuration %s for MQ event source.", c.Type)
			}
		}
	}
	if auth != 1 || vhost > 1 || src.VirtualHost == "" {
		return RabbitMQ{}, api.Errorf(api.InvalidParameterValue, "A RabbitMQ event source takes one BASIC_AUTH and at most one VIRTUAL_HOST source access configuration.")
	}
	return src, nil
}

// Apply sets what the request sets on m; on update, what it leaves out stays.
func (r *Request) Apply(m *Mapping) {
	if r.Enabled != nil {
		m.Enabled = *r.Enabled
	}
	if r.BatchSize != nil {
		m.BatchSize = *r.BatchSize
	}
	if r.MaximumBatchingWindowInSeconds != nil {
		m.MaximumBatchingWindowInSeconds = *r.MaximumBatchingWindowInSeconds
	}
	if r.FilterCriteria != nil {
		m.FilterCriteria = r.FilterCriteria
		if len(r.FilterCriteria.Filters) == 0 {
			m.FilterCriteria = nil
		}
	}
	if r.FunctionResponseTypes != nil {
		m.FunctionResponseTypes = *r.FunctionResponseTypes
	}
	if r.ScalingConfig != nil {
		m.ScalingConfig = r.ScalingConfig
		if r.ScalingConfig.MaximumConcurrency == nil {
			m.ScalingConfig = nil
		}
	}
	if m.StreamSettings != nil {
		r.applyStream(m.StreamSettings)
	}
	m.LastModified = now()
}

// CheckMerged checks the mapping an update would leave: a batch over 10
// still needs a window, whichever of the two the update changed.
func CheckMerged(m *Mapping) error {
	if !m.Stream() && m.BatchSize > 10 && m.MaximumBatchingWindowInSeconds == 0 {
		return api.Errorf(api.InvalidParameterValue, "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10")
	}
	return nil
}
