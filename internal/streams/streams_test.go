package streams_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/auth"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The service through aws-sdk-go-v2's Kinesis client over real HTTP and
// SigV4, on an embedded JetStream.

const (
	account  = "111111111111"
	other    = "222222222222"
	region   = "us-east-1"
	keyID    = "AKIDKINESISTEST00001"
	otherKey = "AKIDKINESISTEST00002"
	secret   = "kinesis-test-secret"
)

type env struct {
	svc    *streams.Service
	client *kinesis.Client // account's
	other  *kinesis.Client // another account's
	url    string
}

func newService(t *testing.T, nc *nats.Conn) *env {
	t.Helper()
	return newReplicated(t, nc, 0)
}

// newReplicated is newService with streams of replicas replicas.
func newReplicated(t *testing.T, nc *nats.Conn, replicas int) *env {
	t.Helper()
	svc, err := streams.New(context.Background(), streams.Config{NATS: nc, Region: region, Replicas: replicas,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	k := auth.NewKeyring(auth.Credential{AccessKeyID: keyID, SecretAccessKey: secret, Account: account},
		auth.Credential{AccessKeyID: otherKey, SecretAccessKey: secret, Account: other})
	k.Region = region
	limit := func(*http.Request) (int64, *api.Error) {
		return 16 << 20, api.Errorf(api.RequestTooLarge, "too large")
	}
	srv := httptest.NewServer(auth.Middleware(k, limit, svc.Handler()))
	t.Cleanup(srv.Close)
	client := func(id string) *kinesis.Client {
		return kilntest.Kinesis(srv.URL, region, credentials.NewStaticCredentialsProvider(id, secret, ""))
	}
	return &env{svc: svc, client: client(keyID), other: client(otherKey), url: srv.URL}
}

func mustCreate(t *testing.T, c *kinesis.Client, name string, shards int32) {
	t.Helper()
	if _, err := c.CreateStream(context.Background(), &kinesis.CreateStreamInput{StreamName: &name, ShardCount: &shards}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

func iterator(t *testing.T, c *kinesis.Client, in *kinesis.GetShardIteratorInput) *string {
	t.Helper()
	out, err := c.GetShardIterator(context.Background(), in)
	if err != nil {
		t.Fatalf("GetShardIterator %s: %v", in.ShardIteratorType, err)
	}
	return out.ShardIterator
}

// drain reads a shard from it until a read returns nothing.
func drain(t *testing.T, c *kinesis.Client, it *string) ([]types.Record, *string) {
	t.Helper()
	var all []types.Record
	for {
		out, err := c.GetRecords(context.Background(), &kinesis.GetRecordsInput{ShardIterator: it, Limit: aws.Int32(3)})
		if err != nil {
			t.Fatalf("GetRecords: %v", err)
		}
		it = out.NextShardIterator
		if len(out.Records) == 0 {
			if aws.ToInt64(out.MillisBehindLatest) != 0 {
				t.Errorf("caught up, MillisBehindLatest %d", aws.ToInt64(out.MillisBehindLatest))
			}
			return all, it
		}
		all = append(all, out.Records...)
	}
}

func TestStreamLifecycle(t *testing.T) {
	nc := natstest.Connect(t)
	e := newService(t, nc)
	c, ctx := e.client, context.Background()
	mustCreate(t, c, "orders.v1", 3)
	if _, err := c.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String("orders.v1"), ShardCount: aws.Int32(1)}); kilntest.ErrorCode(err) != "ResourceInUseException" {
		t.Errorf("second create: %v", err)
	}
	if _, err := c.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String("od"), StreamModeDetails: &types.StreamModeDetails{StreamMode: types.StreamModeOnDemand}}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*kinesis.CreateStreamInput{
		{StreamName: aws.String("bad/name"), ShardCount: aws.Int32(1)},
		{StreamName: aws.String(strings.Repeat("n", 129)), ShardCount: aws.Int32(1)},
		{StreamName: aws.String("zero"), ShardCount: aws.Int32(0)},
	} {
		if _, err := c.CreateStream(ctx, bad); kilntest.ErrorCode(err) != "ValidationException" {
			t.Errorf("create %q with %d shards: %v", aws.ToString(bad.StreamName), aws.ToInt32(bad.ShardCount), err)
		}
	}
	if _, err := c.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String("huge"), ShardCount: aws.Int32(501)}); kilntest.ErrorCode(err) != "LimitExceededException" {
		t.Errorf("501 shards: %v", err)
	}

	sum, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String("orders.v1")})
	if err != nil {
		t.Fatal(err)
	}
	d := sum.StreamDescriptionSummary
	arn := "arn:aws:kinesis:us-east-1:" + account + ":stream/orders.v1"
	if aws.ToString(d.StreamARN) != arn || d.StreamStatus != types.StreamStatusActive || aws.ToInt32(d.OpenShardCount) != 3 ||
		aws.ToInt32(d.RetentionPeriodHours) != 24 || d.StreamModeDetails.StreamMode != types.StreamModeProvisioned ||
		time.Since(aws.ToTime(d.StreamCreationTimestamp)) > time.Minute {
		t.Errorf("summary %+v", d)
	}
	// By ARN, and the other account does not see it.
	if _, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamARN: &arn}); err != nil {
		t.Errorf("by ARN: %v", err)
	}
	if _, err := e.other.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String("orders.v1")}); kilntest.ErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("other account: %v", err)
	}
	if _, err := e.other.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamARN: &arn}); kilntest.ErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("other account by ARN: %v", err)
	}

	// Shards: paged, contiguous ranges. The token names the stream; the
	// same name beside it is taken (botocore's paginator sends both), not
	// another.
	var shards []types.Shard
	var token *string
	for page := 0; ; page++ {
		in := &kinesis.ListShardsInput{MaxResults: aws.Int32(2), NextToken: token}
		if token == nil || page%2 == 0 {
			in.StreamName = aws.String("orders.v1")
		}
		out, err := c.ListShards(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		shards = append(shards, out.Shards...)
		if token = out.NextToken; token == nil {
			break
		}
		if _, err := c.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String("od"), NextToken: token}); kilntest.ErrorCode(err) != "InvalidArgumentException" {
			t.Errorf("NextToken of another stream: %v", err)
		}
	}
	if len(shards) != 3 || aws.ToString(shards[2].ShardId) != "shardId-000000000002" ||
		aws.ToString(shards[0].HashKeyRange.StartingHashKey) != "0" ||
		aws.ToString(shards[2].HashKeyRange.EndingHashKey) != "340282366920938463463374607431768211455" {
		t.Errorf("shards %+v", shards)
	}
	ds, err := c.DescribeStream(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String("orders.v1"), Limit: aws.Int32(2)})
	if err != nil || len(ds.StreamDescription.Shards) != 2 || !aws.ToBool(ds.StreamDescription.HasMoreShards) {
		t.Errorf("DescribeStream: %+v %v", ds, err)
	}

	ls, err := c.ListStreams(ctx, &kinesis.ListStreamsInput{Limit: aws.Int32(1)})
	if err != nil || len(ls.StreamNames) != 1 || ls.StreamNames[0] != "od" || !aws.ToBool(ls.HasMoreStreams) {
		t.Fatalf("ListStreams: %+v %v", ls, err)
	}
	ls, err = c.ListStreams(ctx, &kinesis.ListStreamsInput{NextToken: ls.NextToken})
	if err != nil || len(ls.StreamNames) != 1 || ls.StreamNames[0] != "orders.v1" || aws.ToBool(ls.HasMoreStreams) ||
		aws.ToString(ls.StreamSummaries[0].StreamARN) != arn {
		t.Fatalf("ListStreams page 2: %+v %v", ls, err)
	}
	if ls, err := e.other.ListStreams(ctx, &kinesis.ListStreamsInput{}); err != nil || len(ls.StreamNames) != 0 {
		t.Errorf("other account lists %v %v", ls.StreamNames, err)
	}

	// Retention: up, down, within 24 hours to a year, each way only.
	if _, err := c.IncreaseStreamRetentionPeriod(ctx, &kinesis.IncreaseStreamRetentionPeriodInput{StreamName: aws.String("orders.v1"), RetentionPeriodHours: aws.Int32(168)}); err != nil {
		t.Fatal(err)
	}
	for what, call := range map[string]func() error{
		"increase to 48 from 168": func() error {
			_, err := c.IncreaseStreamRetentionPeriod(ctx, &kinesis.IncreaseStreamRetentionPeriodInput{StreamName: aws.String("orders.v1"), RetentionPeriodHours: aws.Int32(48)})
			return err
		},
		"decrease to 200 from 168": func() error {
			_, err := c.DecreaseStreamRetentionPeriod(ctx, &kinesis.DecreaseStreamRetentionPeriodInput{StreamName: aws.String("orders.v1"), RetentionPeriodHours: aws.Int32(200)})
			return err
		},
		"increase to 8761": func() error {
			_, err := c.IncreaseStreamRetentionPeriod(ctx, &kinesis.IncreaseStreamRetentionPeriodInput{StreamName: aws.String("orders.v1"), RetentionPeriodHours: aws.Int32(8761)})
			return err
		},
		"decrease to 23": func() error {
			_, err := c.DecreaseStreamRetentionPeriod(ctx, &kinesis.DecreaseStreamRetentionPeriodInput{StreamName: aws.String("orders.v1"), RetentionPeriodHours: aws.Int32(23)})
			return err
		},
	} {
		if err := call(); kilntest.ErrorCode(err) != "InvalidArgumentException" {
			t.Errorf("%s: %v", what, err)
		}
	}
	if _, err := c.DecreaseStreamRetentionPeriod(ctx, &kinesis.DecreaseStreamRetentionPeriodInput{StreamName: aws.String("orders.v1"), RetentionPeriodHours: aws.Int32(72)}); err != nil {
		t.Fatal(err)
	}
	if sum, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String("orders.v1")}); err != nil ||
		aws.ToInt32(sum.StreamDescriptionSummary.RetentionPeriodHours) != 72 {
		t.Errorf("retention after the changes: %v %v", sum, err)
	}
	desc, err := e.svc.Describe(ctx, account, "orders.v1")
	if err != nil || desc.Retention != 72*time.Hour {
		t.Fatalf("Describe after the changes: %+v %v", desc, err)
	}
	js, _ := jetstream.New(nc)
	if st, err := js.Stream(ctx, "KILN_KINESIS_"+desc.ID); err != nil {
		t.Error(err)
	} else if age := st.CachedInfo().Config.MaxAge; age != 72*time.Hour {
		t.Errorf("the JetStream stream keeps records for %v", age)
	}

	// Records, then delete: gone, and its iterators with it.
	put, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String("orders.v1"), PartitionKey: aws.String("a"), Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	it := iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: aws.String("orders.v1"), ShardId: put.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
	if _, err := c.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String("orders.v1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String("orders.v1")}); kilntest.ErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("deleted: %v", err)
	}
	if _, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String("orders.v1"), PartitionKey: aws.String("a"), Data: []byte("x")}); kilntest.ErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("put to deleted: %v", err)
	}
	// A new stream of the same name is another: the old iterator does not
	// read it.
	mustCreate(t, c, "orders.v1", 3)
	if _, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it}); kilntest.ErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("iterator of a deleted stream: %v", err)
	}
	if _, err := c.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String("missing")}); kilntest.ErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("delete missing: %v", err)
	}
}

