package cluster_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/kilntest/load"
)

// TestNetnsZones runs `kiln cluster up --netns`: each zone a host of its
// own (a network namespace with its own address), every role-to-role byte
// crossing a real network stack. Then zone c's link goes down silently
// under invokes through a zone-a frontend: the other zones take its
// partitions and keep serving, with one leader each.
func TestNetnsZones(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	// The zones' namespaces have no cgroup hierarchy mounted for the Linux
	// sandbox; this test is about the network between roles.
	f := up(t, cluster.UpConfig{Netns: true, Sandbox: "process"})
	zones := []string{"a", "b", "c"}
	for _, p := range append(f.Procs, cluster.Proc{Name: "frontend-1", Zone: "a", Addr: f.Frontends[0]}) {
		addr := f.Netns.Addrs[slices.Index(zones, p.Zone)]
		if p.Addr != "" && !strings.Contains(p.Addr, "//"+addr+":") || p.NATS != "" && !strings.Contains(p.NATS, "//"+addr+":") {
			t.Errorf("%s (zone %s) serves on %s%s, not on its zone's address %s", p.Name, p.Zone, p.Addr, p.NATS, addr)
		}
	}
	// Zone a's frontend, with a bound on each call: an invoke must not
	// wait forever on a cut link.
	c := lambda.New(lambda.Options{Region: f.Region, BaseEndpoint: aws.String(f.Frontends[0]),
		Credentials:      credentials.NewStaticCredentialsProvider(f.AccessKeyID, f.SecretAccessKey, ""),
		RetryMaxAttempts: 1, HTTPClient: &http.Client{Timeout: time.Minute}})
	create(t, c, "hop")
	if o := invoke(c, "hop", `{}`); o.err != nil {
		t.Fatal(o.err)
	}

	var mu sync.Mutex
	var results []outcome
	stop := load.Repeat(3, func(int) {
		o := invoke(c, "hop", `{"action":"sleep","ms":5}`)
		mu.Lock()
		results = append(results, o)
		mu.Unlock()
	})
	time.Sleep(2 * time.Second) // load runs a while before the cut (the scenario)
	cutAt := time.Now()
	if err := f.Netns.SetLink(2, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Netns.SetLink(2, true) })
	// Serve for a while after the cut: until 200 invokes issued 15 s or
	// more after it succeeded, or a minute.
	settle := 15 * time.Second
	late := func() (ok, failed int) {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range results {
			if o.start.After(cutAt.Add(settle)) {
				if o.err == nil {
					ok++
				} else {
					failed++
				}
			}
		}
		return
	}
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if ok, _ := late(); ok >= 200 {
			break
		}
	}
	stop()
	var failedEarly int
	var firstOK time.Duration = -1
	for _, o := range results {
		if o.start.After(cutAt) && o.err == nil && firstOK < 0 {
			firstOK = o.end.Sub(cutAt)
		}
		if o.err != nil && o.start.Before(cutAt.Add(settle)) {
			failedEarly++
			t.Logf("invoke issued %v after the cut failed: %v", o.start.Sub(cutAt), o.err)
		}
	}
	ok, failed := late()
	t.Logf("zone c cut off: %d invokes failed while the cluster noticed; from %v after the cut on: %d ok, %d failed",
		failedEarly, settle, ok, failed)
	if ok < 200 || failed > 0 {
		t.Fatalf("after the cut settled: %d ok, %d failed", ok, failed)
	}
	// Every partition is led outside zone c, by one member (as far as the
	// members on this side of the cut say).
	// Generous: on a loaded host the JetStream streams behind the leases may
	// take a while to elect leaders outside zone c.
	waitFor(t, 90*time.Second, "partitions led outside zone c", func() string {
		st, err := f.Status(ctx, "")
		if err != nil {
			return err.Error()
		}
		leading := map[int][]string{}
		for _, m := range st.Members {
			for _, ps := range m.Partitions {
				if ps.Leading {
					leading[ps.Partition] = append(leading[ps.Partition], m.Member)
				}
			}
		}
		for _, p := range st.Partitions {
			if p.Zone == "c" || p.Leader == "" {
				return fmt.Sprintf("partition %d led by %q in zone %q", p.Partition, p.Leader, p.Zone)
			}
			if len(leading[p.Partition]) > 1 {
				t.Errorf("partition %d has leaders %v", p.Partition, leading[p.Partition])
			}
		}
		return ""
	})
}
