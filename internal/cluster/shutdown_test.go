package cluster_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

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