// Every iterator type, per-shard order and the hash routing, through
// PutRecord and PutRecords.
func TestPutAndIterate(t *testing.T) {
	e := newService(t, natstest.Connect(t))
	c, ctx := e.client, context.Background()
	name := aws.String("events")
	mustCreate(t, c, "events", 2)
	// Keys of both shards ("a" hashes to shard 0 of 2, "zzz" to shard 1).
	type put struct{ shard, seq, key, data string }
	var puts []put
	for i := range 5 {
		for _, k := range []string{"a", "zzz"} {
			out, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: name, PartitionKey: aws.String(k), Data: fmt.Appendf(nil, "%s-%d", k, i)})
			if err != nil {
				t.Fatal(err)
			}
			puts = append(puts, put{aws.ToString(out.ShardId), aws.ToString(out.SequenceNumber), k, fmt.Sprintf("%s-%d", k, i)})
		}
	}
	var entries []types.PutRecordsRequestEntry
	for i := 5; i < 10; i++ {
		entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String("a"), Data: fmt.Appendf(nil, "a-%d", i)},
			types.PutRecordsRequestEntry{PartitionKey: aws.String("ignored"), ExplicitHashKey: aws.String("340282366920938463463374607431768211455"), Data: fmt.Appendf(nil, "zzz-%d", i)})
	}
	batch, err := c.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: name, Records: entries})
	if err != nil || aws.ToInt32(batch.FailedRecordCount) != 0 || len(batch.Records) != 10 {
		t.Fatalf("PutRecords: %+v %v", batch, err)
	}
	for i, r := range batch.Records {
		puts = append(puts, put{aws.ToString(r.ShardId), aws.ToString(r.SequenceNumber), aws.ToString(entries[i].PartitionKey), string(entries[i].Data)})
	}
	byShard := map[string][]put{}
	for _, p := range puts {
		byShard[p.shard] = append(byShard[p.shard], p)
	}
	for shard, want := range map[string]string{"shardId-000000000000": "a", "shardId-000000000001": "zzz"} {
		ps := byShard[shard]
		if len(ps) != 10 {
			t.Fatalf("%s got %d records", shard, len(ps))
		}
		it := iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: &shard, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
		recs, _ := drain(t, c, it)
		if len(recs) != 10 {
			t.Fatalf("%s: read %d records", shard, len(recs))
		}
		for i, r := range recs {
			if string(r.Data) != fmt.Sprintf("%s-%d", want, i) || aws.ToString(r.SequenceNumber) != ps[i].seq ||
				aws.ToString(r.PartitionKey) != ps[i].key || time.Since(aws.ToTime(r.ApproximateArrivalTimestamp)) > time.Minute {
				t.Errorf("%s record %d: %s %s %s, want %s %s", shard, i, r.Data, aws.ToString(r.SequenceNumber), aws.ToString(r.PartitionKey), ps[i].data, ps[i].seq)
			}
			if i > 0 && aws.ToString(r.SequenceNumber) <= aws.ToString(recs[i-1].SequenceNumber) {
				t.Errorf("%s: sequence numbers do not increase", shard)
			}
		}
		// AT and AFTER a sequence number.
		at, _ := drain(t, c, iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: &shard,
			ShardIteratorType: types.ShardIteratorTypeAtSequenceNumber, StartingSequenceNumber: recs[3].SequenceNumber}))
		after, _ := drain(t, c, iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: &shard,
			ShardIteratorType: types.ShardIteratorTypeAfterSequenceNumber, StartingSequenceNumber: recs[3].SequenceNumber}))
		if len(at) != 7 || string(at[0].Data) != string(recs[3].Data) || len(after) != 6 || string(after[0].Data) != string(recs[4].Data) {
			t.Errorf("%s: AT gave %d from %s, AFTER %d", shard, len(at), at[0].Data, len(after))
		}
		// AT_TIMESTAMP of the fourth record: it and those after (the same
		// arrival millisecond may hold earlier ones too).
		ts, _ := drain(t, c, iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: &shard,
			ShardIteratorType: types.ShardIteratorTypeAtTimestamp, Timestamp: recs[3].ApproximateArrivalTimestamp}))
		if len(ts) < 7 || string(ts[len(ts)-7].Data) != string(recs[3].Data) {
			t.Errorf("%s: AT_TIMESTAMP gave %d records", shard, len(ts))
		}
		// The shard's StartingSequenceNumber is before every record.
		start := iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: &shard,
			ShardIteratorType: types.ShardIteratorTypeAtSequenceNumber, StartingSequenceNumber: aws.String(startOf(t, c, shard))})
		if all, _ := drain(t, c, start); len(all) != 10 {
			t.Errorf("%s: from StartingSequenceNumber %d records", shard, len(all))
		}
	}

	// LATEST sees only what comes after it; an AT_TIMESTAMP in the future
	// only what arrives from then on; the next iterator carries on.
	shard := aws.String("shardId-000000000000")
	latest := iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: shard, ShardIteratorType: types.ShardIteratorTypeLatest})
	future := iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: shard, ShardIteratorType: types.ShardIteratorTypeAtTimestamp,
		Timestamp: aws.Time(time.Now().Add(time.Hour))})
	recs, latest := drain(t, c, latest)
	if len(recs) != 0 {
		t.Fatalf("LATEST read %d old records", len(recs))
	}
	if _, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: name, PartitionKey: aws.String("a"), Data: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	if recs, _ = drain(t, c, latest); len(recs) != 1 || string(recs[0].Data) != "new" {
		t.Errorf("after LATEST: %d records", len(recs))
	}
	if recs, _ = drain(t, c, future); len(recs) != 0 {
		t.Errorf("AT_TIMESTAMP an hour ahead read %d", len(recs))
	}
	// MillisBehindLatest is positive while records remain.
	old := iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: shard, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
	time.Sleep(5 * time.Millisecond) // the newer record arrives later than the iterator's position (the scenario)
	if _, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: name, PartitionKey: aws.String("a"), Data: []byte("newer")}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: old, Limit: aws.Int32(1)})
	if err != nil || len(got.Records) != 1 || aws.ToInt64(got.MillisBehindLatest) <= 0 {
		t.Errorf("first record of many: %d records, %d ms behind, %v", len(got.Records), aws.ToInt64(got.MillisBehindLatest), err)
	}
}

