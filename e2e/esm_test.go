package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/kiln-dev/kiln/internal/esm"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestQueuesAndMappings drives Kiln queues with Debian's AWS CLI (sqs.sh)
// and event source mappings from them to a Python function with the CLI
// and boto3 (esm_test.py): bulk messages with a filter, partial batch
// failures, a poison message to the dead-letter queue, FIFO order, and a
// SIGKILL mid-stream: of kiln up (then restarted), or of the cluster's
// pollers process running the mapping (the other takes it over). Each
// target is one of the test's own, with the process sandbox, so that the
// function can append what it saw to a file of the test's (the sink
// survives the kill; the Logs API would lose the last lines of a killed
// kiln up). $KILN_ESM_MESSAGES sets the bulk and crash queues' size
// (default 2,000).
func TestQueuesAndMappings(t *testing.T) {
	ownTargets(t)
	n := 2000
	if s := os.Getenv("KILN_ESM_MESSAGES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 10 {
			t.Fatalf("KILN_ESM_MESSAGES=%q: want a number of at least 10", s)
		}
	}
	for _, name := range targetNames {
		t.Run(name, func(t *testing.T) { testMappings(t, name, n) })
	}
}

// sinkTarget starts a target of the test's own (kiln up, or a cluster with
// two workers) with the process sandbox, so that a function can append
// what it saw to a file of the test's (the sink survives a kill; the Logs
// API would lose the last lines of a killed kiln up), and packages the
// Python function e2e/FN as app.py. k is kiln up's process (nil for the
// cluster).
func sinkTarget(t *testing.T, name, fn string) (tg *target, k *kiln, zipPath, sink string) {
	dir := t.TempDir()
	code, err := os.ReadFile(filepath.Join(moduleRoot(t), "e2e", fn))
	if err != nil {
		t.Fatal(err)
	}
	zip, err := fntest.ZipFiles(map[string][]byte{"app.py": code})
	if err != nil {
		t.Fatal(err)
	}
	zipPath = filepath.Join(dir, "fn.zip")
	if err := os.WriteFile(zipPath, zip, 0o644); err != nil {
		t.Fatal(err)
	}
	sink = filepath.Join(dir, "sink.jsonl")
	switch name {
	case "up":
		addr := kilntest.FreeAddr(t)
		k = &kiln{t: t, bin: suite.bin, data: filepath.Join(dir, "data"), addr: addr,
			endpoint: "http://" + addr, logPath: filepath.Join(dir, "kiln.log"), args: []string{"--sandbox", "process"}}
		t.Cleanup(func() {
			if err := k.stop(); err != nil {
				t.Error(err)
			}
		})
		k.start()
		var ident struct{ AccountID string }
		b, err := os.ReadFile(filepath.Join(k.data, "identity.json"))
		if err == nil {
			err = json.Unmarshal(b, &ident)
		}
		if err != nil || ident.AccountID == "" {
			t.Fatalf("account of kiln up: %v", err)
		}
		tg = &target{name: "up", endpoints: []string{k.endpoint}, dir: k.data, accountID: ident.AccountID, log: k.log, up: k}
	case "cluster":
		tg = startCluster(t, "cluster-esm", "--sandbox", "process", "--workers", "2")
		t.Cleanup(func() { tg.cluster.Down() })
	}
	return tg, k, zipPath, sink
}

func testMappings(t *testing.T, name string, n int) {
	here := filepath.Join(moduleRoot(t), "e2e")
	tg, k, zipPath, sink := sinkTarget(t, name, "esm_fn.py")
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	os.MkdirAll(home, 0o700)
	env := append(clientEnv(tg, home, nil), "ACCOUNT="+tg.accountID, "ESM_ZIP="+zipPath, "SINK="+sink,
		"N="+strconv.Itoa(n), "DEADLINE=240")
	script := func(t *testing.T, timeout time.Duration, args ...string) {
		runScript(t, tg.log, timeout, env, args[0], args[1:]...)
	}
	sqsSh, esmPy := filepath.Join(here, "sqs.sh"), filepath.Join(here, "esm_test.py")

	t.Run("queue API with the CLI", func(t *testing.T) { script(t, 300*time.Second, "bash", sqsSh, "api") })
	if !t.Run("mappings with the CLI", func(t *testing.T) { script(t, 300*time.Second, "bash", sqsSh, "setup") }) {
		t.FailNow()
	}
	t.Run("processing with boto3", func(t *testing.T) {
		script(t, 120*time.Second, python, esmPy, "send")
		script(t, 300*time.Second, python, esmPy, "verify")
	})
	t.Run("SIGKILL mid-stream", func(t *testing.T) {
		killMidStream(t, tg, k, midStream{n: n, sink: sink, marker: `"crash-`, items: "messages",
			arnSuffix: ":crash", holds: "running the crash mapping",
			put:    func(t *testing.T) { script(t, 120*time.Second, python, esmPy, "crash-send") },
			verify: func(t *testing.T) { script(t, 300*time.Second, python, esmPy, "crash-verify") }})
	})
}

