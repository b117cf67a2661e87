package bench

import (
	"bufio"
	"context"
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/server"
	"github.com/kiln-dev/kiln/internal/streams"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// streamLatencyGo is the streams section's function: at its start it
// appends, per record, how long ago the record was put (the put time is in
// its payload) to $SINK, in nanoseconds, one line each.
//
//go:embed functions/streamlatency/main.go
var streamLatencyGo string

// StreamsConfig configures the streams section.
type StreamsConfig struct {
	Records int // per source; 0 means 20,000
	Shards  int // shards or partitions; 0 means 4
}

// Streams measures stream event source mappings in an in-process Kiln (the
// process sandbox, so that the function can write what it measured to a
// file): per source (a Kiln stream, a topic of franz-go's in-process Kafka),
// the records/s its own reader takes in (esm's shard readers, no invoke),
// then the records/s from the first put to the last record's function
// start through a mapping (batch 100), and the latency from each record's
// put to the start of the invoke it is in: in that burst, and with records
// put one every 10 ms.
func Streams(ctx context.Context, cfg StreamsConfig, out io.Writer) error {
	if cfg.Records <= 0 {
		cfg.Records = 20000
	}
	if cfg.Shards <= 0 {
		cfg.Shards = 4
	}
	dir, err := os.MkdirTemp("", "kiln-bench-streams-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(out, "building the stream function ...")
	bootstrap, err := fntest.BuildGo(streamLatencyGo)
	if err != nil {
		return err
	}
	zip, err := fntest.ZipFiles(map[string][]byte{"bootstrap": bootstrap})
	if err != nil {
		return err
	}
	s, err := server.Start(ctx, server.Config{DataDir: filepath.Join(dir, "kiln"), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	defer s.Close()
	lc := lambda.New(lambda.Options{Region: s.Region, BaseEndpoint: aws.String(s.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(s.Identity.AccessKeyID, s.Identity.SecretAccessKey, "")})
	account := s.Identity.AccountID

	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(cfg.Shards), "read", "mapped"))
	if err != nil {
		return err
	}
	defer kc.Close()
	producer, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...))
	if err != nil {
		return err
	}
	defer producer.Close()

	fmt.Fprintf(out, "\nstream mappings (in-process kiln, process sandbox; %d records per source, %d shards, batch 100):\n", cfg.Records, cfg.Shards)
	for _, src := range []struct {
		name string
		// setup makes stream name: a source reading it, what names it in a
		// mapping, and a writer of n records.
		setup func(name string) (esm.StreamSource, func(in *lambda.CreateEventSourceMappingInput), func(n int, payload func(i int) []byte) error, error)
	}{
		{"kinesis (Kiln streams)", func(name string) (esm.StreamSource, func(*lambda.CreateEventSourceMappingInput), func(int, func(int) []byte) error, error) {
			if err := s.Streams().Create(ctx, account, name, cfg.Shards); err != nil {
				return nil, nil, nil, err
			}
			arn := streams.ARN(s.Region, account, name)
			src, err := esm.OpenKinesis(s.Streams(), arn, "bench")
			return src, func(in *lambda.CreateEventSourceMappingInput) { in.EventSourceArn = &arn },
				func(n int, payload func(int) []byte) error {
					for i := 0; i < n; i += 500 {
						var entries []streams.PutEntry
						for j := i; j < min(n, i+500); j++ {
							entries = append(entries, streams.PutEntry{PartitionKey: strconv.Itoa(j % 64), Data: payload(j)})
						}
						res, err := s.Streams().Put(ctx, account, name, entries)
						if err != nil {
							return err
						}
						for _, r := range res {
							if r.ErrorCode != "" {
								return fmt.Errorf("put: %s %s", r.ErrorCode, r.ErrorMessage)
							}
						}
					}
					return nil
				}, err
		}},
		{"kafka (kfake)", func(name string) (esm.StreamSource, func(*lambda.CreateEventSourceMappingInput), func(int, func(int) []byte) error, error) {
			src, err := esm.OpenKafka(kc.ListenAddrs(), name, "bench")
			return src, func(in *lambda.CreateEventSourceMappingInput) {
					in.SelfManagedEventSource = &types.SelfManagedEventSource{Endpoints: map[string][]string{esm.KafkaServersKey: kc.ListenAddrs()}}
					in.Topics = []string{name}
				}, func(n int, payload func(int) []byte) error {
					for i := 0; i < n; i += 500 {
						var recs []*kgo.Record
						for j := i; j < min(n, i+500); j++ {
							recs = append(recs, &kgo.Record{Topic: name, Key: []byte(strconv.Itoa(j % 64)), Value: payload(j)})
						}
						if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
							return err
						}
					}
					return nil
				}, err
		}},
	} {
		source, _, put, err := src.setup("read")
		if err != nil {
			return fmt.Errorf("%s: %w", src.name, err)
		}
		defer source.Close()
		stamp := func(int) []byte { return fmt.Appendf(nil, `{"T":%d}`, time.Now().UnixNano()) }
		// The source's own rate: its shard readers take in what was put.
		if err := put(cfg.Records, stamp); err != nil {
			return err
		}
		readRate, err := readAllShards(ctx, source, cfg.Records)
		if err != nil {
			return fmt.Errorf("%s: read: %w", src.name, err)
		}
		// End to end: a mapping of another stream, then the records put.
		mapped, mapTo, put, err := src.setup("mapped")
		if err != nil {
			return fmt.Errorf("%s: %w", src.name, err)
		}
		mapped.Close()
		sink := filepath.Join(dir, "sink-"+strconv.Itoa(len(src.name)))
		fn := "streams-bench-" + strconv.Itoa(len(src.name))
		if _, err := lc.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: &fn, Runtime: types.RuntimeProvidedal2023,
			Handler: aws.String("bootstrap"), Role: aws.String(fntest.Role), Code: &types.FunctionCode{ZipFile: zip},
			Environment: &types.Environment{Variables: map[string]string{"SINK": sink}}}); err != nil {
			return err
		}
		if err := lambda.NewFunctionActiveV2Waiter(lc).Wait(ctx, &lambda.GetFunctionInput{FunctionName: &fn}, 2*time.Minute); err != nil {
			return err
		}
		in := &lambda.CreateEventSourceMappingInput{FunctionName: &fn, StartingPosition: types.EventSourcePositionTrimHorizon, BatchSize: aws.Int32(100)}
		mapTo(in)
		m, err := lc.CreateEventSourceMapping(ctx, in)
		if err != nil {
			return err
		}
		if err := waitEnabled(ctx, lc, aws.ToString(m.UUID)); err != nil {
			return err
		}
		start := time.Now()
		if err := put(cfg.Records, stamp); err != nil {
			return err
		}
		lat, err := waitLatencies(ctx, sink, cfg.Records)
		if err != nil {
			return fmt.Errorf("%s: %w", src.name, err)
		}
		e2e := summarize(lat, time.Since(start))
		// Paced: one record every 10 ms, the latency of a shard not
		// behind.
		os.Remove(sink)
		for range pacedRecords {
			if err := put(1, stamp); err != nil {
				return err
			}
			time.Sleep(10 * time.Millisecond)
		}
		paced, err := waitLatencies(ctx, sink, pacedRecords)
		if err != nil {
			return fmt.Errorf("%s: paced: %w", src.name, err)
		}
		p := summarize(paced, 0)
		fmt.Fprintf(out, "  %-22s source read %7.0f records/s  end to end %7.0f records/s (%.0f%%)  put→function start: burst p50 %s p99 %s, paced (100/s) p50 %s p99 %s\n",
			src.name, readRate, e2e.Throughput, 100*e2e.Throughput/readRate, round(e2e.P50), round(e2e.P99), round(p.P50), round(p.P99))
	}
	return nil
}