func startOf(t *testing.T, c *kinesis.Client, shard string) string {
	out, err := c.ListShards(context.Background(), &kinesis.ListShardsInput{StreamName: aws.String("events")})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range out.Shards {
		if aws.ToString(s.ShardId) == shard {
			return aws.ToString(s.SequenceNumberRange.StartingSequenceNumber)
		}
	}
	t.Fatalf("no shard %s", shard)
	return ""
}

// Bad input gets Kinesis's error and changes nothing.
func TestHostileInput(t *testing.T) {
	e := newService(t, natstest.Connect(t))
	c, ctx := e.client, context.Background()
	name := aws.String("h")
	mustCreate(t, c, "h", 2)
	shard := aws.String("shardId-000000000000")
	for what, in := range map[string]*kinesis.PutRecordInput{
		"ValidationException oversize":        {StreamName: name, PartitionKey: aws.String("k"), Data: make([]byte, streams.MaxRecordSize+1)},
		"ValidationException empty key":       {StreamName: name, PartitionKey: aws.String(""), Data: []byte("x")},
		"ValidationException long key":        {StreamName: name, PartitionKey: aws.String(strings.Repeat("k", 257)), Data: []byte("x")},
		"InvalidArgumentException hash key":   {StreamName: name, PartitionKey: aws.String("k"), ExplicitHashKey: aws.String("340282366920938463463374607431768211456"), Data: []byte("x")},
		"ResourceNotFoundException no stream": {StreamName: aws.String("nope"), PartitionKey: aws.String("k"), Data: []byte("x")},
		"ValidationException stream name":     {StreamName: aws.String("a b"), PartitionKey: aws.String("k"), Data: []byte("x")},
	} {
		if _, err := c.PutRecord(ctx, in); kilntest.ErrorCode(err) != strings.Fields(what)[0] {
			t.Errorf("%s: %v", what, err)
		}
	}
	// A full-size record is taken ("a" hashes to shard 0).
	if _, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: name, PartitionKey: aws.String("a"), Data: bytes.Repeat([]byte{7}, streams.MaxRecordSize)}); err != nil {
		t.Errorf("1 MiB record: %v", err)
	}
	many := make([]types.PutRecordsRequestEntry, 501)
	for i := range many {
		many[i] = types.PutRecordsRequestEntry{PartitionKey: aws.String("k"), Data: []byte("x")}
	}
	if _, err := c.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: name, Records: many}); kilntest.ErrorCode(err) != "ValidationException" {
		t.Errorf("501 records: %v", err)
	}
	big := make([]types.PutRecordsRequestEntry, 6)
	for i := range big {
		big[i] = types.PutRecordsRequestEntry{PartitionKey: aws.String("k"), Data: make([]byte, 1<<20)}
	}
	if _, err := c.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: name, Records: big}); kilntest.ErrorCode(err) != "InvalidArgumentException" {
		t.Errorf("6 MiB of records: %v", err)
	}

	// Iterators: garbage, forged, another account's, another shard's
	// sequence number, a number not issued yet.
	good := iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: shard, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
	raw := []byte(*good)
	raw[len(raw)/2] ^= 1
	for what, it := range map[string]string{"garbage": "not-an-iterator", "forged": string(raw), "empty-ish": "AQ"} {
		if _, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String(it)}); kilntest.ErrorCode(err) != "InvalidArgumentException" {
			t.Errorf("%s iterator: %v", what, err)
		}
	}
	if _, err := e.other.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: good}); kilntest.ErrorCode(err) != "InvalidArgumentException" {
		t.Errorf("another account's iterator: %v", err)
	}
	if _, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String(strings.Repeat("A", 513))}); kilntest.ErrorCode(err) != "ValidationException" {
		t.Errorf("an iterator of 513 characters: %v", err)
	}
	if _, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: good, Limit: aws.Int32(10001)}); kilntest.ErrorCode(err) != "ValidationException" {
		t.Errorf("limit 10001: %v", err)
	}
	out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: good})
	if err != nil || len(out.Records) == 0 && aws.ToString(out.NextShardIterator) == "" {
		t.Fatalf("good iterator: %v", err)
	}
	put, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: name, PartitionKey: aws.String("zzz"), Data: []byte("x")})
	if err != nil || aws.ToString(put.ShardId) != "shardId-000000000001" {
		t.Fatalf("put: %v", err)
	}
	for what, in := range map[string]*kinesis.GetShardIteratorInput{
		"another shard's number": {ShardIteratorType: types.ShardIteratorTypeAtSequenceNumber, StartingSequenceNumber: put.SequenceNumber},
		"a number not issued":    {ShardIteratorType: types.ShardIteratorTypeAtSequenceNumber, StartingSequenceNumber: aws.String("1329227995784915872903807060281344576")}, // sequence 10^6 of shard 0
		"no number":              {ShardIteratorType: types.ShardIteratorTypeAfterSequenceNumber},
		"no timestamp":           {ShardIteratorType: types.ShardIteratorTypeAtTimestamp},
	} {
		in.StreamName, in.ShardId = name, shard
		if _, err := c.GetShardIterator(ctx, in); kilntest.ErrorCode(err) != "InvalidArgumentException" {
			t.Errorf("%s: %v", what, err)
		}
	}
	if _, err := c.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: aws.String("shardId-000000000002"),
		ShardIteratorType: types.ShardIteratorTypeLatest}); kilntest.ErrorCode(err) != "ResourceNotFoundException" {
		t.Errorf("shard 2 of 2: %v", err)
	}
	if _, err := c.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: shard, ShardIteratorType: "SOMETIME"}); kilntest.ErrorCode(err) != "ValidationException" {
		t.Errorf("iterator type SOMETIME: %v", err)
	}

	// Raw requests: an unknown operation, CBOR, a body that is not JSON.
	for what, req := range map[string]struct{ target, ctype, body, code string }{
		"unknown op": {"Kinesis_20131202.SplitShard", "application/x-amz-json-1.1", "{}", "UnknownOperationException"},
		"cbor":       {"Kinesis_20131202.ListStreams", "application/x-amz-cbor-1.1", "\xa0", "SerializationException"},
		"not json":   {"Kinesis_20131202.PutRecord", "application/x-amz-json-1.1", "{", "SerializationException"},
		"bad data":   {"Kinesis_20131202.PutRecord", "application/x-amz-json-1.1", `{"StreamName":"h","PartitionKey":"k","Data":"!!"}`, "SerializationException"},
	} {
		got := rawCall(t, e.url, req.target, req.ctype, req.body)
		if !strings.Contains(got, `"__type":"`+req.code+`"`) {
			t.Errorf("%s: %s", what, got)
		}
	}
	// Nothing of the above was stored: shard 0 holds the 1 MiB record only.
	recs, _ := drain(t, c, iterator(t, c, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: shard, ShardIteratorType: types.ShardIteratorTypeTrimHorizon}))
	if len(recs) != 1 || len(recs[0].Data) != streams.MaxRecordSize {
		t.Errorf("shard 0 holds %d records", len(recs))
	}
}

