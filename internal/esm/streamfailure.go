package esm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-dev/kiln/internal/api"
	"github.com/kiln-dev/kiln/internal/invoke"
	"github.com/kiln-dev/kiln/internal/queues"
)

// failureRecord is what a stream mapping sends its failure destination
// about records it gives up: their metadata, as Lambda's.
type failureRecord struct {
	RequestContext struct {
		RequestID              string `json:"requestId"`
		FunctionArn            string `json:"functionArn"`
		Condition              string `json:"condition"`
		ApproximateInvokeCount int    `json:"approximateInvokeCount"`
	} `json:"requestContext"`
	ResponseContext *responseContext `json:"responseContext,omitempty"`
	Version         string           `json:"version"`
	Timestamp       string           `json:"timestamp"`
}

// responseContext is the invoke that failed last, when there was one.
type responseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError"`
}

// fail sends the failure destination the metadata of records given up
// (none configured: they are dropped, as Lambda's). It retries until the
// destination took it: the checkpoint moves past them only then.
func (sr *shardRun) fail(recs []StreamRecord, condition string, invokes int, resp *invoke.Response) error {
	m := sr.r.m
	sr.r.s.p.log.Info("esm: records given up", "uuid", m.UUID, "shard", sr.shard, "condition", condition,
		"first", recs[0].Position, "last", recs[len(recs)-1].Position, "records", len(recs))
	dest := m.onFailure()
	if dest == "" {
		return nil
	}
	var f failureRecord
	f.RequestContext.RequestID, f.RequestContext.FunctionArn = api.NewUUID(), m.FunctionArn
	f.RequestContext.Condition, f.RequestContext.ApproximateInvokeCount = condition, invokes
	if resp != nil {
		f.RequestContext.RequestID = resp.RequestID
		f.ResponseContext = &responseContext{200, resp.ExecutedVersion, resp.FunctionError}
	}
	f.Version, f.Timestamp = "1.0", isoMilli(time.Now())
	doc := map[string]any{}
	b, _ := json.Marshal(&f)
	json.Unmarshal(b, &doc)
	key, info := sr.r.src.BatchInfo(sr.shard, recs)
	doc[key] = info
	body, _ := json.Marshal(doc)
	backoff := 100 * time.Millisecond
	for {
		err := sr.r.s.p.send(sr.ctx, m.Account, dest, body)
		if err == nil {
			return nil
		}
		if sr.ctx.Err() != nil {
			return sr.ctx.Err()
		}
		sr.r.report("PROBLEM: Failure destination " + dest + ": " + err.Error())
		pause(sr.ctx, backoff)
		backoff = min(2*backoff, 10*time.Second)
	}
}

// queueSender sends to a Kiln queue (the queue service).
type queueSender interface {
	Send(ctx context.Context, account, name string, in queues.SendInput) (*queues.SendResult, error)
}

// send delivers a failure record to a queue or a function of the
// mapping's account (the API checked it; a stored mapping is checked
// again).
func (p *Pollers) send(ctx context.Context, account, arn string, body []byte) error {
	d, err := api.ParseDestination(arn)
	if err != nil {
		return err
	}
	if d.Account != account {
		return fmt.Errorf("destination %s is outside account %s", arn, account)
	}
	if d.Kind == api.DestinationQueue {
		q, ok := p.cfg.Queues.(queueSender)
		if !ok {
			return errors.New("no queue service to send to")
		}
		_, err = q.Send(ctx, d.Account, d.Name, queues.SendInput{MessageBody: string(body)})
		return err
	}
	_, err = p.cfg.Invoker.Invoke(ctx, invoke.Request{Account: account, Function: arn, Payload: body})
	return err
}
