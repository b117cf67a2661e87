package e2e

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/cluster"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/nats-io/nats.go"
)

// target is a Kiln the suite runs against, started by the test from the
// kiln binary it built: `kiln up`, or a cluster (`kiln cluster up`). Every
// test is written once and runs against both (forEachTarget); each target
// is started once per package run and shared by the tests.
type target struct {
	name string
	// endpoints all serve the Lambda and CloudWatch Logs APIs: kiln up's
	// one, or every frontend of the cluster.
	endpoints []string
	dir       string // holds the credentials and config files Kiln wrote
	accountID string
	nats      string // client URL of kiln up's JetStream (Kiln queues)
	log       func() string
	up        *kiln         // the kiln up, for the restart check
	cluster   *cluster.File // the cluster, for fault tests
}

// connect connects to the JetStream holding the target's Kiln queues: a
// cluster's with its operator's credentials.
func (tg *target) connect() (*nats.Conn, error) {
	if tg.cluster != nil {
		return tg.cluster.Connect()
	}
	return nats.Connect(tg.nats)
}

// targetNames are the targets every test runs against.
var targetNames = []string{"up", "cluster"}

// suite is what the package's tests share: the binary, the packages and
// the running targets.
var suite struct {
	mu      sync.Mutex
	dir     string
	bin     string
	zips    map[string]string
	built   bool
	targets map[string]*target
	failed  map[string]string // target name → why it did not start
}

func TestMain(m *testing.M) {
	flag.Parse()
	// The targets run in process groups and sessions of their own, so
	// nothing ends them when this binary dies: a run stopped by a signal, or
	// about to be ended by -timeout (which panics past any cleanup), stops
	// them first.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var deadline <-chan time.Time
	if d := flag.Lookup("test.timeout").Value.(flag.Getter).Get().(time.Duration); d > 2*time.Minute {
		deadline = time.After(d - time.Minute)
	}
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "e2e: %v: stopping the Kiln targets\n", s)
			stopTargets()
			os.Exit(1)
		case <-deadline:
			fmt.Fprintln(os.Stderr, "e2e: a minute before -timeout: stopping the Kiln targets")
			stopTargets()
		}
	}()
	code := m.Run()
	if !stopTargets() {
		code = 1
	}
	os.Exit(code)
}

// stopTargets stops every target started and removes the suite's files; it
// reports whether kiln up stopped cleanly.
func stopTargets() (clean bool) {
	suite.mu.Lock()
	defer suite.mu.Unlock()
	clean = true
	for name, tg := range suite.targets {
		if tg.up != nil {
			if err := tg.up.stop(); err != nil {
				fmt.Fprintln(os.Stderr, "FAIL:", err)
				clean = false
			}
		}
		if tg.cluster != nil {
			tg.cluster.Down()
		}
		delete(suite.targets, name)
		suite.failed[name] = "the suite stopped its targets"
	}
	if suite.dir != "" {
		os.RemoveAll(suite.dir)
		suite.dir = ""
	}
	return clean
}