// midStream is a mapping test's SIGKILL mid-stream: put sends n items the
// function marks in sink's lines with marker; verify checks, after the
// kill, what it saw. In the cluster the process killed is the one holding
// the lease of the mapping whose source ARN ends in arnSuffix (of shard,
// when set), which holds describes.
type midStream struct {
	n                       int
	sink, marker, items     string
	arnSuffix, shard, holds string
	put, verify             func(t *testing.T)
}

// killMidStream kills, once the function has seen a tenth of the items but
// not all: kiln up (then restarted), or the cluster's pollers process
// running the mapping (another takes it over).
func killMidStream(t *testing.T, tg *target, k *kiln, c midStream) {
	if k != nil {
		parent := k.t
		k.t = t
		defer func() { k.t = parent }()
	}
	c.put(t)
	deadline := time.Now().Add(120 * time.Second)
	for {
		b, _ := os.ReadFile(c.sink)
		seen := strings.Count(string(b), c.marker)
		if seen >= c.n/10 {
			if seen >= c.n {
				t.Fatalf("all %d crash %s processed before the kill: nothing to check", c.n, c.items)
			}
			t.Logf("%d of %d crash %s processed", seen, c.n, c.items)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the function saw %d crash %s within 120s\n%s", seen, c.items, tg.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if k != nil {
		t.Logf("SIGKILL of kiln up (pid %d)", k.cmd.Process.Pid)
		syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
		<-k.exited
		k.cmd = nil
		k.start()
	} else {
		holder := mappingHolder(t, tg, c.arnSuffix, c.shard)
		p, err := tg.cluster.Kill(holder)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("SIGKILL of %s (pid %d), the pollers process %s", holder, p.PID, c.holds)
	}
	c.verify(t)
}

// mappingHolder is the cluster's pollers process holding the lease of the
// mapping whose source ARN ends in arnSuffix: of the whole mapping (a
// queue's), or of one of its shards when shard is set (a stream's).
func mappingHolder(t *testing.T, tg *target, arnSuffix, shard string) string {
	nc, err := tg.connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := esm.OpenStore(ctx, js, 3)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasSuffix(m.EventSourceArn, arnSuffix) {
			key := m.UUID
			if shard != "" {
				key += "." + shard
			}
			holder, err := esm.Holder(ctx, js, key)
			if err != nil || !strings.HasPrefix(holder, "pollers-") {
				t.Fatalf("holder of lease %s of the mapping of %s: %q %v", key, arnSuffix, holder, err)
			}
			return holder
		}
	}
	t.Fatalf("no mapping of a source ending in %s", arnSuffix)
	return ""
}

// TestQueuesOnEveryEndpoint: a queue created through one endpoint is
// served by every one (each cluster frontend serves the SQS API on the
// replicated queues): a message sent through each is received and deleted
// through the last.
func TestQueuesOnEveryEndpoint(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		sqsAt := func(endpoint string) *sqs.Client {
			return sqs.New(sqs.Options{Region: region, BaseEndpoint: aws.String(endpoint), Credentials: creds(), RetryMaxAttempts: 1})
		}
		q, err := sqsAt(tg.endpoints[0]).CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("every-endpoint")})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, ep := range tg.endpoints {
			c := sqsAt(ep)
			u, err := c.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String("every-endpoint")})
			if err != nil {
				t.Fatalf("GetQueueUrl through %s: %v", ep, err)
			}
			if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: u.QueueUrl, MessageBody: aws.String(ep)}); err != nil {
				t.Fatalf("SendMessage through %s: %v", ep, err)
			}
			want[ep] = true
		}
		last := sqsAt(tg.endpoints[len(tg.endpoints)-1])
		for deadline := time.Now().Add(30 * time.Second); len(want) > 0; {
			out, err := last.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range out.Messages {
				delete(want, aws.ToString(m.Body))
				if _, err := last.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: q.QueueUrl, ReceiptHandle: m.ReceiptHandle}); err != nil {
					t.Fatal(err)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("messages sent through %v not received through %s", want, tg.endpoints[len(tg.endpoints)-1])
			}
		}
		if _, err := last.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: q.QueueUrl}); err != nil {
			t.Fatal(err)
		}
	})
}
