package e2e

import (
	"encoding/json"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/kiln-dev/kiln/internal/kilntest/fntest"
)

// reachApp reports which of the addresses it can open a TCP connection to
// and which of the files it can read.
const reachApp = `import socket


def handler(event, context):
    reached = []
    for addr in event["addrs"]:
        host, port = addr.rsplit(":", 1)
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect((host, int(port)))
            reached.append(addr)
        except OSError:
            pass
        finally:
            s.close()
    for path in event["files"]:
        try:
            with open(path, "rb") as f:
                f.read(1)
            reached.append(path)
        except OSError:
            pass
    return reached
`

// hostOf is the host:port of an endpoint URL, or the endpoint if it is one.
func hostOf(t *testing.T, endpoint string) string {
	if !strings.Contains(endpoint, "://") {
		return endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		t.Fatalf("endpoint %q: %v", endpoint, err)
	}
	return u.Host
}

// A function reaches none of Kiln: not its API, its NATS, its workers and
// control planes, nor the files holding its keys and credentials. It does
// reach its own Runtime API, so the probe is not blind.
func TestSandboxReachesNoneOfKiln(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		c := lambdaAt(tg.endpoints[0])
		createFn(t, c, &lambda.CreateFunctionInput{FunctionName: aws.String("par-reach"), Runtime: pythonRuntime(t),
			Handler: aws.String("app.handler"), Code: &types.FunctionCode{ZipFile: fntest.Zip(t, map[string][]byte{"app.py": []byte(reachApp)})}})
		var addrs, files []string
		for _, ep := range tg.endpoints {
			addrs = append(addrs, hostOf(t, ep))
		}
		files = append(files, filepath.Join(tg.dir, "credentials"), filepath.Join(tg.dir, "config"))
		if tg.cluster != nil {
			for _, p := range tg.cluster.Procs {
				for _, ep := range []string{p.Addr, p.NATS, p.Route, p.Metrics} {
					if ep != "" {
						addrs = append(addrs, hostOf(t, ep))
					}
				}
			}
			secrets, _ := filepath.Glob(filepath.Join(tg.dir, "roles", "*", "*"))
			if len(secrets) == 0 {
				t.Fatalf("no role files under %s", tg.dir)
			}
			files = append(files, secrets...)
		} else {
			addrs = append(addrs, hostOf(t, tg.nats))
			files = append(files, filepath.Join(tg.dir, "identity.json"))
		}
		const runtimeAPI = "127.0.0.1:9001"
		event, _ := json.Marshal(map[string][]string{"addrs": append(addrs, runtimeAPI), "files": files})
		out := invoke(t, c, &lambda.InvokeInput{FunctionName: aws.String("par-reach"), Payload: event})
		var reached []string
		if out.FunctionError != nil || json.Unmarshal(out.Payload, &reached) != nil {
			t.Fatalf("probe: %v %s", out.FunctionError, out.Payload)
		}
		if !slices.Equal(reached, []string{runtimeAPI}) {
			t.Fatalf("from inside the sandbox the function reached %v (of %d addresses and %d files); want only its Runtime API %s",
				reached, len(addrs), len(files), runtimeAPI)
		}
	})
}
