package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/kiln-dev/kiln/internal/worker/sandboxtest"
	"golang.org/x/sys/unix"
)

// kilnBinary builds cmd/kiln once for the tests of this file.
var kilnBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kiln-e2e-bin-")
	if err != nil {
		return "", err
	}
	return fntest.BuildKiln(dir)
})

// upProcess is a `kiln up` child process started by runUp.
type upProcess struct {
	cmd      *exec.Cmd
	endpoint string
	mu       sync.Mutex
	out      bytes.Buffer // stdout and stderr
	exited   chan struct{}
}

func (p *upProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// runUp starts `kiln up --data data --listen 127.0.0.1:0 args...` with env
// added to the test's environment and waits for its banner. The process is
// stopped (SIGKILL to its group) when the test ends, if it still runs.
func runUp(t *testing.T, data string, env []string, args ...string) *upProcess {
	t.Helper()
	bin, err := kilnBinary()
	if err != nil {
		t.Fatal(err)
	}
	return runUpBin(t, bin, data, env, args...)
}

// runUpBin is runUp of the kiln binary at bin.
func runUpBin(t *testing.T, bin, data string, env []string, args ...string) *upProcess {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"up", "--data", data, "--listen", "127.0.0.1:0", "--metrics-listen", ""}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &upProcess{cmd: cmd, exited: make(chan struct{})}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		w.Close()
		close(p.exited)
	}()
	endpoint := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		re := regexp.MustCompile(`^\s+endpoint:\s+(\S+)`)
		for sc.Scan() {
			p.mu.Lock()
			p.out.Write(append(sc.Bytes(), '\n'))
			p.mu.Unlock()
			if m := re.FindSubmatch(sc.Bytes()); m != nil {
				endpoint <- string(m[1])
			}
		}
		io.Copy(io.Discard, r)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	})
	select {
	case p.endpoint = <-endpoint:
	case <-p.exited:
		t.Fatalf("kiln up exited before it was up:\n%s", p.output())
	case <-time.After(60 * time.Second):
		t.Fatalf("kiln up printed no endpoint within 60s:\n%s", p.output())
	}
	// The banner ends a moment after the endpoint line.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.output(), "aws lambda list-functions") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// stop sends sig and waits up to within for the process to exit.
func (p *upProcess) stop(t *testing.T, sig syscall.Signal, within time.Duration) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("kiln up did not exit within %s of %s:\n%s", within, sig, p.output())
	}
}

