package esm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StreamSource is a stream a mapping reads: ordered shards (Kinesis) or
// partitions (Kafka). Every stream source runs the conformance suite
// (streamsource_test.go).
type StreamSource interface {
	// Shards lists the stream's shards.
	Shards(ctx context.Context) ([]string, error)
	// Start is the checkpoint a shard's reading begins after at a starting
	// position (at is AT_TIMESTAMP's time): "" before its first record.
	Start(ctx context.Context, shard, position string, at time.Time) (string, error)
	// Open reads a shard after a checkpoint ("" from its first record).
	Open(ctx context.Context, shard, after string) (ShardReader, error)
	// Event is the invoke's event for records of a shard, as Lambda's
	// fields; a tumbling window adds its own.
	Event(shard string, recs []StreamRecord) map[string]any
	// BatchInfo names records of a shard in a failure destination's
	// record: its field's name and value.
	BatchInfo(shard string, recs []StreamRecord) (string, any)
	Close()
}

// ShardReader reads one shard in order.
type ShardReader interface {
	// Read returns up to max records, waiting up to wait for the first.
	Read(ctx context.Context, max int, wait time.Duration) ([]StreamRecord, error)
	Close()
}

// A Kafka source is a topic of a Kafka the user runs, named as Lambda's
// self-managed Kafka: Endpoints KAFKA_BOOTSTRAP_SERVERS, Topics [TOPIC],
// SelfManagedKafkaEventSourceConfig.ConsumerGroupId. Each partition is a
// shard, read with franz-go from the mapping's checkpoint (JetStream KV,
// as every stream's); the checkpoint is also committed to the consumer
// group, so Kafka's own tools show the mapping's lag.
type kafkaSource struct {
	servers []string
	topic   string
	group   string
	cl      *kgo.Client
	adm     *kadm.Client
}

// OpenKafka opens a topic of the Kafka at servers (HOST:PORT).
func OpenKafka(servers []string, topic, group string) (StreamSource, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(servers...))
	if err != nil {
		return nil, fmt.Errorf("kafka %s: %w", strings.Join(servers, ","), err)
	}
	return &kafkaSource{servers: servers, topic: topic, group: group, cl: cl, adm: kadm.NewClient(cl)}, nil
}

func (s *kafkaSource) Close() { s.cl.Close() }

func (s *kafkaSource) Shards(ctx context.Context) ([]string, error) {
	tds, err := s.adm.ListTopics(ctx, s.topic)
	if err != nil {
		return nil, fmt.Errorf("kafka topic %s: %w", s.topic, err)
	}
	td, ok := tds[s.topic]
	if !ok {
		return nil, fmt.Errorf("kafka topic %s: not found", s.topic)
	}
	if td.Err != nil {
		return nil, fmt.Errorf("kafka topic %s: %w", s.topic, td.Err)
	}
	var out []string
	for _, p := range td.Partitions.Numbers() {
		out = append(out, s.topic+"-"+strconv.Itoa(int(p)))
	}
	sort.Strings(out)
	return out, nil
}

// partition is a shard's partition number ("TOPIC-N").
func (s *kafkaSource) partition(shard string) (int32, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(shard, s.topic+"-"), 10, 32)
	if err != nil || !strings.HasPrefix(shard, s.topic+"-") {
		return 0, fmt.Errorf("kafka: %q is no partition of %s", shard, s.topic)
	}
	return int32(n), nil
}

func (s *kafkaSource) Start(ctx context.Context, shard, position string, at time.Time) (string, error) {
	p, err := s.partition(shard)
	if err != nil {
		return "", err
	}
	var offs kadm.ListedOffsets
	switch position {
	case TrimHorizon:
		return "", nil
	case AtTimestamp:
		offs, err = s.adm.ListOffsetsAfterMilli(ctx, at.UnixMilli(), s.topic)
	default:
		offs, err = s.adm.ListEndOffsets(ctx, s.topic)
	}
	if err != nil {
		return "", fmt.Errorf("kafka offsets of %s: %w", shard, err)
	}
	o, ok := offs.Lookup(s.topic, p)
	if !ok || o.Err != nil {
		return "", fmt.Errorf("kafka offsets of %s: %v", shard, o.Err)
	}
	if o.Offset <= 0 {
		return "", nil
	}
	return strconv.FormatInt(o.Offset-1, 10), nil
}

// Commit records a checkpoint in the consumer group, for Kafka's tools.
func (s *kafkaSource) Commit(ctx context.Context, shard, checkpoint string) error {
	p, err := s.partition(shard)
	if err != nil || checkpoint == "" {
		return err
	}
	off, err := strconv.ParseInt(checkpoint, 10, 64)
	if err != nil {
		return err
	}
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: s.topic, Partition: p, At: off + 1, LeaderEpoch: -1})
	resp, err := s.adm.CommitOffsets(ctx, s.group, os)
	if err == nil {
		err = resp.Error()
	}
	return err
}

