package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/kiln-dev/kiln/internal/kilntest"
)

// TestKinesis drives Kiln streams with Debian's AWS CLI (kinesis.sh) and
// boto3 (kinesis_test.py) against each target, reading through another
// frontend than the one written to where there are several; and checks
// that a cluster's streams are replicated.
func TestKinesis(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		here := filepath.Join(moduleRoot(t), "e2e")
		env := append(clientEnv(tg, t.TempDir(), nil), "ENDPOINT2="+tg.endpoints[len(tg.endpoints)-1])
		t.Run("awscli", func(t *testing.T) {
			runScript(t, tg.log, 120*time.Second, env, "bash", filepath.Join(here, "kinesis.sh"))
		})
		t.Run("boto3", func(t *testing.T) {
			runScript(t, tg.log, 120*time.Second, env, python, filepath.Join(here, "kinesis_test.py"))
		})
		t.Run("replicas", func(t *testing.T) {
			c := kilntest.Kinesis(tg.endpoints[0], region, creds())
			name := aws.String("replicated")
			if _, err := c.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: name, ShardCount: aws.Int32(1)}); err != nil {
				t.Fatal(err)
			}
			defer c.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: name})
			nc, err := tg.connect()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			st, err := kilntest.KinesisJetStream(ctx, c, nc, *name)
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if tg.cluster != nil {
				want = 3
			}
			if cfg := st.CachedInfo().Config; cfg.Replicas != want || cfg.MaxAge != 24*time.Hour {
				t.Errorf("stream's JetStream stream: %d replicas, max age %s; want %d, 24h", cfg.Replicas, cfg.MaxAge, want)
			}
		})
	})
}