// TestKilnUpShowsSecretOnce: the secret key is printed when it is made,
// and never again on later starts over the same data.
func TestKilnUpShowsSecretOnce(t *testing.T) {
	data := t.TempDir()
	first := runUp(t, data, nil, "--sandbox", "process")
	creds, err := os.ReadFile(filepath.Join(data, "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	secret := regexp.MustCompile(`aws_secret_access_key = (\S+)`).FindSubmatch(creds)
	if secret == nil {
		t.Fatalf("no secret in %s", creds)
	}
	if !strings.Contains(first.output(), string(secret[1])) {
		t.Fatalf("the first start does not show the new secret:\n%s", first.output())
	}
	first.stop(t, syscall.SIGTERM, 30*time.Second)
	second := runUp(t, data, nil, "--sandbox", "process")
	if strings.Contains(second.output(), string(secret[1])) {
		t.Fatalf("a later start shows the secret again:\n%s", second.output())
	}
	second.stop(t, syscall.SIGTERM, 30*time.Second)
}

// awsWithFiles runs the AWS CLI with the files kiln up wrote into data.
func awsWithFiles(t *testing.T, data string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, awsCLI, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "LANG=C.UTF-8", "AWS_PAGER=",
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(data, "credentials"), "AWS_CONFIG_FILE=" + filepath.Join(data, "config"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_MAX_ATTEMPTS=1"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestKilnUpTLS: with --tls, kiln up serves HTTPS with a certificate it
// made, the AWS config file it writes names its CA, and awscli and boto3
// work over it with nothing else set; plain HTTP gets nothing.
func TestKilnUpTLS(t *testing.T) {
	requireClients(t)
	data := t.TempDir()
	k := runUp(t, data, nil, "--sandbox", "process", "--tls")
	if !strings.HasPrefix(k.endpoint, "https://") {
		t.Fatalf("endpoint %s", k.endpoint)
	}
	conf, _ := os.ReadFile(filepath.Join(data, "config"))
	ca := filepath.Join(data, "tls", "ca.pem")
	if !strings.Contains(string(conf), "ca_bundle = "+ca) || !strings.Contains(string(conf), "endpoint_url = "+k.endpoint) {
		t.Fatalf("config lacks the CA or the https endpoint:\n%s", conf)
	}
	if out, err := awsWithFiles(t, data, "lambda", "list-functions", "--endpoint-url", k.endpoint); err != nil || !strings.Contains(out, `"Functions"`) {
		t.Fatalf("aws lambda list-functions over https: %v\n%s", err, out)
	}
	// Without the CA the client refuses the certificate.
	os.WriteFile(filepath.Join(data, "config-noca"), bytes.ReplaceAll(conf, []byte("ca_bundle"), []byte("# ca_bundle")), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, awsCLI, "lambda", "list-functions", "--endpoint-url", k.endpoint)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(data, "credentials"),
		"AWS_CONFIG_FILE=" + filepath.Join(data, "config-noca"), "AWS_MAX_ATTEMPTS=1", "AWS_EC2_METADATA_DISABLED=true"}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "SSL") {
		t.Fatalf("a client without the CA connected: %v\n%s", err, out)
	}
	// boto3: create a Python function and invoke it over https.
	zip := filepath.Join(t.TempDir(), "py.zip")
	if err := os.WriteFile(zip, mustZip(t, map[string][]byte{"app.py": []byte("def handler(event, context):\n    return {'over': 'tls', 'got': event}\n")}), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `
import boto3, json, sys
c = boto3.client("lambda", endpoint_url=sys.argv[2])
c.create_function(FunctionName="tls", Runtime="python%d.%d" % sys.version_info[:2], Role="arn:aws:iam::123456789012:role/r",
    Handler="app.handler", Code={"ZipFile": open(sys.argv[1], "rb").read()})
c.get_waiter("function_active_v2").wait(FunctionName="tls")
out = json.load(c.invoke(FunctionName="tls", Payload=b'{"a":1}')["Payload"])
assert out == {"over": "tls", "got": {"a": 1}}, out
print("ok")
`
	py := exec.CommandContext(ctx, python, "-c", script, zip, k.endpoint)
	py.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(data, "credentials"),
		"AWS_CONFIG_FILE=" + filepath.Join(data, "config"), "AWS_EC2_METADATA_DISABLED=true"}
	if out, err := py.CombinedOutput(); err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("boto3 over https: %v\n%s\n%s", err, out, k.output())
	}
	// Plain HTTP on the same port is not served.
	resp, err := http.Get("http" + strings.TrimPrefix(k.endpoint, "https") + "/kiln/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain http served")
		}
	}
	k.stop(t, syscall.SIGTERM, 30*time.Second)
}

