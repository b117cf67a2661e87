package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// MappingsConfig sizes the event source mapping section.
type MappingsConfig struct {
	Kiln     string // the kiln binary measured; required
	Sandbox  string
	Messages int  // per measurement; 0 means 2000
	Cluster  bool // also through a local cluster
}

// Mappings measures an SQS event source mapping end to end (messages sent
// with SendMessageBatch, run by the function in batches of 10, deleted by
// the pollers) against the queue's own send+receive+delete rate, measured
// in the same run with the same client, and the CPU the process running
// the pollers spent per message (/proc/PID/stat): kiln up's, which also
// serves the queue API and the embedded NATS (so the baseline's CPU is
// given too), and a cluster's pollers processes', which do nothing else.
func Mappings(ctx context.Context, cfg MappingsConfig, out io.Writer) error {
	if cfg.Messages == 0 {
		cfg.Messages = 2000
	}
	dir, zip, s, done, err := upWithEcho(ctx, cfg.Kiln, cfg.Sandbox, "kiln-bench-esm-", out)
	if err != nil {
		return err
	}
	defer done()
	fmt.Fprintf(out, "\nevent source mappings: %d messages per series, sent in batches of 10 by 4 clients; mapping batch size 10\n", cfg.Messages)
	if err := mappingSeries(ctx, s, zip, []int{s.pid}, "kiln up", cfg.Messages, out); err != nil {
		return err
	}
	if !cfg.Cluster {
		return nil
	}
	fmt.Fprintln(out, "starting a local cluster (kiln cluster up) ...")
	f, down, err := clusterUp(ctx, cfg.Kiln, filepath.Join(dir, "cluster"), cfg.Sandbox)
	if err != nil {
		return err
	}
	defer down()
	var pollers []int
	for _, p := range f.Procs {
		if p.Role == "pollers" {
			pollers = append(pollers, p.PID)
		}
	}
	return mappingSeries(ctx, atEndpoint(f.Frontends[0]), zip, pollers, "cluster (pollers processes)", cfg.Messages, out)
}

// mappingSeries runs the queue's baseline, then the mapping, on one Kiln;
// pids run its pollers.
func mappingSeries(ctx context.Context, k *kilnProcess, zip []byte, pids []int, name string, n int, out io.Writer) error {
	q := sqs.New(sqs.Options{Region: benchRegion, BaseEndpoint: aws.String(k.endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(benchKey, benchSecret, "")})
	mk := func(name string) (string, string, error) {
		o, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{"VisibilityTimeout": "30"}})
		if err != nil {
			return "", "", err
		}
		a, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: o.QueueUrl, AttributeNames: []types.QueueAttributeName{"QueueArn"}})
		if err != nil {
			return "", "", err
		}
		return aws.ToString(o.QueueUrl), a.Attributes["QueueArn"], nil
	}
	// Baseline: the same sends, then receive and delete by the API.
	base, _, err := mk("bench-base")
	if err != nil {
		return err
	}
	cpu0 := cpuOf(pids)
	start := time.Now()
	if err := sendAll(ctx, q, base, n); err != nil {
		return err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got int
	var rerr error
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				done := got >= n || rerr != nil
				mu.Unlock()
				if done {
					return
				}
				r, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &base, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
				if err == nil && len(r.Messages) > 0 {
					var del []types.DeleteMessageBatchRequestEntry
					for i, m := range r.Messages {
						del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
					}
					_, err = q.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: &base, Entries: del})
				}
				mu.Lock()
				got += len(r.Messages)
				if err != nil {
					rerr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if rerr != nil {
		return rerr
	}
	baseRate, baseCPU := float64(n)/time.Since(start).Seconds(), (cpuOf(pids)-cpu0)/time.Duration(n)

	// End to end: a mapping to the echo function, then the same sends.
	const fn = "bench-esm"
	if err := k.createEcho(ctx, fn, zip, 512); err != nil {
		return err
	}
	url, arn, err := mk("bench-esm")
	if err != nil {
		return err
	}
	m, err := k.lambda.CreateEventSourceMapping(ctx, &lambda.CreateEventSourceMappingInput{FunctionName: aws.String(fn), EventSourceArn: &arn, BatchSize: aws.Int32(10)})
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		g, err := k.lambda.GetEventSourceMapping(ctx, &lambda.GetEventSourceMappingInput{UUID: m.UUID})
		if err == nil && aws.ToString(g.State) == "Enabled" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mapping not enabled within a minute: %v", err)
		}
	}
	cpu0 = cpuOf(pids)
	start = time.Now()
	if err := sendAll(ctx, q, url, n); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		a, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &url, AttributeNames: []types.QueueAttributeName{"All"}})
		if err != nil {
			return err
		}
		if a.Attributes["ApproximateNumberOfMessages"] == "0" && a.Attributes["ApproximateNumberOfMessagesNotVisible"] == "0" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mapping did not drain the queue within 10 minutes: %v", a.Attributes)
		}
	}
	rate, cpu := float64(n)/time.Since(start).Seconds(), (cpuOf(pids)-cpu0)/time.Duration(n)
	fmt.Fprintf(out, "%-28s queue send+receive+delete %7.0f msg/s (CPU %s/msg)   mapping send→function→delete %7.0f msg/s (CPU %s/msg)   ratio %.2f\n",
		name, baseRate, baseCPU.Round(time.Microsecond), rate, cpu.Round(time.Microsecond), rate/baseRate)
	return nil
}

// sendAll sends n messages in batches of 10 from 4 clients.
func sendAll(ctx context.Context, q *sqs.Client, url string, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c * 10; i < n; i += 40 {
				var entries []types.SendMessageBatchRequestEntry
				for j := i; j < min(i+10, n); j++ {
					entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(fmt.Sprintf(`{"i":%d}`, j))})
				}
				o, err := q.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: entries})
				if err == nil && len(o.Failed) > 0 {
					err = fmt.Errorf("send: %s", aws.ToString(o.Failed[0].Message))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// cpuOf is the CPU time the processes pids have used.
func cpuOf(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		total += processCPU(pid)
	}
	return total
}