func (s *kafkaSource) Open(ctx context.Context, shard, after string) (ShardReader, error) {
	p, err := s.partition(shard)
	if err != nil {
		return nil, err
	}
	from := kgo.NewOffset().AtStart()
	if after != "" {
		n, err := strconv.ParseInt(after, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("kafka checkpoint %q of %s: %w", after, shard, err)
		}
		from = kgo.NewOffset().At(n + 1)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.servers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.topic: {p: from}}))
	if err != nil {
		return nil, err
	}
	return &kafkaReader{s: s, cl: cl}, nil
}

type kafkaReader struct {
	s  *kafkaSource
	cl *kgo.Client
}

func (r *kafkaReader) Close() { r.cl.Close() }

// kafkaRecord is a Kafka record as Lambda delivers it.
type kafkaRecord struct {
	Topic         string             `json:"topic"`
	Partition     int32              `json:"partition"`
	Offset        int64              `json:"offset"`
	Timestamp     int64              `json:"timestamp"`
	TimestampType string             `json:"timestampType"`
	Key           *string            `json:"key,omitempty"`
	Value         *string            `json:"value,omitempty"`
	Headers       []map[string][]int `json:"headers"`
}

func (r *kafkaReader) Read(ctx context.Context, n int, wait time.Duration) ([]StreamRecord, error) {
	pctx, cancel := context.WithTimeout(ctx, max(wait, 10*time.Millisecond))
	defer cancel()
	fs := r.cl.PollRecords(pctx, n)
	for _, e := range fs.Errors() {
		if !errors.Is(e.Err, context.DeadlineExceeded) && !errors.Is(e.Err, context.Canceled) {
			return nil, fmt.Errorf("kafka %s-%d: %w", e.Topic, e.Partition, e.Err)
		}
	}
	var out []StreamRecord
	for _, rec := range fs.Records() {
		kr := kafkaRecord{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Timestamp: rec.Timestamp.UnixMilli(),
			TimestampType: "CREATE_TIME", Headers: make([]map[string][]int, 0, len(rec.Headers))}
		if rec.Attrs.TimestampType() == 1 {
			kr.TimestampType = "LOG_APPEND_TIME"
		}
		if rec.Key != nil {
			k := base64.StdEncoding.EncodeToString(rec.Key)
			kr.Key = &k
		}
		if rec.Value != nil {
			v := base64.StdEncoding.EncodeToString(rec.Value)
			kr.Value = &v
		}
		for _, h := range rec.Headers {
			b := make([]int, len(h.Value))
			for i, c := range h.Value {
				b[i] = int(c)
			}
			kr.Headers = append(kr.Headers, map[string][]int{h.Key: b})
		}
		data, err := json.Marshal(&kr)
		if err != nil {
			return nil, err
		}
		off := strconv.FormatInt(rec.Offset, 10)
		out = append(out, StreamRecord{Position: off, ID: off, Key: string(rec.Key), Arrival: rec.Timestamp, Data: data,
			Filter: filterView(data, "value", rec.Value)})
	}
	return out, nil
}

// filterView is a record as FilterCriteria see it: its field holding the
// base64 payload replaced by the payload, decoded as JSON when it is JSON.
func filterView(record []byte, field string, payload []byte) any {
	var m map[string]any
	if json.Unmarshal(record, &m) != nil {
		return nil
	}
	var v any
	if json.Unmarshal(payload, &v) == nil {
		m[field] = v
	} else if payload != nil {
		m[field] = string(payload)
	}
	return m
}

func (s *kafkaSource) Event(shard string, recs []StreamRecord) map[string]any {
	raw := make([]json.RawMessage, len(recs))
	for i, r := range recs {
		raw[i] = r.Data
	}
	return map[string]any{"eventSource": "SelfManagedKafka", "bootstrapServers": strings.Join(s.servers, ","),
		"records": map[string][]json.RawMessage{shard: raw}}
}

func (s *kafkaSource) BatchInfo(shard string, recs []StreamRecord) (string, any) {
	p, _ := s.partition(shard)
	first, _ := strconv.ParseInt(recs[0].Position, 10, 64)
	last, _ := strconv.ParseInt(recs[len(recs)-1].Position, 10, 64)
	return "KafkaBatchInfo", map[string]any{"bootstrapServers": strings.Join(s.servers, ","), "consumerGroupId": s.group,
		"topic": s.topic, "partition": p, "startOffset": first, "endOffset": last, "batchSize": len(recs),
		"approximateArrivalOfFirstRecord": isoMilli(recs[0].Arrival), "approximateArrivalOfLastRecord": isoMilli(recs[len(recs)-1].Arrival)}
}

// isoMilli is Lambda's timestamp format in destination records.
func isoMilli(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