func mustZip(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	b, err := fntest.ZipFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lambdaClient is an aws-sdk-go-v2 client of a kiln up started with the
// e2e key pair, retries off.
func lambdaClient(endpoint string) *lambda.Client {
	return lambda.New(lambda.Options{Region: region, BaseEndpoint: aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider(accessKeyID, secretAccessKey, ""),
		RetryMaxAttempts: 1})
}

// TestKilnUpCodeStoreAfterCrashes: kiln up is killed (SIGKILL) again and
// again while clients create functions and update their code; once it is
// up again its code store holds exactly the packages its metadata
// references, and nothing half-written.
func TestKilnUpCodeStoreAfterCrashes(t *testing.T) {
	data := t.TempDir()
	env := []string{"KILN_ACCESS_KEY_ID=" + accessKeyID, "KILN_SECRET_ACCESS_KEY=" + secretAccessKey}
	const cycles, writers = 6, 4
	var packages atomic.Int64
	for cycle := range cycles {
		k := runUp(t, data, env, "--sandbox", "process", "--event-frontend=false")
		c := lambdaClient(k.endpoint)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				name := fmt.Sprintf("f%d", w)
				for i := 0; ctx.Err() == nil; i++ {
					// Packages of many files: unpacking them takes a while.
					files := map[string][]byte{"bootstrap": []byte("#!/bin/sh\n")}
					for f := range 200 {
						files[fmt.Sprintf("lib/%03d.txt", f)] = fmt.Appendf(nil, "cycle %d writer %d package %d file %d", cycle, w, i, f)
					}
					zip, err := fntest.ZipFiles(files)
					if err != nil {
						t.Error(err)
						return
					}
					_, err = c.UpdateFunctionCode(ctx, &lambda.UpdateFunctionCodeInput{FunctionName: aws.String(name), ZipFile: zip, Publish: i%3 == 0})
					var nf *types.ResourceNotFoundException
					if errors.As(err, &nf) {
						_, err = c.CreateFunction(ctx, &lambda.CreateFunctionInput{FunctionName: aws.String(name), Role: aws.String(fntest.Role),
							Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: zip}})
					}
					if err == nil {
						packages.Add(1)
					}
				}
			})
		}
		time.Sleep(time.Duration(400+150*cycle) * time.Millisecond) // the scenario: each cycle kills at another point of the load
		syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
		<-k.exited
		cancel()
		wg.Wait()
	}
	zips, _ := filepath.Glob(filepath.Join(data, "code", "zips", "*.zip"))
	trees, _ := filepath.Glob(filepath.Join(data, "code", "trees", "*"))
	t.Logf("after %d SIGKILLs (%d packages stored): %d zips, %d trees on disk", cycles, packages.Load(), len(zips), len(trees))

	// The imports a crash cut short are resumed at the start: wait for them
	// as a Lambda user would, then restart once more, so that the start's
	// collection sees their end (an update's old package no longer used).
	k := runUp(t, data, env, "--sandbox", "process")
	c := lambdaClient(k.endpoint)
	for fns := lambda.NewListFunctionsPaginator(c, &lambda.ListFunctionsInput{}); fns.HasMorePages(); {
		page, err := fns.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range page.Functions {
			fntest.WaitUpdated(t, c, aws.ToString(f.FunctionName))
		}
	}
	k.stop(t, syscall.SIGTERM, 30*time.Second)
	k = runUp(t, data, env, "--sandbox", "process")
	c = lambdaClient(k.endpoint)
	referenced := map[string]bool{}
	for fns := lambda.NewListFunctionsPaginator(c, &lambda.ListFunctionsInput{}); fns.HasMorePages(); {
		page, err := fns.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range page.Functions {
			for vs := lambda.NewListVersionsByFunctionPaginator(c, &lambda.ListVersionsByFunctionInput{FunctionName: f.FunctionName}); vs.HasMorePages(); {
				page, err := vs.NextPage(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range page.Versions {
					sum, err := base64.StdEncoding.DecodeString(aws.ToString(v.CodeSha256))
					if err != nil {
						t.Fatal(err)
					}
					referenced[hex.EncodeToString(sum)] = true
				}
			}
		}
	}
	stored := func(dir, suffix string) map[string]bool {
		ents, _ := os.ReadDir(filepath.Join(data, "code", dir))
		out := map[string]bool{}
		for _, e := range ents {
			out[strings.TrimSuffix(e.Name(), suffix)] = true
		}
		return out
	}
	orphans := 0
	for _, set := range []map[string]bool{stored("zips", ".zip"), stored("trees", "")} {
		for h := range set {
			if !referenced[h] {
				orphans++
			}
		}
	}
	if zipsNow := stored("zips", ".zip"); orphans > 0 || !maps.Equal(zipsNow, referenced) {
		t.Fatalf("code store after restart: %d zips and trees no function references; zips %d, referenced %d", orphans, len(zipsNow), len(referenced))
	}
	if tmp := stored("tmp", ""); len(tmp) != 0 {
		t.Fatalf("code store tmp holds %d entries after restart", len(tmp))
	}
	t.Logf("after restart: %d packages, each referenced", len(referenced))
}

