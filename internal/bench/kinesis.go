package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/nats-io/nats.go"
)

// KinesisConfig configures Kinesis; the zero value is the documented run.
type KinesisConfig struct {
	Kiln    string // the kiln binary measured (kiln up); required
	Records int    // records put with PutRecords, then read; 0 means 100,000
	Size    int    // bytes of data per record; 0 means 100
	Shards  int    // 0 means 4
	Clients int    // concurrent writers; 0 means 8
}

// Kinesis measures the stream service on its own, in a kiln up and then
// in a local cluster (streams R3, writers spread over its frontends): the
// rate at which it takes records (PutRecords of 500, and PutRecord, over
// cfg.Clients connections) and gives them out (GetRecords over HTTP, and
// the Go API's Read that the stream pollers use, over NATS; one reader
// per shard), in records/s. The stream event source mapping's end-to-end
// rate is read against these.
func Kinesis(ctx context.Context, cfg KinesisConfig, out io.Writer) error {
	cfg.Records = orDefault(cfg.Records, 100000)
	cfg.Size = orDefault(cfg.Size, 100)
	cfg.Shards = orDefault(cfg.Shards, 4)
	cfg.Clients = orDefault(cfg.Clients, 8)
	dir, err := os.MkdirTemp("", "kiln-bench-kinesis-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(out, "\nKiln streams: %d shards, %d-byte records, %d writers; records/s and per-call latency\n",
		cfg.Shards, cfg.Size, cfg.Clients)
	k, err := startKiln(ctx, cfg.Kiln, filepath.Join(dir, "up"), "process", true)
	if err != nil {
		return err
	}
	defer k.stop()
	account, err := upAccount(filepath.Join(dir, "up"))
	if err != nil {
		return err
	}
	nc, err := nats.Connect(k.natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := kinesisRates(ctx, cfg, out, "kiln up", []string{k.endpoint}, nc, account, 1); err != nil {
		return err
	}
	k.stop()

	f, down, err := clusterUp(ctx, cfg.Kiln, filepath.Join(dir, "cluster"), "process")
	if err != nil {
		return err
	}
	defer down()
	cnc, err := f.Connect()
	if err != nil {
		return err
	}
	defer cnc.Close()
	return kinesisRates(ctx, cfg, out, "cluster (R3)", f.Frontends, cnc, f.AccountID, 3)
}

// kinesisRates measures one Kiln: its frontends at endpoints, its NATS
// nc, the account of the bench's keys.
func kinesisRates(ctx context.Context, cfg KinesisConfig, out io.Writer, kiln string, endpoints []string, nc *nats.Conn, account string, replicas int) error {
	var clients []*kinesis.Client
	for _, e := range endpoints {
		clients = append(clients, kilntest.Kinesis(e, benchRegion, credentials.NewStaticCredentialsProvider(benchKey, benchSecret, "")))
	}
	name := aws.String("bench")
	if _, err := clients[0].CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: name, ShardCount: aws.Int32(int32(cfg.Shards))}); err != nil {
		return err
	}
	fmt.Fprintf(out, "%-36s %10s %11s %11s %12s\n", kiln, "records", "p50", "p99", "records/s")
	data := make([]byte, cfg.Size)
	report := func(what string, records int, ds []time.Duration, elapsed time.Duration) {
		st := summarize(ds, 0)
		fmt.Fprintf(out, "  %-34s %10d %11s %11s %12.0f\n", what, records, round(st.P50), round(st.P99), float64(records)/elapsed.Seconds())
	}

	// PutRecords of 500, spread over the writers.
	batches := cfg.Records / streams.MaxPutRecords
	ds, elapsed, err := inParallel(cfg.Clients, batches, func(i int) error {
		entries := make([]types.PutRecordsRequestEntry, streams.MaxPutRecords)
		for j := range entries {
			entries[j] = types.PutRecordsRequestEntry{PartitionKey: aws.String(strconv.Itoa(i*streams.MaxPutRecords + j)), Data: data}
		}
		res, err := clients[i%len(clients)].PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: name, Records: entries})
		if err == nil && aws.ToInt32(res.FailedRecordCount) > 0 {
			err = fmt.Errorf("%d records of a PutRecords failed", aws.ToInt32(res.FailedRecordCount))
		}
		return err
	})
	if err != nil {
		return err
	}
	report("PutRecords (500 a call)", batches*streams.MaxPutRecords, ds, elapsed)
	singles := max(cfg.Records/20, cfg.Clients)
	ds, elapsed, err = inParallel(cfg.Clients, singles, func(i int) error {
		_, err := clients[i%len(clients)].PutRecord(ctx, &kinesis.PutRecordInput{StreamName: name, PartitionKey: aws.String(strconv.Itoa(i)), Data: data})
		return err
	})
	if err != nil {
		return err
	}
	report("PutRecord", singles, ds, elapsed)
	total := batches*streams.MaxPutRecords + singles

	// Every shard from its start, one reader each, 10,000 records a call.
	read, calls, elapsed, err := consumeShards(cfg.Shards, func(i int, shard string) (func() (int, error), error) {
		c := clients[i%len(clients)]
		it, err := c.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: &shard,
			ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
		if err != nil {
			return nil, err
		}
		iter := it.ShardIterator
		return func() (int, error) {
			res, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				return 0, err
			}
			iter = res.NextShardIterator
			return len(res.Records), nil
		}, nil
	})
	if err == nil && read != total {
		err = fmt.Errorf("GetRecords read %d records of %d", read, total)
	}
	if err != nil {
		return err
	}
	report("GetRecords (HTTP)", read, calls, elapsed)

	svc, err := streams.New(ctx, streams.Config{NATS: nc, Region: benchRegion, Replicas: replicas})
	if err != nil {
		return err
	}
	read, calls, elapsed, err = consumeShards(cfg.Shards, func(_ int, shard string) (func() (int, error), error) {
		from := streams.Position{Type: streams.TrimHorizon}
		return func() (int, error) {
			b, err := svc.Read(ctx, account, "bench", shard, from, 0)
			if err != nil {
				return 0, err
			}
			from = b.Next
			return len(b.Records), nil
		}, nil
	})
	if err == nil && read != total {
		err = fmt.Errorf("Read read %d records of %d", read, total)
	}
	if err != nil {
		return err
	}
	report("Read (Go API, over NATS)", read, calls, elapsed)
	return nil
}

