package server_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/server"
	"golang.org/x/sys/unix"
)

// smallDisk mounts a tmpfs of size bytes for the test and unmounts it at
// the end.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file on dir's file system until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	out, _ := exec.Command("dd", "if=/dev/zero", "of="+p, "bs=1M").CombinedOutput()
	if !strings.Contains(string(out), "No space left") {
		t.Fatalf("dd did not fill %s: %s", dir, out)
	}
	return p
}

// TestDiskFullRefusesAndRecovers: once the disk of Kiln's store fills,
// Event invokes and configuration changes are refused with a retryable
// 503 ServiceException naming the cause, metrics show it, sync invokes go
// on, and everything works again by itself once space is freed.
func TestDiskFullRefusesAndRecovers(t *testing.T) {
	disk := smallDisk(t, "96m")
	// The default log cap (1 GiB) is reserved inside JetStream's store: on
	// this small disk it must shrink to fit, or Kiln would not start.
	s := kilntest.Start(t, server.Config{DataDir: filepath.Join(disk, "data"), MetricsListen: "127.0.0.1:0"})
	c := kilntest.Lambda(s)
	toolkit(t, c, "echo", nil)
	call(t, c, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{}`)})
	within := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 40*time.Second) }
	event := func() error {
		cctx, cancel := within()
		defer cancel()
		_, err := c.Invoke(cctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), InvocationType: types.InvocationTypeEvent, Payload: []byte(`{"a":1}`)})
		return err
	}
	update := func(desc string) error {
		cctx, cancel := within()
		defer cancel()
		_, err := c.UpdateFunctionConfiguration(cctx, &lambda.UpdateFunctionConfigurationInput{FunctionName: aws.String("echo"), Description: aws.String(desc)})
		return err
	}
	if err := event(); err != nil {
		t.Fatal(err)
	}
	acct := accountLabel(s)
	full, ran := "kiln_store_disk_full", `kiln_invocations_total{`+acct+`function="echo",outcome="success"}`
	if got, ok := scrape(t, s)(full); !ok || got != 0 {
		t.Fatalf("%s = %v (%v) before the disk fills", full, got, ok)
	}

	filler := fill(t, disk)
	// The watch notices within moments; a write that raced it may fail otherwise.
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = event(); err != nil && strings.Contains(err.Error(), "out of disk space") {
			break
		}
	}
	kilntest.APIError(t, err, "ServiceException", 503)
	kilntest.APIError(t, update("while full"), "ServiceException", 503)
	if err := update("while full"); !strings.Contains(err.Error(), "out of disk space") {
		t.Fatalf("the error does not name the cause: %v", err)
	}
	if got := metric(t, s, full); got != 1 {
		t.Fatalf("%s = %v while the disk is full", full, got)
	}
	if out := call(t, c, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"sync":true}`)}); string(out.Payload) != `{"sync":true}` {
		t.Fatalf("sync invoke while the disk is full: %s", out.Payload)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if err = event(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Event invokes still refused after space was freed: %v", err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if err = update("after"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("configuration updates still refused after space was freed: %v", err)
		}
	}
	if got := metric(t, s, full); got != 0 {
		t.Fatalf("%s = %v after space was freed", full, got)
	}
	// Every invoke taken ran: two sync, the event before the disk filled
	// and the one after.
	waitFor(t, func() bool { return metric(t, s, ran) >= 4 })
}
