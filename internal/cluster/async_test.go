package cluster_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/nats-io/nats.go/jetstream"
)

// gauge reads one series from a Prometheus text endpoint (0 when absent).
// acct is the account label of f's default account's series, as it
// leads a series' labels.
func acct(f *cluster.File) string { return `account="` + f.AccountID + `",` }

func gauge(url, series string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// A pollers process killed with SIGKILL in the middle of a batch of Event
// invokes: its leases expire, the other pollers process takes its queues,
// the events it held unacknowledged are redelivered, and every accepted
// event runs (at least once: its success record reaches the destination).
func TestKillPollersMidBatch(t *testing.T) {
	f := up(t, cluster.UpConfig{Sandbox: "process"})
	c := client(f, 0)
	create(t, c, "ev")
	nc, err := f.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	done := eventinvoke.QueueARN(f.Region, f.AccountID, "done")
	if _, err := c.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("ev"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(done)}}}); err != nil {
		t.Fatal(err)
	}

	const events = 80
	accepted := map[string]bool{}
	for i := range events {
		out, err := client(f, i%2).Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("ev"), InvocationType: types.InvocationTypeEvent,
			Payload: []byte(`{"action":"sleep","ms":3000}`)}) // long enough to be seen running on a loaded host
		if err != nil || out.StatusCode != 202 {
			t.Fatalf("Event invoke %d: %v", i, err)
		}
		id, _ := awsmiddleware.GetRequestIDMetadata(out.ResultMetadata)
		accepted[id] = true
	}
	var readErr error
	ran := func() map[string]int {
		msgs, err := eventinvoke.ReadQueue(ctx, js, done, 1, 0)
		if err != nil {
			readErr = err // JetStream electing a leader: read again
			return nil
		}
		n := map[string]int{}
		for _, m := range msgs {
			var r struct {
				RequestContext struct {
					RequestID string `json:"requestId"`
				} `json:"requestContext"`
			}
			if err := json.Unmarshal(m.Body, &r); err != nil {
				t.Fatalf("record %s: %v", m.Body, err)
			}
			n[r.RequestContext.RequestID]++
		}
		return n
	}

	// Kill the pollers process that is invoking, once some events have
	// run and others have not.
	var victim cluster.Proc
	for deadline := time.Now().Add(60 * time.Second); victim.Name == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no pollers process was seen invoking within 60 s (last queue read error: %v)", readErr)
		}
		if n := len(ran()); n == 0 || n >= events {
			if n >= events {
				t.Fatalf("every event ran before a poller could be killed")
			}
			continue
		}
		for _, p := range f.Procs {
			if p.Role == "pollers" && gauge(p.Metrics, `kiln_concurrent_executions{`+acct(f)+`function="ev"}`) > 0 {
				victim = p
				break
			}
		}
	}
	before := len(ran())
	if _, err := f.Kill(victim.Name); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed %s (pid %d) with %d of %d events run", victim.Name, victim.PID, before, events)

	var got map[string]int
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if got = ran(); got != nil {
			missing := 0
			for id := range accepted {
				if got[id] == 0 {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d accepted events never ran, 120 s after %s was killed", missing, events, victim.Name)
			}
		}
	}
	again := 0
	for id, n := range got {
		if !accepted[id] {
			t.Errorf("a record for request %s, which was never sent", id)
		}
		again += n - 1
	}
	t.Logf("every event ran %v after the kill; %d have a second success record (redelivered after they had run)",
		time.Since(killed).Round(100*time.Millisecond), again)
}