// consumeShards reads every shard at once, shard i with the reader open returns,
// until a read returns no records: how many records were read, each read's
// latency and the time all took.
func consumeShards(shards int, open func(i int, shard string) (func() (int, error), error)) (int, []time.Duration, time.Duration, error) {
	var mu sync.Mutex
	var calls []time.Duration
	read := 0
	_, elapsed, err := inParallel(shards, shards, func(i int) error {
		next, err := open(i, streams.ShardID(i))
		if err != nil {
			return err
		}
		for {
			start := time.Now()
			n, err := next()
			if err != nil {
				return err
			}
			mu.Lock()
			read += n
			calls = append(calls, time.Since(start))
			mu.Unlock()
			if n == 0 {
				return nil
			}
		}
	})
	return read, calls, elapsed, err
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// inParallel calls fn(0) … fn(n-1) over workers goroutines and returns each
// call's latency and the time all took.
func inParallel(workers, n int, fn func(i int) error) ([]time.Duration, time.Duration, error) {
	var mu sync.Mutex
	var ds []time.Duration
	var firstErr error
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t := time.Now()
				err := fn(i)
				mu.Lock()
				ds = append(ds, time.Since(t))
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return ds, time.Since(start), firstErr
}

// upAccount reads the account of the kiln up whose data is dir.
func upAccount(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "identity.json"))
	if err != nil {
		return "", err
	}
	var id struct {
		AccountID string `json:"accountId"`
	}
	if err := json.Unmarshal(b, &id); err != nil || id.AccountID == "" {
		return "", fmt.Errorf("account of kiln up: %v", err)
	}
	return id.AccountID, nil
}
