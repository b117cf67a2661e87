package cluster_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/kilntest"
)

// TestKinesisKillStreamLeader kills -9 the NATS node leading a Kinesis
// stream's JetStream stream (R3) while writers put records through both
// frontends: puts resume once a new leader is elected, and every put that
// was acknowledged, before or after, is read back through the frontends,
// each writer's records in the order they were acknowledged (a put that
// failed may have been stored: it is retried, so it may appear twice, as
// with Kinesis).
func TestKinesisKillStreamLeader(t *testing.T) {
	f := up(t, cluster.UpConfig{})
	kc := func(frontend int) *kinesis.Client {
		return kilntest.Kinesis(f.Frontends[frontend], f.Region, credentials.NewStaticCredentialsProvider(f.AccessKeyID, f.SecretAccessKey, ""))
	}
	name := aws.String("fault")
	if _, err := kc(0).CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: name, ShardCount: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	nc, err := f.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	st, err := kilntest.KinesisJetStream(ctx, kc(1), nc, *name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || info.Config.Replicas != 3 {
		t.Fatalf("stream info: %+v %v", info, err)
	}
	victim := info.Cluster.Leader

	const writers = 4
	var mu sync.Mutex
	acked := make([][]int, writers) // per writer, the counters acknowledged, in order
	next := make([]int, writers)    // per writer, the counter it puts (again, after a failure)
	ackedAfter, failures := 0, 0
	clients := []*kinesis.Client{kc(0), kc(1)}
	killUnderLoad(t, f, victim, writers, func(w int, killedAt func() time.Time) {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := clients[w%2].PutRecord(cctx, &kinesis.PutRecordInput{StreamName: name, PartitionKey: aws.String("writer-" + strconv.Itoa(w)),
			Data: fmt.Appendf(nil, "%d/%d", w, next[w])})
		cancel()
		mu.Lock()
		if err != nil {
			failures++
		} else {
			acked[w] = append(acked[w], next[w])
			if !killedAt().IsZero() {
				ackedAfter++
			}
			next[w]++
		}
		mu.Unlock()
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ackedAfter >= 200
	})
	if ackedAfter < 200 {
		t.Fatalf("only %d puts acknowledged in 60 s after the kill", ackedAfter)
	}

	// Read both shards through the frontends, alternating, until caught up.
	got := make([][]int, writers)
	for i := range 2 {
		shard := aws.String(fmt.Sprintf("shardId-%012d", i))
		var it *string
		for attempt := 0; it == nil; attempt++ {
			out, err := kc(attempt%2).GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: name, ShardId: shard, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
			if err == nil {
				it = out.ShardIterator
			} else if attempt > 50 {
				t.Fatal(err)
			}
		}
		for reads := 0; ; reads++ {
			out, err := kc(reads%2).GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it, Limit: aws.Int32(500)})
			if err != nil {
				if reads > 200 {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for _, r := range out.Records {
				ws, ns, _ := strings.Cut(string(r.Data), "/")
				w, _ := strconv.Atoi(ws)
				n, _ := strconv.Atoi(ns)
				got[w] = append(got[w], n)
			}
			it = out.NextShardIterator
			if len(out.Records) == 0 && aws.ToInt64(out.MillisBehindLatest) == 0 {
				break
			}
		}
	}
	total := 0
	for w := range writers {
		// Every acknowledged counter, in order. A failed put was sent again,
		// so it may be there twice in a row, or once more at the end.
		var read []int
		for _, n := range got[w] {
			if len(read) == 0 || read[len(read)-1] != n {
				read = append(read, n)
			}
		}
		if len(read) > len(acked[w]) {
			read = read[:len(acked[w])]
		}
		if fmt.Sprint(read) != fmt.Sprint(acked[w]) {
			t.Errorf("writer %d: %d records acknowledged, read back %d (deduplicated), not the same in the same order", w, len(acked[w]), len(read))
		}
		total += len(acked[w])
	}
	info, _ = st.Info(ctx)
	t.Logf("killed %s, the stream's leader; new leader %s; %d puts acknowledged (%d after the kill), %d failed and were retried",
		victim, info.Cluster.Leader, total, ackedAfter, failures)
}