// built builds kiln and the function packages, once.
func build(t *testing.T) {
	t.Helper()
	if suite.built {
		return
	}
	dir, err := os.MkdirTemp("", "kiln-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	suite.dir = dir
	start := time.Now()
	buildErr := make(chan error, 1)
	go func() {
		_, err := fntest.BuildKiln(dir)
		buildErr <- err
	}()
	suite.zips = buildZips(t, dir)
	if err := <-buildErr; err != nil {
		t.Fatal(err)
	}
	suite.bin = filepath.Join(dir, "kiln")
	suite.built = true
	t.Logf("built kiln and the function packages in %s", time.Since(start).Round(100*time.Millisecond))
}

// requireE2E skips a test of real Kiln processes with -short and fails it
// without the clients the tests drive.
func requireE2E(t *testing.T) {
	t.Helper()
	requireClients(t)
	if testing.Short() {
		t.Skip("end-to-end test with real Kiln processes; skipped with -short")
	}
}

// ownTargets readies a test that starts targets of its own: requireE2E,
// then kiln built (once).
func ownTargets(t *testing.T) {
	t.Helper()
	requireE2E(t)
	suite.mu.Lock()
	defer suite.mu.Unlock()
	build(t)
}

// getTarget returns the running target name, starting it on first use.
func getTarget(t *testing.T, name string) *target {
	t.Helper()
	requireE2E(t)
	suite.mu.Lock()
	defer suite.mu.Unlock()
	if tg := suite.targets[name]; tg != nil {
		return tg
	}
	if why := suite.failed[name]; why != "" {
		t.Fatalf("target %s did not start earlier: %s", name, why)
	}
	build(t)
	if suite.targets == nil {
		suite.targets, suite.failed = map[string]*target{}, map[string]string{}
	}
	suite.failed[name] = "it failed while starting (see the test that started it)"
	var tg *target
	switch name {
	case "up":
		tg = startUp(t, "up")
	case "cluster":
		tg = startCluster(t, "cluster")
	default:
		t.Fatalf("unknown target %q", name)
	}
	delete(suite.failed, name)
	suite.targets[name] = tg
	return tg
}

// forEachTarget runs fn as a subtest against each target.
func forEachTarget(t *testing.T, fn func(t *testing.T, tg *target)) {
	for _, name := range targetNames {
		t.Run(name, func(t *testing.T) { fn(t, getTarget(t, name)) })
	}
}

// startUp runs `kiln up` (with more args) in the suite's directory name.
func startUp(t *testing.T, name string, args ...string) *target {
	addr := kilntest.FreeAddr(t)
	natsAddr := kilntest.FreeAddr(t)
	k := &kiln{t: t, bin: suite.bin, data: filepath.Join(suite.dir, name), addr: addr, endpoint: "http://" + addr,
		logPath: filepath.Join(suite.dir, name+".log"), args: append([]string{"--nats-listen", natsAddr}, args...)}
	k.start()
	b, err := os.ReadFile(filepath.Join(k.data, "identity.json"))
	if err != nil {
		k.stop()
		t.Fatal(err)
	}
	var id struct {
		AccountID string `json:"accountId"`
	}
	json.Unmarshal(b, &id)
	return &target{name: "up", endpoints: []string{k.endpoint}, dir: k.data, accountID: id.AccountID,
		nats: "nats://" + natsAddr, log: k.log, up: k}
}

// startCluster runs `kiln cluster up` (with more args) in the suite's
// directory name as a user would, with the suite's key pair: three NATS
// nodes, placement, a control plane, three assignment members, three
// workers (Linux sandbox), two frontends, two pollers.
func startCluster(t *testing.T, name string, args ...string) *target {
	dir := filepath.Join(suite.dir, name)
	cmd := exec.Command(suite.bin, append([]string{"cluster", "up", "--dir", dir}, args...)...)
	cmd.Env = append(os.Environ(), "KILN_ACCESS_KEY_ID="+accessKeyID, "KILN_SECRET_ACCESS_KEY="+secretAccessKey)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	f, lerr := cluster.Load(dir)
	if err != nil || lerr != nil {
		if f != nil {
			f.Down()
		}
		t.Fatalf("kiln cluster up: %v %v\n%s%s", err, lerr, out.String(), clusterLog(f))
	}
	t.Logf("kiln cluster up: %d processes, frontends %s", len(f.Procs), strings.Join(f.Frontends, " "))
	return &target{name: "cluster", endpoints: f.Frontends, dir: dir, accountID: f.AccountID,
		log: func() string { return clusterLog(f) }, cluster: f}
}

// clusterLog is the end of every role's log but the NATS nodes'.
func clusterLog(f *cluster.File) string {
	if f == nil {
		return ""
	}
	var sb strings.Builder
	for _, p := range f.Procs {
		if p.Role == "nats" {
			continue
		}
		b, _ := os.ReadFile(p.Log)
		const max = 3000
		if len(b) > max {
			b = append([]byte("...\n"), b[len(b)-max:]...)
		}
		fmt.Fprintf(&sb, "----- %s (%s) -----\n%s", p.Name, p.Log, b)
	}
	return sb.String()
}

// TestAWSClients runs the AWS CLI and boto3 scripts against each target.
func TestAWSClients(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		here := filepath.Join(moduleRoot(t), "e2e")
		// The files Kiln writes for the AWS clients.
		creds, err := os.ReadFile(filepath.Join(tg.dir, "credentials"))
		if err != nil {
			t.Fatal(err)
		}
		conf, err := os.ReadFile(filepath.Join(tg.dir, "config"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"[default]", "aws_access_key_id = " + accessKeyID, "aws_secret_access_key = " + secretAccessKey} {
			if !strings.Contains(string(creds), want) {
				t.Errorf("%s/credentials lacks %q:\n%s", tg.dir, want, creds)
			}
		}
		if !strings.Contains(string(conf), "[default]") || !strings.Contains(string(conf), "region = "+region) {
			t.Errorf("%s/config lacks the region %s:\n%s", tg.dir, region, conf)
		}
		if t.Failed() {
			t.FailNow()
		}
		home := t.TempDir()
		env := clientEnv(tg, home, suite.zips)
		cliOK := t.Run("awscli", func(t *testing.T) {
			runScript(t, tg.log, 150*time.Second, env, "bash", filepath.Join(here, "cli.sh"), "main")
		})
		t.Run("boto3", func(t *testing.T) {
			runScript(t, tg.log, 150*time.Second, env, python, filepath.Join(here, "boto3_test.py"))
		})
		// The hostile zips (an entry ../evil) were rejected: nothing named
		// evil was written anywhere under the suite's directory.
		filepath.WalkDir(suite.dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "evil" {
				t.Errorf("a zip entry ../evil was extracted to %s", path)
			}
			return nil
		})
		if tg.up == nil {
			return
		}
		t.Run("restart", func(t *testing.T) {
			if !cliOK {
				t.Skip("the awscli checks failed; they create what this checks after the restart")
			}
			k := tg.up
			k.t = t // k reports to this subtest while it restarts
			if err := k.stop(); err != nil {
				t.Error(err)
			}
			k.start()
			runScript(t, tg.log, 90*time.Second, env, "bash", filepath.Join(here, "cli.sh"), "after-restart")
		})
	})
}

// TestKilnUpBanner: kiln up prints its endpoint and access key id, never a
// secret it was given.
func TestKilnUpBanner(t *testing.T) {
	tg := getTarget(t, "up")
	k := tg.up
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(k.logPath)
		if bytes.Contains(b, []byte(secretAccessKey)) {
			t.Fatalf("kiln up printed the secret key it was given\n%s", k.log())
		}
		if bytes.Contains(b, []byte(k.endpoint)) && bytes.Contains(b, []byte(accessKeyID)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kiln up did not print its endpoint %s and access key id\n%s", k.endpoint, k.log())
		}
	}
}