// procInfo is a process's parent and the cgroups it is in (v1 and v2
// paths under /sys/fs/cgroup).
func procInfo(pid int) (ppid int, cgroups []string, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, nil, false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 2 {
		return 0, nil, false
	}
	ppid, _ = strconv.Atoi(fields[1])
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[2] == "/" {
			continue
		}
		ctrl := strings.TrimPrefix(strings.Split(parts[1], ",")[0], "name=")
		cgroups = append(cgroups, filepath.Join("/sys/fs/cgroup", ctrl, parts[2]))
	}
	return ppid, cgroups, true
}

// sharedTargets is the processes of the suite's running kiln up target
// (started by a test that ran before this one): not left over by it.
func sharedTargets() map[int]bool {
	out := map[int]bool{}
	suite.mu.Lock()
	defer suite.mu.Unlock()
	for _, tg := range suite.targets {
		if tg.up == nil || tg.up.cmd == nil || tg.up.cmd.Process == nil {
			continue
		}
		out[tg.up.cmd.Process.Pid] = true
		for pid := range processTree(tg.up.cmd.Process.Pid) {
			out[pid] = true
		}
	}
	return out
}

// processTree is every live process under root, by pid, with its cgroups.
func processTree(root int) map[int][]string {
	parents := map[int]int{}
	groups := map[int][]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, cg, ok := procInfo(pid); ok {
			parents[pid], groups[pid] = ppid, cg
		}
	}
	tree := map[int][]string{}
	for pid := range parents {
		for p := pid; p > 1; p = parents[p] {
			if p == root {
				tree[pid] = groups[pid]
				break
			}
		}
	}
	return tree
}

// TestKilnUpLeavesNothingAfterSIGTERM: after SIGTERM, while functions run
// and agents are being prepared, no process started by kiln up outlives
// it, by ancestry (this test is their subreaper) or by cgroup.
func TestKilnUpLeavesNothingAfterSIGTERM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the Linux sandbox needs root")
	}
	for _, box := range []string{"linux", "process"} {
		t.Run(box, func(t *testing.T) { leavesNothing(t, box) })
	}
}

// escaper is a function that leaves a process of its own behind, in a
// session of its own, as a daemon would.
const escaper = `package main

import (
	"context"
	"os/exec"
	"syscall"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, event map[string]any) (int, error) {
		cmd := exec.Command("/bin/sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
}
`

