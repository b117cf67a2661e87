package queues

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/kilntest/wait"
	"github.com/kiln-dev/kiln/internal/natsd"
	"github.com/kiln-dev/kiln/internal/natsd/natstest"
)

// TestDescriptionsFollowOtherProcesses: two services on one JetStream (two
// processes of a cluster) each cache the queues they use; a change or a
// deletion through one reaches the other; with reads from the bucket's
// leader (natsd.LeaderGet) as without.
func TestDescriptionsFollowOtherProcesses(t *testing.T) {
	for _, leader := range []bool{false, true} {
		t.Run(fmt.Sprint("leader reads ", leader), func(t *testing.T) {
			ns, err := natsd.Start(natsd.Config{Dir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(ns.Shutdown)
			ctx := context.Background()
			open := func() *Service {
				nc, err := ns.Connect()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(nc.Close)
				s, err := New(ctx, Config{NATS: nc})
				if err != nil {
					t.Fatal(err)
				}
				if leader { // one server: the leader's answer, as in a cluster
					s.kv.Leader = nc
				}
				return s
			}
			a, b := open(), open()
			if err := a.Create(ctx, "123456789012", "shared", nil, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Send(ctx, "123456789012", "shared", SendInput{MessageBody: "x"}); err != nil {
				t.Fatal(err) // b has it cached now
			}
			if err := a.SetAttributes(ctx, "123456789012", "shared", map[string]string{"MaximumMessageSize": "1024"}); err != nil {
				t.Fatal(err)
			}
			big := SendInput{MessageBody: strings.Repeat("a", 2000)}
			var e *Error
			deadline := time.Now().Add(60 * time.Second)
			for {
				_, err := b.Send(ctx, "123456789012", "shared", big)
				if errors.As(err, &e) && e.Code == errInvalidParam.code {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("b still takes a 2,000-byte message after the limit became 1,024: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := a.Delete(ctx, "123456789012", "shared"); err != nil {
				t.Fatal(err)
			}
			for {
				_, err := b.Send(ctx, "123456789012", "shared", SendInput{MessageBody: "y"})
				if errors.As(err, &e) && e.Code == errNoQueue.code {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("b still sends to the deleted queue: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// In a cluster, a queue created through one node is listed and found
// through the others at once; a deleted one is no longer listed.
func TestListedRightAfterCreateInCluster(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	var svcs []*Service
	for _, n := range nodes {
		nc := natstest.ConnectTo(t, n)
		var s *Service
		wait.Retry(t, "open the service", func(ctx context.Context) (err error) {
			s, err = New(ctx, Config{NATS: nc, Replicas: 3})
			return err
		})
		svcs = append(svcs, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const account = "123456789012"
	for i := range 15 {
		name := fmt.Sprintf("q%02d", i)
		if err := svcs[0].Create(ctx, account, name, nil, nil); err != nil {
			t.Fatal(err)
		}
		r := svcs[1+i%2]
		if names, err := r.List(ctx, account, ""); err != nil || len(names) != i+1 || names[i] != name {
			t.Fatalf("listed %q (%v) right after creating %s", names, err, name)
		}
		if err := r.Exists(ctx, account, name); err != nil {
			t.Fatalf("%s right after its create: %v", name, err)
		}
	}
	if err := svcs[0].Delete(ctx, account, "q00"); err != nil {
		t.Fatal(err)
	}
	if names, err := svcs[1].List(ctx, account, "q00"); err != nil || len(names) != 0 {
		t.Fatalf("listed %q (%v) after deleting q00", names, err)
	}
}