// rawCall signs and sends one request as the account.
func rawCall(t *testing.T, url, target, ctype, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/", strings.NewReader(body))
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", ctype)
	if err := sign(req, []byte(body)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status + " " + string(b)
}

// Two services on one JetStream (two frontends): a stream created through
// one is written through the other at once, and an iterator one issued
// reads through the other.
func TestTwoFrontends(t *testing.T) {
	srv, err := natsd.Start(natsd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	conn := func() *nats.Conn {
		nc, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	a, b := newService(t, conn()), newService(t, conn())
	ctx := context.Background()
	mustCreate(t, a.client, "shared", 1)
	if _, err := b.client.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String("shared"), PartitionKey: aws.String("k"), Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	it := iterator(t, a.client, &kinesis.GetShardIteratorInput{StreamName: aws.String("shared"), ShardId: aws.String("shardId-000000000000"), ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
	if recs, _ := drain(t, b.client, it); len(recs) != 1 {
		t.Errorf("read %d through the other frontend", len(recs))
	}
	// Deleted through one, gone for the other.
	if _, err := a.client.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String("shared")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := b.client.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String("shared"), PartitionKey: aws.String("k"), Data: []byte("2")})
		if kilntest.ErrorCode(err) == "ResourceNotFoundException" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put through the other frontend after delete: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The Go API the stream pollers read with.
func TestGoAPI(t *testing.T) {
	e := newService(t, natstest.Connect(t))
	s, ctx := e.svc, context.Background()
	if err := s.Create(ctx, account, "go", 2); err != nil {
		t.Fatal(err)
	}
	d, err := s.Describe(ctx, account, "go")
	if err != nil || d.ARN != streams.ARN(region, account, "go") || d.Shards != 2 || d.Status != streams.StatusActive {
		t.Fatalf("Describe: %+v %v", d, err)
	}
	if _, err := s.Describe(ctx, other, "go"); !errors.Is(err, streams.ErrNotFound) {
		t.Errorf("other account: %v", err)
	}
	shards, err := s.Shards(ctx, account, "go")
	if err != nil || len(shards) != 2 || shards[1].ID != "shardId-000000000001" {
		t.Fatalf("Shards: %+v %v", shards, err)
	}
	entries := make([]streams.PutEntry, 20)
	for i := range entries {
		entries[i] = streams.PutEntry{PartitionKey: "a", Data: fmt.Appendf(nil, "%d", i)}
	}
	res, err := s.Put(ctx, account, "go", entries)
	if err != nil || len(res) != 20 || res[0].ShardID != shards[0].ID {
		t.Fatalf("Put: %+v %v", res, err)
	}
	// Reading in batches of 7, resuming from Next each time, as a poller
	// checkpointing Next would.
	from := streams.Position{Type: streams.TrimHorizon}
	var got []string
	for range 10 {
		b, err := s.Read(ctx, account, "go", shards[0].ID, from, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range b.Records {
			got = append(got, string(r.Data))
		}
		if len(b.Records) == 0 {
			break
		}
		from = b.Next
	}
	if strings.Join(got, ",") != "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19" {
		t.Errorf("read %v", got)
	}
	// LATEST resolves to a concrete position that then sees new records.
	b, err := s.Read(ctx, account, "go", shards[0].ID, streams.Position{Type: streams.Latest}, 0)
	if err != nil || len(b.Records) != 0 || b.Next.Type != streams.AtSequenceNumber {
		t.Fatalf("LATEST: %+v %v", b, err)
	}
	if _, err := s.Put(ctx, account, "go", []streams.PutEntry{{PartitionKey: "a", Data: []byte("late")}}); err != nil {
		t.Fatal(err)
	}
	b, err = s.Read(ctx, account, "go", shards[0].ID, b.Next, 0)
	if err != nil || len(b.Records) != 1 || string(b.Records[0].Data) != "late" {
		t.Fatalf("after LATEST: %+v %v", b, err)
	}
	// 21 records put and read (and read again: 20 in batches, 1 after
	// LATEST), 2 or 3 bytes each but "late" (4).
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Metrics())
	for name, want := range map[string]float64{`kiln_stream_records_total{op="put"}`: 21, `kiln_stream_records_total{op="read"}`: 21,
		`kiln_stream_bytes_total{op="put"}`: 10 + 2*10 + 4, `kiln_stream_bytes_total{op="read"}`: 10 + 2*10 + 4} {
		if got := metricValue(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if _, err := s.Read(ctx, account, "go", "shardId-000000000009", b.Next, 0); !errors.Is(err, streams.ErrNotFound) {
		t.Errorf("missing shard: %v", err)
	}
	if _, err := s.Read(ctx, account, "go", shards[1].ID, b.Next, 0); !errors.Is(err, streams.ErrInvalidArgument) {
		t.Errorf("a position of another shard: %v", err)
	}
}

// metricValue is the value of the counter named as NAME{LABEL="VALUE"}.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			id := mf.GetName() + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					id += ","
				}
				id += l.GetName() + `="` + l.GetValue() + `"`
			}
			if id+"}" == name {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// In a cluster, a record acknowledged through one node is read at once
// through another: a read its replica answers short of the record says it
// is behind (MillisBehindLatest > 0), so that a reader reads on.
func TestReadAfterPutInCluster(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	ctx := context.Background()
	js, _ := jetstream.New(natstest.ConnectTo(t, nodes[0]))
	wait.Retry(t, "the cluster's JetStream up", func(ctx context.Context) error {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "READY", Replicas: 3})
		return err
	})
	var es []*env
	for _, n := range nodes {
		es = append(es, newReplicated(t, natstest.ConnectTo(t, n), 3))
	}
	name := "raw"
	wait.Retry(t, "create the stream", func(ctx context.Context) error {
		_, err := es[0].client.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: &name, ShardCount: aws.Int32(1)})
		var inUse *types.ResourceInUseException
		if errors.As(err, &inUse) {
			return nil
		}
		return err
	})
	var it *string
	wait.Retry(t, "a LATEST iterator", func(ctx context.Context) error {
		out, err := es[1].client.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: &name,
			ShardId: aws.String("shardId-000000000000"), ShardIteratorType: types.ShardIteratorTypeLatest})
		if err == nil {
			it = out.ShardIterator
		}
		return err
	})
	for i := range 100 {
		data := fmt.Appendf(nil, "r%d", i)
		if _, err := es[0].client.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: &name, PartitionKey: aws.String("k"), Data: data}); err != nil {
			t.Fatal(err)
		}
		var got []types.Record
		for reads := 0; ; reads++ {
			out, err := es[1+i%2].client.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it})
			if err != nil {
				t.Fatal(err)
			}
			got, it = append(got, out.Records...), out.NextShardIterator
			if aws.ToInt64(out.MillisBehindLatest) == 0 {
				break
			}
			if reads == 1000 {
				t.Fatalf("record %d: still behind after %d reads", i, reads)
			}
		}
		if len(got) != 1 || !bytes.Equal(got[0].Data, data) {
			t.Fatalf("caught up right after putting %s through another node: read %d records", data, len(got))
		}
	}
}
