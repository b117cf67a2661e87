package slots

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/counting"
	"github.com/nats-io/nats.go/jetstream"
)

// TestDecisionLatency measures counting decisions (a slot taken, then
// returned) across frontends: through the partition leaders, as JetStream
// KV compare-and-set on one key per account (the alternative the design
// weighed), and in process (counting.Counter), in the same run. Numbers
// only with KILN_BENCH=1.
func TestDecisionLatency(t *testing.T) {
	if os.Getenv("KILN_BENCH") == "" {
		t.Skip("KILN_BENCH=1 to measure")
	}
	const workers, d = 16, 3 * time.Second
	r := newRig(t, 1000)
	r.leader("acct")
	clients := []*Client{r.client(0), r.client(1)}
	leaders := measureTake(t, "partition leaders, 2 frontends, 3 NATS nodes", workers, d, func(g int) (func(), error) {
		return clients[g%2].Take(context.Background(), counting.Key{Account: "acct", Function: "f" + strconv.Itoa(g%4)})
	})

	// KV compare-and-set: the account's count in one R3 key.
	var kvs []jetstream.KeyValue
	for node := 0; node < 2; node++ {
		js, _ := jetstream.New(r.connect(node))
		var kv jetstream.KeyValue
		r.retry(func(ctx context.Context) (err error) {
			kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "BENCH_COUNT", Replicas: 3, History: 1})
			return err
		})
		kvs = append(kvs, kv)
	}
	if _, err := kvs[0].Put(context.Background(), "acct", []byte("0")); err != nil {
		t.Fatal(err)
	}
	add := func(kv jetstream.KeyValue, delta int) error {
		for {
			e, err := kv.Get(context.Background(), "acct")
			if err != nil {
				return err
			}
			n, _ := strconv.Atoi(string(e.Value()))
			if n+delta > 1000 {
				return errors.New("over the limit")
			}
			_, err = kv.Update(context.Background(), "acct", []byte(strconv.Itoa(n+delta)), e.Revision())
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return err
			}
		}
	}
	cas := measureTake(t, "JetStream KV compare-and-set, 2 frontends, R3", workers, d, func(g int) (func(), error) {
		kv := kvs[g%2]
		if err := add(kv, 1); err != nil {
			return nil, err
		}
		return func() { add(kv, -1) }, nil
	})

	c := counting.New(counting.Config{})
	local := measureTake(t, "in process (counting.Counter)", workers, d, func(g int) (func(), error) {
		return c.Take(context.Background(), counting.Key{Account: "acct", Function: "f" + strconv.Itoa(g%4)})
	})
	t.Logf("p50 ratio leaders/in-process %.0fx, CAS/leaders %.1fx; p99 ratio leaders/in-process %.0fx, CAS/leaders %.1fx",
		float64(leaders[0])/float64(local[0]), float64(cas[0])/float64(leaders[0]),
		float64(leaders[1])/float64(local[1]), float64(cas[1])/float64(leaders[1]))
}

// measureTake logs and returns the p50 and p99 of MeasureTakes.
func measureTake(t *testing.T, name string, workers int, d time.Duration, take func(g int) (func(), error)) [2]time.Duration {
	m, err := MeasureTakes(workers, d, take)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%-48s %8.0f takes/s  take p50 %v p99 %v (%d workers)", name, m.PerSec, m.P50, m.P99, workers)
	return [2]time.Duration{m.P50, m.P99}
}
