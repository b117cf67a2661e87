package roles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/controlplane"
	"github.com/kiln-dev/kiln/internal/lease"
	"github.com/kiln-dev/kiln/internal/metrics"
	"github.com/kiln-dev/kiln/internal/tier"
)

// CollectConfig configures the collection of stored code no function
// uses: deployment packages, image chunks and manifests.
type CollectConfig struct {
	// Grace is how long ago an unused package or blob must have been last
	// written to go (0 means an hour): an upload's zip, and an import's
	// chunks and manifest, are stored before the function naming them.
	Grace time.Duration
	// Interval is how often a collection runs, in one of the processes
	// sharing the NATS (0 means 10 minutes).
	Interval time.Duration
}

// CollectSubject carries an operator's request to collect now (a
// CollectRequest); one control plane runs it, once no other is collecting,
// and answers a CollectReply. Only control planes and the operator may
// publish on it in a cluster.
const CollectSubject = "kiln.collect"

// CollectRequest asks for a collection with a grace of its own (0: none,
// everything unused goes; the tests' way to collect without waiting).
type CollectRequest struct {
	Grace time.Duration `json:"grace"`
}

// CollectReply is what the collection deleted, or why it failed.
type CollectReply struct {
	controlplane.Collection
	Error string `json:"error,omitempty"`
}

// collectBucket holds the collector lease and the "done" key, each
// expiring after one interval (the bucket's TTL): a control plane holds
// the lease while it collects, so one collects at a time, and writes
// "done" after, so the others skip the interval.
const collectBucket = "kiln-collect"

// Collector runs a control plane's code collections.
type Collector struct {
	cp    *controlplane.Service
	cfg   CollectConfig
	kv    jetstream.KeyValue
	lease *lease.Holder
	log   *slog.Logger
	blobs *prometheus.CounterVec
	bytes *prometheus.CounterVec
}

// OpenCollectKV opens (creating) the collection bucket, whose TTL is
// cfg's interval.
func OpenCollectKV(ctx context.Context, js jetstream.JetStream, replicas int, cfg CollectConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: collectBucket, History: 1,
		TTL: cfg.withDefaults().Interval, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("collection: bucket %s: %w", collectBucket, err)
	}
	return kv, nil
}

func (cfg CollectConfig) withDefaults() CollectConfig {
	if cfg.Grace <= 0 {
		cfg.Grace = time.Hour
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Minute
	}
	return cfg
}

// NewCollector collects for cp under kv's lease (OpenCollectKV) and
// registers the metrics.
func NewCollector(kv jetstream.KeyValue, cp *controlplane.Service, cfg CollectConfig, set *metrics.Set, log *slog.Logger) *Collector {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	c := &Collector{cp: cp, cfg: cfg, kv: kv, log: log,
		lease: &lease.Holder{KV: kv, ID: "collector-" + api.NewUUID(), TTL: cfg.Interval},
		blobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_collected_blobs_total",
			Help: "Stored code no function uses that collections deleted: deployment packages (store=code), image chunks and manifests (store=images)."}, []string{"store"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_collected_bytes_total",
			Help: "Bytes of what kiln_collected_blobs_total counts."}, []string{"store"}),
	}
	set.Register(c.blobs)
	set.Register(c.bytes)
	return c
}

// Run collects every quarter interval unless a collection ran within the
// interval, and answers CollectSubject, until ctx ends.
func (c *Collector) Run(ctx context.Context, nc *nats.Conn) {
	sub, err := nc.QueueSubscribe(CollectSubject, "kiln-collect", func(m *nats.Msg) {
		var req CollectRequest
		var reply CollectReply
		if err := json.Unmarshal(m.Data, &req); err != nil || req.Grace < 0 {
			// A negative grace would reach past now, into uploads under way.
			reply.Error = fmt.Sprintf("collection: bad request (grace %v): %v", req.Grace, err)
		} else if reply.Collection, err = c.Collect(ctx, req.Grace, true); err != nil {
			reply.Error = err.Error()
		}
		b, _ := json.Marshal(reply)
		m.Respond(b)
	})
	if err != nil {
		c.log.Error("code collection: no operator requests", "err", err)
	} else {
		defer sub.Unsubscribe()
	}
	t := time.NewTicker(c.cfg.Interval / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := c.kv.Get(ctx, "done"); err == nil {
				continue // collected within the interval
			}
			if _, err := c.Collect(ctx, c.cfg.Grace, false); err != nil && !errors.Is(err, ErrCollecting) {
				c.log.Warn("code collection", "err", err)
			}
		}
	}
}

// ErrCollecting is Collect's answer without waiting while another process
// holds the collector lease.
var ErrCollecting = errors.New("collection: another process is collecting")

// Collect runs one collection with the given grace, under the lease: at
// once, or (wait) once the process collecting now has finished.
func (c *Collector) Collect(ctx context.Context, grace time.Duration, wait bool) (controlplane.Collection, error) {
	for delay := 50 * time.Millisecond; !c.lease.Hold(ctx, "collector"); delay = min(2*delay, time.Second) {
		if !wait {
			return controlplane.Collection{}, ErrCollecting
		}
		select {
		case <-ctx.Done():
			return controlplane.Collection{}, ctx.Err()
		case <-time.After(delay):
		}
	}
	defer c.lease.Release(context.WithoutCancel(ctx), "collector")
	col, err := c.cp.CollectCode(ctx, grace)
	c.count("code", col.Code)
	c.count("images", col.Images)
	if err != nil {
		return col, fmt.Errorf("code collection: %w", err)
	}
	c.log.Info("code collection", "grace", grace, "packages", col.Code.Blobs, "package_bytes", col.Code.Bytes,
		"image_blobs", col.Images.Blobs, "image_bytes", col.Images.Bytes, "images_deferred", col.ImagesDeferred)
	_, err = c.kv.Put(ctx, "done", []byte(time.Now().UTC().Format(time.RFC3339)))
	return col, err
}

func (c *Collector) count(store string, s tier.Swept) {
	c.blobs.WithLabelValues(store).Add(float64(s.Blobs))
	c.bytes.WithLabelValues(store).Add(float64(s.Bytes))
}
