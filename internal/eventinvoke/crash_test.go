package eventinvoke_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/eventinvoke"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	crashKeyID  = "AKIAKILNASYNCCRASH01"
	crashSecret = "kilnAsyncCrashSecret/0123456789+abcdefgh"
)

// kilnProc is a `kiln up` child process in its own process group.
type kilnProc struct {
	t                     *testing.T
	bin, data, addr, nats string
	logPath               string
	cmd                   *exec.Cmd
	exited                chan struct{}
}

func buildKiln(t *testing.T) string {
	bin, err := fntest.BuildKiln(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func (k *kilnProc) start() {
	t := k.t
	logf, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(k.bin, "up", "--data", k.data, "--listen", k.addr, "--nats-listen", k.nats, "--metrics-listen", "")
	cmd.Env = append(os.Environ(), "KILN_ACCESS_KEY_ID="+crashKeyID, "KILN_SECRET_ACCESS_KEY="+crashSecret)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k.cmd, k.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(k.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + k.addr + "/kiln/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-k.exited:
			t.Fatalf("kiln up exited: %s", k.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kiln up not healthy: %s", k.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill ends the process and every execution environment it started,
// without warning.
func (k *kilnProc) kill() {
	if k.cmd == nil {
		return
	}
	syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
	<-k.exited
	k.cmd = nil
}

func (k *kilnProc) log() string {
	b, _ := os.ReadFile(k.logPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// Events accepted with 202 survive crashes: `kiln up` is killed (SIGKILL,
// with its execution environments) once while thousands of events are being
// accepted, and once while the pollers run queued events at full
// concurrency; restarted on the same data directory each time, it runs
// every accepted event at least once. Each run is counted by its success
// record on a Kiln queue, read over NATS.
func TestEventsSurviveCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and crashes a kiln up process")
	}
	k := &kilnProc{t: t, bin: buildKiln(t), data: t.TempDir(), addr: kilntest.FreeAddr(t), nats: kilntest.FreeAddr(t)}
	k.logPath = filepath.Join(k.data, "kiln.log")
	k.start()
	defer k.kill()

	var id struct {
		AccountID string `json:"accountId"`
	}
	b, _ := os.ReadFile(filepath.Join(k.data, "identity.json"))
	json.Unmarshal(b, &id)
	c := lambda.New(lambda.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://" + k.addr), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(crashKeyID, crashSecret, "")})
	kilntest.MustCreate(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("rec"), Runtime: types.RuntimeProvidedal2023,
		Handler: aws.String("bootstrap"), Code: &types.FunctionCode{ZipFile: fntest.GoFunctionZip(t, fntest.ToolkitGo)}})
	seen := eventinvoke.QueueARN("us-east-1", id.AccountID, "seen")
	if _, err := c.PutFunctionEventInvokeConfig(ctx, &lambda.PutFunctionEventInvokeConfigInput{FunctionName: aws.String("rec"),
		DestinationConfig: &types.DestinationConfig{OnSuccess: &types.OnSuccess{Destination: aws.String(seen)}}}); err != nil {
		t.Fatal(err)
	}

	// send sends events count events with ids from on, from 16 clients, and
	// returns the ids accepted (202). With killAt > 0, it kills the process
	// once killAt events are accepted, and stops when the clients fail.
	send := func(from, count, killAt int) map[int]bool {
		var (
			mu       sync.Mutex
			accepted = map[int]bool{}
			next     atomic.Int64
			wg       sync.WaitGroup
			killed   = make(chan struct{})
		)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= count {
						return
					}
					out, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("rec"), InvocationType: types.InvocationTypeEvent,
						Payload: []byte(fmt.Sprintf(`{"action":"sleep","ms":20,"id":%d}`, from+i))})
					if err != nil {
						if killAt > 0 {
							return // the process is gone
						}
						t.Errorf("event %d: %v", from+i, err)
						return
					}
					if out.StatusCode == 202 {
						mu.Lock()
						accepted[from+i] = true
						if len(accepted) == killAt {
							close(killed)
						}
						mu.Unlock()
					}
				}
			}()
		}
		if killAt > 0 {
			<-killed
			k.kill()
		}
		wg.Wait()
		return accepted
	}
	// records reads the success records' event ids over NATS.
	records := func() (ids map[int]int, n int) {
		nc, err := nats.Connect("nats://" + k.nats)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		msgs, err := eventinvoke.ReadQueue(ctx, js, seen, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		ids = map[int]int{}
		for _, m := range msgs {
			var r struct {
				RequestPayload struct{ ID int } `json:"requestPayload"`
			}
			json.Unmarshal(m.Body, &r)
			ids[r.RequestPayload.ID]++
		}
		return ids, len(msgs)
	}

	// Crash 1, while events are being accepted (each event's invoke takes
	// 20 ms; while requests come in, the pollers run few at once).
	accepted := send(0, 6000, 3000)
	t.Logf("crash 1: killed kiln up after %d events were accepted", len(accepted))
	k.start()

	// Crash 2, with no requests coming in: the pollers run events at full
	// concurrency, and many are in flight when the process dies.
	ids, _ := records()
	ran := len(ids)
	more := send(10000, 2000, 0)
	for i := range more {
		accepted[i] = true
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if ids, _ = records(); len(ids) >= ran+2000+100 || time.Now().After(deadline) {
			break
		}
	}
	k.kill()
	t.Logf("crash 2: killed kiln up with %d of %d accepted events run", len(ids), len(accepted))
	k.start()

	// Thousands of events left to run: a minute or more on a loaded host.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ids, n := records()
		missing := 0
		for i := range accepted {
			if ids[i] == 0 {
				missing++
			}
		}
		if missing == 0 {
			dup := 0
			for i := range accepted {
				dup += ids[i] - 1
			}
			t.Logf("all %d accepted events ran, across two crashes (%d records; %d runs more than once)", len(accepted), n, dup)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted events did not run within 3 minutes of the restart\n%s", missing, len(accepted), k.log())
		}
		time.Sleep(250 * time.Millisecond)
	}
}