func leavesNothing(t *testing.T, box string) {
	// Orphans of kiln up's tree become this process's children.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	data := t.TempDir()
	env := []string{"KILN_ACCESS_KEY_ID=" + accessKeyID, "KILN_SECRET_ACCESS_KEY=" + secretAccessKey}
	k := runUp(t, data, env, "--sandbox", box)
	c := lambdaClient(k.endpoint)
	for name, src := range map[string]string{"sleepy": fntest.ToolkitGo, "escaper": escaper} {
		if _, err := c.CreateFunction(context.Background(), &lambda.CreateFunctionInput{FunctionName: aws.String(name), Role: aws.String(fntest.Role),
			Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: fntest.GoFunctionZip(t, src)},
			Timeout: aws.Int32(30)}); err != nil {
			t.Fatal(err)
		}
		fntest.WaitActive(t, c, name)
	}
	if out, err := c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("escaper")}); err != nil || out.FunctionError != nil {
		t.Fatalf("escaper: %v %+v", err, out)
	}
	// Functions asleep in several environments when the signal comes.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("sleepy"), Payload: []byte(`{"action":"sleep","ms":20000}`)})
		})
	}
	own := map[string]bool{}
	_, kilnGroups, _ := procInfo(k.cmd.Process.Pid)
	for _, g := range kilnGroups {
		own[g] = true
	}
	var tree map[int][]string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		tree = processTree(k.cmd.Process.Pid)
		if len(tree) >= 3+2 || time.Now().After(deadline) { // the spawner, agents and runtimes
			break
		}
	}
	t.Logf("%d processes under kiln up before SIGTERM (%s sandbox)", len(tree), box)
	k.stop(t, syscall.SIGTERM, 30*time.Second)
	wg.Wait()

	// Whatever was left is given time to go by itself (an agent ends
	// with its spawner), then counted.
	var left []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		// Adopted processes that have exited are reaped here.
		for {
			if pid, _ := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
		shared := sharedTargets()
		for pid := range processTree(os.Getpid()) {
			if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && pid != os.Getpid() && !shared[pid] {
				cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				left = append(left, fmt.Sprintf("pid %d (%s: %q), orphaned to this test", pid, strings.TrimSpace(string(comm)), cmdline))
			}
		}
		for _, groups := range tree {
			for _, g := range groups {
				if own[g] {
					continue
				}
				if procs, err := os.ReadFile(filepath.Join(g, "cgroup.procs")); err == nil && len(bytes.TrimSpace(procs)) > 0 {
					left = append(left, fmt.Sprintf("cgroup %s holds %s", g, strings.Fields(string(procs))))
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	// Reap (and end) what this test adopted.
	shared := sharedTargets()
	for pid := range processTree(os.Getpid()) {
		if pid != os.Getpid() && !shared[pid] {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if len(left) > 0 {
		t.Fatalf("after SIGTERM, %d things outlived kiln up:\n%s\n%s", len(left), strings.Join(left, "\n"), k.output())
	}
}

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// TestKilnUpAgentTrust: a kiln-agent next to kiln is run (as root) only
// when no one but root could have changed it; otherwise kiln runs itself
// as the agent, and functions still run.
func TestKilnUpAgentTrust(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the Linux sandbox needs root")
	}
	bin, err := kilnBinary()
	if err != nil {
		t.Fatal(err)
	}
	agent, err := sandboxtest.BuildAgent()
	if err != nil {
		t.Fatal(err)
	}
	zip := fntest.GoFunctionZip(t, fntest.ToolkitGo)
	env := []string{"KILN_ACCESS_KEY_ID=" + accessKeyID, "KILN_SECRET_ACCESS_KEY=" + secretAccessKey}
	// invoke starts kiln up from dir, runs a function and returns the
	// binary its spawner runs.
	invoke := func(t *testing.T, dir string) (string, *upProcess) {
		k := runUpBin(t, filepath.Join(dir, "kiln"), t.TempDir(), env)
		c := lambdaClient(k.endpoint)
		if _, err := c.CreateFunction(context.Background(), &lambda.CreateFunctionInput{FunctionName: aws.String("f"), Role: aws.String(fntest.Role),
			Runtime: types.RuntimeProvidedal2023, Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: zip}}); err != nil {
			t.Fatal(err)
		}
		fntest.WaitActive(t, c, "f")
		out, err := c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("f"), Payload: []byte(`{"x":1}`)})
		if err != nil || out.FunctionError != nil || string(out.Payload) != `{"x":1}` {
			t.Fatalf("invoke: %v %+v\n%s", err, out, k.output())
		}
		for pid := range processTree(k.cmd.Process.Pid) {
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(cmdline), "kiln-spawner\x00") {
				exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
				return exe, k
			}
		}
		t.Fatalf("no spawner under kiln up\n%s", k.output())
		return "", nil
	}

	t.Run("writable by others", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, bin, filepath.Join(dir, "kiln"), 0o755)
		marker := filepath.Join(dir, "ran")
		fake := filepath.Join(dir, "kiln-agent")
		if err := os.WriteFile(fake, []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(fake, 0o777)
		exe, k := invoke(t, dir)
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("a kiln-agent writable by others was run")
		}
		if exe != filepath.Join(dir, "kiln") || !strings.Contains(k.output(), "kiln-agent not used") {
			t.Fatalf("spawner runs %s; log:\n%s", exe, k.output())
		}
	})
	t.Run("root's own", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, bin, filepath.Join(dir, "kiln"), 0o755)
		copyFile(t, agent, filepath.Join(dir, "kiln-agent"), 0o755)
		if exe, k := invoke(t, dir); exe != filepath.Join(dir, "kiln-agent") {
			t.Fatalf("spawner runs %s, not the trusted kiln-agent\n%s", exe, k.output())
		}
	})
}
