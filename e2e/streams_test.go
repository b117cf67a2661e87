package e2e

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestStreamMappings drives Kiln streams with Debian's AWS CLI (`aws
// kinesis`, streams.sh) and boto3 (streams_test.py), and stream event
// source mappings from them to a Python function, against kiln up and the
// cluster: per-key order under ParallelizationFactor 5, a poison record
// isolated by bisect and sent to the failure queue after its retries,
// records past MaximumRecordAgeInSeconds sent there unprocessed (they age
// a real minute meanwhile, while the other checks run), and a SIGKILL
// mid-stream (of kiln up, then restarted; of the cluster's pollers process
// reading a shard, whose shard the other takes over): reading resumes from
// the checkpoints with no record lost and again only records of the
// batches in flight.
func TestStreamMappings(t *testing.T) {
	ownTargets(t)
	for _, name := range targetNames {
		t.Run(name, func(t *testing.T) { testStreamMappings(t, name) })
	}
}

func testStreamMappings(t *testing.T, name string) {
	const n = 1000
	here := filepath.Join(moduleRoot(t), "e2e")
	tg, k, zipPath, sink := sinkTarget(t, name, "streams_fn.py")
	home := t.TempDir()
	env := append(clientEnv(tg, home, nil), "ACCOUNT="+tg.accountID, "FN_ZIP="+zipPath, "SINK="+sink,
		"N="+strconv.Itoa(n), "DEADLINE=120")
	script := func(t *testing.T, timeout time.Duration, args ...string) {
		runScript(t, tg.log, timeout, env, args[0], args[1:]...)
	}
	cli, py := filepath.Join(here, "streams.sh"), filepath.Join(here, "streams_test.py")

	if !t.Run("streams and mappings with the CLI", func(t *testing.T) {
		script(t, 60*time.Second, "bash", cli, "streams")
		script(t, 60*time.Second, python, py, "put-aged") // mapped once a minute has passed
		script(t, 120*time.Second, "bash", cli, "setup")
	}) {
		t.FailNow()
	}
	t.Run("order under ParallelizationFactor 5", func(t *testing.T) { script(t, 150*time.Second, python, py, "order") })
	t.Run("poison isolated by bisect", func(t *testing.T) { script(t, 150*time.Second, python, py, "poison") })
	t.Run("SIGKILL mid-stream", func(t *testing.T) {
		killMidStream(t, tg, k, midStream{n: n, sink: sink, marker: `"stream": "crash"`, items: "records",
			arnSuffix: ":stream/crash", shard: "shardId-000000000000", holds: "reading the crash stream's first shard",
			put:    func(t *testing.T) { script(t, 120*time.Second, python, py, "crash-put") },
			verify: func(t *testing.T) { script(t, 150*time.Second, python, py, "crash-verify") }})
	})
	t.Run("records past the maximum age", func(t *testing.T) { script(t, 150*time.Second, python, py, "aged") })
}
