package esm

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/streams"
)

// Streams is Kiln's stream service (Kinesis API), as the Kinesis source
// reads it: in process, no HTTP.
type Streams interface {
	Shards(ctx context.Context, account, name string) ([]streams.Shard, error)
	Read(ctx context.Context, account, name, shardID string, from streams.Position, limit int) (*streams.Batch, error)
}

// kinesisSource reads a Kiln stream (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME).
type kinesisSource struct {
	s                     Streams
	arn, region           string
	account, name, mapper string
}

// OpenKinesis opens a Kiln stream as a source; mapping is the mapping's
// ARN, the records' invokeIdentityArn (Kiln has no IAM roles: the mapping
// is what invokes).
func OpenKinesis(s Streams, arn, mapping string) (StreamSource, error) {
	region, account, name, err := streams.ParseARN(arn)
	if err != nil {
		return nil, err
	}
	return &kinesisSource{s: s, arn: arn, region: region, account: account, name: name, mapper: mapping}, nil
}

func (k *kinesisSource) Close() {}

func (k *kinesisSource) Shards(ctx context.Context) ([]string, error) {
	shards, err := k.s.Shards(ctx, k.account, k.name)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(shards))
	for i, s := range shards {
		out[i] = s.ID
	}
	return out, nil
}

// A Kinesis checkpoint is the sequence number of the last record
// processed, or "at:" and the number the next record will have (a starting
// position resolved before any record came).
const atPrefix = "at:"

func (k *kinesisSource) Start(ctx context.Context, shard, position string, at time.Time) (string, error) {
	if position == TrimHorizon {
		return "", nil
	}
	if position == AtTimestamp {
		b, err := k.s.Read(ctx, k.account, k.name, shard, streams.Position{Type: streams.AtTimestamp, Timestamp: at}, 1)
		if err != nil {
			return "", err
		}
		if len(b.Records) > 0 {
			return atPrefix + b.Records[0].SequenceNumber, nil
		}
		// None at or after it yet: every later record is.
	}
	b, err := k.s.Read(ctx, k.account, k.name, shard, streams.Position{Type: streams.Latest}, 1)
	if err != nil {
		return "", err
	}
	if len(b.Records) > 0 {
		return atPrefix + b.Records[0].SequenceNumber, nil
	}
	if b.Next.Type != streams.AtSequenceNumber {
		return "", fmt.Errorf("stream %s shard %s: LATEST resolved to %s", k.name, shard, b.Next.Type)
	}
	return atPrefix + b.Next.SequenceNumber, nil
}

func (k *kinesisSource) Open(ctx context.Context, shard, after string) (ShardReader, error) {
	from := streams.Position{Type: streams.TrimHorizon}
	if seq, ok := strings.CutPrefix(after, atPrefix); ok {
		from = streams.Position{Type: streams.AtSequenceNumber, SequenceNumber: seq}
	} else if after != "" {
		from = streams.Position{Type: streams.AfterSequenceNumber, SequenceNumber: after}
	}
	return &kinesisReader{k: k, shard: shard, next: from}, nil
}

// kinesisReader polls a shard: Kiln's streams answer at once, so a read
// that finds nothing looks again every kinesisPoll until its wait ends.
type kinesisReader struct {
	k     *kinesisSource
	shard string
	next  streams.Position
}

const kinesisPoll = 50 * time.Millisecond

func (r *kinesisReader) Close() {}

// kinesisData is a Kinesis record's kinesis object, as Lambda delivers it.
type kinesisData struct {
	KinesisSchemaVersion        string  `json:"kinesisSchemaVersion"`
	PartitionKey                string  `json:"partitionKey"`
	SequenceNumber              string  `json:"sequenceNumber"`
	Data                        []byte  `json:"data"` // base64
	ApproximateArrivalTimestamp float64 `json:"approximateArrivalTimestamp"`
}

// kinesisRecord is a Kinesis record as Lambda delivers it.
type kinesisRecord struct {
	Kinesis           kinesisData `json:"kinesis"`
	EventSource       string      `json:"eventSource"`
	EventVersion      string      `json:"eventVersion"`
	EventID           string      `json:"eventID"`
	EventName         string      `json:"eventName"`
	InvokeIdentityArn string      `json:"invokeIdentityArn"`
	AwsRegion         string      `json:"awsRegion"`
	EventSourceARN    string      `json:"eventSourceARN"`
}

func (r *kinesisReader) Read(ctx context.Context, n int, wait time.Duration) ([]StreamRecord, error) {
	k := r.k
	deadline := time.Now().Add(wait)
	for {
		b, err := k.s.Read(ctx, k.account, k.name, r.shard, r.next, min(n, 10000))
		if err != nil {
			return nil, err
		}
		r.next = b.Next
		if len(b.Records) > 0 {
			out := make([]StreamRecord, len(b.Records))
			for i, rec := range b.Records {
				kd := kinesisData{KinesisSchemaVersion: "1.0", PartitionKey: rec.PartitionKey, SequenceNumber: rec.SequenceNumber,
					Data: rec.Data, ApproximateArrivalTimestamp: float64(rec.ApproximateArrivalTimestamp.UnixMilli()) / 1000}
				data, err := json.Marshal(&kinesisRecord{Kinesis: kd, EventSource: "aws:kinesis", EventVersion: "1.0",
					EventID: r.shard + ":" + rec.SequenceNumber, EventName: "aws:kinesis:record", InvokeIdentityArn: k.mapper,
					AwsRegion: k.region, EventSourceARN: k.arn})
				if err != nil {
					return nil, err
				}
				view, _ := json.Marshal(&kd)
				out[i] = StreamRecord{Position: rec.SequenceNumber, ID: rec.SequenceNumber, Key: rec.PartitionKey,
					Arrival: rec.ApproximateArrivalTimestamp, Data: data, Filter: filterView(view, "data", rec.Data)}
			}
			return out, nil
		}
		if !time.Now().Add(kinesisPoll).Before(deadline) {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(kinesisPoll):
		}
	}
}

func (k *kinesisSource) Event(shard string, recs []StreamRecord) map[string]any {
	raw := make([]json.RawMessage, len(recs))
	for i, r := range recs {
		raw[i] = r.Data
	}
	return map[string]any{"Records": raw}
}

func (k *kinesisSource) BatchInfo(shard string, recs []StreamRecord) (string, any) {
	return "KinesisBatchInfo", map[string]any{"shardId": shard, "startSequenceNumber": recs[0].Position,
		"endSequenceNumber": recs[len(recs)-1].Position, "approximateArrivalOfFirstRecord": isoMilli(recs[0].Arrival),
		"approximateArrivalOfLastRecord": isoMilli(recs[len(recs)-1].Arrival), "batchSize": len(recs), "streamArn": k.arn}
}
