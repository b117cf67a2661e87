package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/chromedp/chromedp"
	"github.com/kiln-dev/kiln/internal/cluster"
)

// chromium is Debian's chromium, which scripts/deps installs.
const chromium = "/usr/bin/chromium"

// artifacts is where the browser tests save their screenshots:
// $KILN_ARTIFACTS, else DIR/kiln-console-screenshots under the system's
// temporary directory (kept after the run; the test prints it).
func artifacts(t *testing.T) string {
	dir := os.Getenv("KILN_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "kiln-console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts a headless Chromium for the test (ended with it).
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		msg := "missing Debian's chromium (" + chromium + "); scripts/deps installs it"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1440, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("chromium: %v", err)
	}
	return bctx
}

// run runs browser actions with a generous deadline.
func run(t *testing.T, bctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// screenshot saves the whole page as NAME.png among the artefacts.
func screenshot(t *testing.T, bctx context.Context, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(artifacts(t), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// waitText waits until the JS expression (a string) satisfies ok.
func waitText(t *testing.T, bctx context.Context, what, expr string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		cancel()
		if err == nil {
			got = v
		}
		if err == nil && ok(got) {
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: still %q after 90 s (%s)", what, got, expr)
	return ""
}

// signIn signs in through the page's form, as a person would.
func signIn(t *testing.T, bctx context.Context, endpoint, akid, secret string) {
	t.Helper()
	run(t, bctx, "sign in", chromedp.Navigate(endpoint+"/console/"), chromedp.WaitVisible(chromedp.CSS("#signin-form")),
		chromedp.SendKeys(chromedp.CSS("#akid"), akid), chromedp.SendKeys(chromedp.CSS("#secret"), secret))
	screenshotOnce(t, bctx, "signin")
	run(t, bctx, "sign in", chromedp.Click(chromedp.CSS("#signin-button")), chromedp.WaitVisible(chromedp.CSS("#fn-table")))
}

var signinShot bool

func screenshotOnce(t *testing.T, bctx context.Context, name string) {
	if !signinShot {
		signinShot = true
		screenshot(t, bctx, name)
	}
}

// awsIn runs the AWS CLI against endpoint with the target's files.
func awsIn(t *testing.T, tg *target, endpoint string, args ...string) string {
	t.Helper()
	cmd := exec.Command(awsCLI, append(args, "--endpoint-url", endpoint)...)
	cmd.Env = clientEnv(tg, t.TempDir(), nil)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The hostile log line: markup and script that must show as text.
const hostileLine = `<img src=x onerror="window.kilnXSS=1"><script>window.kilnXSS=2</script><b>bold?</b>`

// TestConsole signs in to the console of each target, creates and invokes
// a function with the AWS CLI while its page is open, and sees the invoke
// count and its log lines (hostile markup shown as text) arrive without a
// reload; the functions and fleet pages show it; the JSON endpoints refuse
// unsigned requests. Screenshots of each page go to the artefacts.
func TestConsole(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		bctx := browser(t)
		endpoint := tg.endpoints[0]
		for _, p := range []string{"/console/api/functions", "/console/api/fleet", "/console/api/whoami",
			"/console/api/stream?view=functions", "/console/api/functions/" + tg.accountID + "/con-fn/logs"} {
			resp, err := http.Get(endpoint + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("unsigned GET %s: %s, want 403", p, resp.Status)
			}
		}
		signIn(t, bctx, endpoint, accessKeyID, secretAccessKey)

		name := "con-" + tg.name
		awsIn(t, tg, endpoint, "lambda", "create-function", "--function-name", name, "--runtime", "provided.al2023",
			"--handler", "bootstrap", "--role", "arn:aws:iam::"+tg.accountID+":role/kiln-e2e", "--timeout", "10",
			"--zip-file", "fileb://"+suite.zips["GO_ZIP"])
		awsIn(t, tg, endpoint, "lambda", "wait", "function-active-v2", "--function-name", name)
		waitText(t, bctx, "the new function listed", `Array.from(document.querySelectorAll("#fn-table tbody tr")).map(r => r.dataset.name).join(",")`,
			func(s string) bool { return strings.Contains(s, name) })

		// Its page, open before the invoke: the count and the log lines
		// arrive over the stream.
		run(t, bctx, "function page", chromedp.Navigate(endpoint+"/console/#/fn/"+tg.accountID+"/"+name), chromedp.WaitVisible(chromedp.CSS("#fn-invocations")))
		waitText(t, bctx, "function page", `document.getElementById("fn-name").textContent`, func(s string) bool { return s == name })
		out := filepath.Join(t.TempDir(), "out.json")
		// In a cluster through the other frontend: each console adds the
		// other frontends' series to its own.
		awsIn(t, tg, tg.endpoints[len(tg.endpoints)-1], "lambda", "invoke", "--function-name", name, "--cli-binary-format", "raw-in-base64-out",
			"--payload", fmt.Sprintf(`{"action":"print","lines":1,"text":%q}`, "console says "+hostileLine), out)
		waitText(t, bctx, "invoke count", `document.getElementById("fn-invocations").textContent`, func(s string) bool { return s == "1" })
		logs := waitText(t, bctx, "log line", `document.getElementById("logs").textContent`,
			func(s string) bool { return strings.Contains(s, "console says ") })
		if !strings.Contains(logs, hostileLine) {
			t.Errorf("the log line is not shown as the text it is: %q", logs)
		}
		markup := waitText(t, bctx, "no markup from the log",
			`document.querySelectorAll("#logs img, #logs script, #logs b").length + "/" + String(window.kilnXSS)`, func(string) bool { return true })
		if markup != "0/undefined" {
			t.Errorf("the hostile log line became markup or ran: %s", markup)
		}
		waitText(t, bctx, "environment listed", `document.querySelector("#env-table tbody").textContent`,
			func(s string) bool { return strings.Contains(s, "idle") || strings.Contains(s, "busy") })
		screenshot(t, bctx, "function-"+tg.name)

		// A hostile name in the address (function names themselves cannot
		// hold markup): refused, and nothing of it runs.
		run(t, bctx, "hostile route", chromedp.Navigate(endpoint+`/console/#/fn/`+tg.accountID+`/%3Cimg%20src%3Dx%20onerror%3D%22window.kilnXSS%3D3%22%3E`))
		waitText(t, bctx, "hostile route refused", `document.getElementById("status").textContent + "/" + String(window.kilnXSS)`,
			func(s string) bool {
				return strings.HasPrefix(s, "This view is not available") && strings.HasSuffix(s, "/undefined")
			})
		// Versions, a weighted alias and reserved concurrency, as the list shows them.
		awsIn(t, tg, endpoint, "lambda", "publish-version", "--function-name", name)
		awsIn(t, tg, endpoint, "lambda", "update-function-configuration", "--function-name", name, "--description", "second")
		awsIn(t, tg, endpoint, "lambda", "wait", "function-updated-v2", "--function-name", name)
		awsIn(t, tg, endpoint, "lambda", "publish-version", "--function-name", name)
		awsIn(t, tg, endpoint, "lambda", "create-alias", "--function-name", name, "--name", "live", "--function-version", "1",
			"--routing-config", `{"AdditionalVersionWeights":{"2":0.25}}`)
		awsIn(t, tg, endpoint, "lambda", "put-function-concurrency", "--function-name", name, "--reserved-concurrent-executions", "5")
		run(t, bctx, "functions page", chromedp.Navigate(endpoint+"/console/#/"), chromedp.WaitVisible(chromedp.CSS("#fn-table")))
		waitText(t, bctx, "invokes in the list", `(document.querySelector('#fn-table tr[data-name="`+name+`"] .invocations') || {}).textContent || ""`,
			func(s string) bool { return s == "1" })
		row := `document.querySelector('#fn-table tr[data-name="` + name + `"]')`
		waitText(t, bctx, "versions, alias weights and concurrency in the list",
			`[...`+row+`.cells].map(c => c.textContent).slice(4, 7).join(" | ")`,
			func(s string) bool { return s == "1, 2 | live → 1 75%, 2 25% | reserved 5" })
		screenshot(t, bctx, "functions-"+tg.name)

		// The change retired the environment; the alias's invoke starts one.
		awsIn(t, tg, endpoint, "lambda", "invoke", "--function-name", name, "--qualifier", "live", out)
		run(t, bctx, "fleet page", chromedp.Navigate(endpoint+"/console/#/fleet"), chromedp.WaitVisible(chromedp.CSS("#zones")))
		waitText(t, bctx, "the environment on the fleet page", `document.getElementById("zones").textContent`,
			func(s string) bool { return strings.Contains(s, tg.accountID+"/"+name) })
		if tg.cluster != nil {
			waitText(t, bctx, "partitions", `String(document.querySelectorAll("#part-table tbody tr").length)`,
				func(s string) bool { return s == fmt.Sprint(tg.cluster.Partitions) })
		}
		screenshot(t, bctx, "fleet-"+tg.name)
	})
}

// TestConsoleFleetLosesKilledWorker kills (SIGKILL) the worker holding a
// function's environments in a cluster of its own (the shared one keeps
// its workers) while the fleet page is open, and watches them leave it;
// the cold start that replaces them shows as one after failover.
func TestConsoleFleetLosesKilledWorker(t *testing.T) {
	ownTargets(t)
	bctx := browser(t)
	dir := filepath.Join(t.TempDir(), "cluster")
	cmd := exec.Command(suite.bin, "cluster", "up", "--dir", dir, "--workers", "2", "--pollers", "0", "--partitions", "2")
	cmd.Env = append(os.Environ(), "KILN_ACCESS_KEY_ID="+accessKeyID, "KILN_SECRET_ACCESS_KEY="+secretAccessKey)
	out, err := cmd.CombinedOutput()
	f, lerr := cluster.Load(dir)
	if f != nil {
		t.Cleanup(func() { f.Down() })
	}
	if err != nil || lerr != nil {
		t.Fatalf("kiln cluster up: %v %v\n%s", err, lerr, out)
	}
	endpoint := f.Frontends[0]
	c := lambdaAt(endpoint)
	createToolkit(t, c, "con-kill")
	invoke(t, c, &lambda.InvokeInput{FunctionName: aws.String("con-kill"), Payload: []byte(`{}`)})

	signIn(t, bctx, endpoint, accessKeyID, secretAccessKey)
	run(t, bctx, "fleet page", chromedp.Navigate(endpoint+"/console/#/fleet"), chromedp.WaitVisible(chromedp.CSS("#zones")))
	// The worker whose line lists the function's environment.
	worker := waitText(t, bctx, "the environment's worker", `(Array.from(document.querySelectorAll(".worker")).find(w =>
		w.textContent.includes("`+f.AccountID+`/con-kill")) || {dataset: {}}).dataset.worker || ""`, func(s string) bool { return s != "" })
	screenshot(t, bctx, "fleet-before-kill")
	if _, err := f.Kill(worker); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s", worker)
	waitText(t, bctx, "the killed worker's environments gone", `(document.querySelector('.worker[data-worker="`+worker+`"]') || {}).textContent || "gone"`,
		func(s string) bool {
			return s == "gone" || strings.Contains(s, "0 environments") && !strings.Contains(s, "con-kill")
		})
	waitText(t, bctx, "no environment of the function on the fleet page", `document.getElementById("zones").textContent`,
		func(s string) bool { return !strings.Contains(s, "con-kill") })
	// The next invoke starts an environment on the other worker: a cold
	// start after failover, so labelled.
	invoke(t, c, &lambda.InvokeInput{FunctionName: aws.String("con-kill"), Payload: []byte(`{}`)})
	waitText(t, bctx, "a cold start after failover", `String(document.querySelectorAll("#chart-cold rect.failover").length)`,
		func(s string) bool { return s != "0" })
	screenshot(t, bctx, "fleet-after-kill")
}

// TestConsoleSecondAccount: on each target, an account made with `kiln
// accounts create` signs in through the page and sees none of the first
// account's functions, nor the fleet, nor the first's function by its
// address, and its open page stops when its key is removed; a key `kiln
// accounts keys add` gives the first (admin) account at run time signs in
// and sees that function and the fleet.
func TestConsoleSecondAccount(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg *target) {
		bctx := browser(t)
		endpoint := tg.endpoints[0]
		name := "con2-" + tg.name
		createToolkit(t, lambdaAt(endpoint), name)
		second := createAccount(t, tg, "console-second")
		out, err := kilnAccounts(t, tg.dir, "keys", "add", tg.accountID)
		first := account{id: tg.accountID, key: field(out, "access key id"), secret: field(out, "secret access key")}
		if err != nil || first.key == "" || first.secret == "" {
			t.Fatalf("kiln accounts keys add: %v\n%s", err, out)
		}
		for _, a := range []account{second, first} { // the new keys reach every frontend
			eventually(t, tg, "the new key accepted", func(ep string) error {
				_, err := a.lambda(ep).ListFunctions(ctx, &lambda.ListFunctionsInput{})
				return err
			})
		}

		signIn(t, bctx, endpoint, second.key, second.secret)
		waitText(t, bctx, "the second account's list", `document.getElementById("who").textContent + " | " +
			document.querySelectorAll("#fn-table tbody tr").length + " | " + document.getElementById("fn-empty").hidden + " | " + document.getElementById("nav-fleet").hidden`,
			func(s string) bool { return s == "account "+second.id+" | 0 | false | true" })
		screenshot(t, bctx, "functions-second-account-"+tg.name)
		run(t, bctx, "the first account's function by address", chromedp.Navigate(endpoint+"/console/#/fn/"+tg.accountID+"/"+name))
		waitText(t, bctx, "refused", `document.getElementById("status").textContent`,
			func(s string) bool { return strings.HasPrefix(s, "This view is not available") })
		screenshot(t, bctx, "function-refused-second-account-"+tg.name)
		// Its key removed while its list is open: the page's stream ends.
		run(t, bctx, "the second account's list", chromedp.Navigate(endpoint+"/console/#/"), chromedp.WaitVisible(chromedp.CSS("#fn-table")))
		waitText(t, bctx, "the list live", `document.getElementById("status").textContent`, func(s string) bool { return strings.HasPrefix(s, "live") })
		if out, err := kilnAccounts(t, tg.dir, "keys", "remove", second.id, second.key); err != nil {
			t.Fatalf("kiln accounts keys remove: %v\n%s", err, out)
		}
		waitText(t, bctx, "the removed key's stream ended", `document.getElementById("status").textContent`,
			func(s string) bool { return strings.Contains(s, "was removed: sign in again") })

		run(t, bctx, "sign out", chromedp.Navigate(endpoint+"/console/#/"), chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#signin-form")))
		run(t, bctx, "sign in with the first account's new key", chromedp.SendKeys(chromedp.CSS("#akid"), first.key),
			chromedp.SendKeys(chromedp.CSS("#secret"), first.secret), chromedp.Click(chromedp.CSS("#signin-button")))
		waitText(t, bctx, "the first account's function, as the admin", `document.getElementById("who").textContent + " | " + document.getElementById("nav-fleet").hidden + " | " +
			Array.from(document.querySelectorAll("#fn-table tbody tr")).map(r => r.dataset.name).join(",")`,
			func(s string) bool {
				return strings.HasPrefix(s, "account "+tg.accountID+" (admin: all accounts) | false | ") && strings.Contains(s, name)
			})
		screenshot(t, bctx, "functions-admin-new-key-"+tg.name)
		run(t, bctx, "the first account's function page", chromedp.Navigate(endpoint+"/console/#/fn/"+tg.accountID+"/"+name))
		waitText(t, bctx, "function page", `document.getElementById("fn-name").textContent`, func(s string) bool { return s == name })
	})
}