// pacedRecords are put one at a time for the unloaded latency.
const pacedRecords = 300

// readAllShards reads n records from every shard's start and returns the
// records per second.
func readAllShards(ctx context.Context, src esm.StreamSource, n int) (float64, error) {
	shards, err := src.Shards(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	got := 0
	for _, sh := range shards {
		r, err := src.Open(ctx, sh, "")
		if err != nil {
			return 0, err
		}
		for {
			recs, err := r.Read(ctx, 1000, 200*time.Millisecond)
			if err != nil {
				r.Close()
				return 0, err
			}
			if len(recs) == 0 {
				break
			}
			got += len(recs)
		}
		r.Close()
	}
	elapsed := time.Since(start) - time.Duration(len(shards))*200*time.Millisecond // each shard's final empty wait
	if got != n {
		return 0, fmt.Errorf("read %d records, want %d", got, n)
	}
	return float64(got) / elapsed.Seconds(), nil
}

// waitEnabled waits until a mapping is Enabled.
func waitEnabled(ctx context.Context, lc *lambda.Client, uuid string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		m, err := lc.GetEventSourceMapping(ctx, &lambda.GetEventSourceMappingInput{UUID: &uuid})
		if err != nil {
			return err
		}
		if aws.ToString(m.State) == "Enabled" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("mapping %s not Enabled within 60 s", uuid)
}

// waitLatencies waits until the function wrote n latencies to sink.
func waitLatencies(ctx context.Context, sink string, n int) ([]time.Duration, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var lat []time.Duration
		if f, err := os.Open(sink); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if v, err := strconv.ParseInt(sc.Text(), 10, 64); err == nil {
					lat = append(lat, time.Duration(v))
				}
			}
			f.Close()
		}
		if len(lat) >= n {
			return lat, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("the function saw %d of %d records", len(lat), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
