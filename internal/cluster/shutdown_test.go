package cluster_test

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	cwl "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/kilntest/wait"
)

// TestRolesStopWithoutNATS: with every NATS node gone (killed -9), a
// worker that has run an invoke (its log store has lines and an index to
// write), a frontend, a pollers process, a control plane, an assignment
// member and placement each exit on SIGTERM within 30 s: their closes that
// need NATS share the role's shutdown deadline (10 s). Before, each waited
// out its own JetStream timeouts in turn, and the worker took 45 s.
func TestRolesStopWithoutNATS(t *testing.T) {
	f := up(t, cluster.UpConfig{Workers: 1, Pollers: 1, Frontends: 1})
	c := client(f, 0)
	create(t, c, "fn")
	if o := invoke(c, "fn", `{}`); o.err != nil {
		t.Fatal(o.err)
	}
	for _, p := range f.Procs {
		if p.Role == "nats" {
			if _, err := f.Kill(p.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	var stopping []cluster.Proc
	for _, name := range []string{"worker-a1", "frontend-1", "pollers-1", "controlplane-1", "assignment-a", "placement"} {
		p, err := f.Signal(name, syscall.SIGTERM)
		if err != nil {
			t.Fatal(err)
		}
		stopping = append(stopping, p)
	}
	began := time.Now()
	exited := map[string]time.Duration{}
	wait.Within(t, 30*time.Second, "roles to exit on SIGTERM without NATS", func() error {
		var err error
		for _, p := range stopping {
			if _, ok := exited[p.Name]; ok {
				continue
			}
			if cluster.Running(p) {
				err = fmt.Errorf("%s running", p.Name)
			} else {
				exited[p.Name] = time.Since(began).Round(100 * time.Millisecond)
			}
		}
		return err
	})
	t.Logf("exited after SIGTERM: %v", exited)
}

// TestWorkerSIGTERMFinishesInvoke: a worker given SIGTERM mid-invoke takes
// no new requests but lets the invoke in flight finish (within its
// shutdown deadline) before it ends its environments, then exits.
func TestWorkerSIGTERMFinishesInvoke(t *testing.T) {
	f := up(t, cluster.UpConfig{Workers: 1, Pollers: 1, Frontends: 1})
	c := client(f, 0)
	create(t, c, "slow")
	result := make(chan outcome, 1)
	go func() { result <- invoke(c, "slow", `{"action":"sleep","ms":5000}`) }()
	logs := cwl.New(cwl.Options{Region: f.Region, BaseEndpoint: aws.String(f.Frontends[0]),
		Credentials: credentials.NewStaticCredentialsProvider(f.AccessKeyID, f.SecretAccessKey, ""), RetryMaxAttempts: 1})
	// The worker writes START as it hands the invoke to the function.
	wait.True(t, "the invoke to start on the worker", func() bool {
		ev, err := logs.FilterLogEvents(ctx, &cwl.FilterLogEventsInput{LogGroupName: aws.String("/aws/lambda/slow"),
			FilterPattern: aws.String(`"START RequestId"`)})
		return err == nil && len(ev.Events) > 0
	})
	w, err := f.Signal("worker-a1", syscall.SIGTERM)
	if err != nil {
		t.Fatal(err)
	}
	if o := <-result; o.err != nil || !strings.Contains(o.payload, `"sleep"`) {
		t.Fatalf("invoke in flight at SIGTERM: %v %s", o.err, o.payload)
	}
	wait.Within(t, 30*time.Second, "the worker to exit", func() error {
		if cluster.Running(w) {
			return errors.New("running")
		}
		return nil
	})
}
