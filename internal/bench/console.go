package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/internal/console"
)

// ConsoleConfig sizes the console section.
type ConsoleConfig struct {
	Kiln    string
	Sandbox string
	// Viewers is how many open console pages the loaded rounds have; 0
	// means 5.
	Viewers int
	// Round is how long each round invokes; 0 means 3 s (each open page
	// is sent the function's view and logs every second).
	Round time.Duration
}

// Console measures what open console pages cost invokes: sequential warm
// invokes of one function through kiln up, in interleaved rounds alone and
// while Viewers signed-in pages stream that function's page (its series,
// environments, queue depth and logs, recomputed every second), the way
// a browser's EventSource reads them.
func Console(ctx context.Context, cfg ConsoleConfig, out io.Writer) error {
	if cfg.Viewers == 0 {
		cfg.Viewers = 5
	}
	if cfg.Round == 0 {
		cfg.Round = 3 * time.Second
	}
	dir, err := os.MkdirTemp("", "kiln-bench-console-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, _, err := echoKiln(ctx, out, cfg.Kiln, dir, cfg.Sandbox, "bench-console")
	if err != nil {
		return err
	}
	defer s.stop()
	kiln := signedClient(s.endpoint, "bench-console", []byte(echoPayload), 1)
	if _, err := kiln.invoke(ctx); err != nil {
		return err
	}
	account, err := consoleAccount(ctx, s.endpoint)
	if err != nil {
		return err
	}
	page := s.endpoint + "/console/api/stream?view=function&account=" + account + "&name=bench-console"

	invokeFor := func(d time.Duration) ([]time.Duration, error) {
		var ds []time.Duration
		for end := time.Now().Add(d); time.Now().Before(end); {
			lat, err := kiln.invoke(ctx)
			if err != nil {
				return nil, err
			}
			ds = append(ds, lat)
		}
		return ds, nil
	}
	var alone, viewed []time.Duration
	views := 0
	for r := range rounds {
		fmt.Fprintf(os.Stderr, "  console round %d/%d\n", r+1, rounds)
		ds, err := invokeFor(cfg.Round)
		if err != nil {
			return err
		}
		alone = append(alone, ds...)
		rctx, cancel := context.WithCancel(ctx)
		seen := make(chan int, cfg.Viewers)
		for range cfg.Viewers {
			go func() { seen <- watch(rctx, s.endpoint, page) }()
		}
		ds, err = invokeFor(cfg.Round)
		cancel()
		for range cfg.Viewers {
			views += <-seen
		}
		if err != nil {
			return err
		}
		viewed = append(viewed, ds...)
	}
	if views < cfg.Viewers*rounds {
		return fmt.Errorf("console: the pages got %d views in %d rounds, want at least one each", views, rounds)
	}
	a, v := summarize(alone, 0), summarize(viewed, 0)
	fmt.Fprintf(out, "\nconsole: sequential warm invokes, %d rounds of %s alone and with %d open pages of the function (%d views sent)\n",
		rounds, cfg.Round, cfg.Viewers, views)
	fmt.Fprintf(out, "%-22s %10s %10s %9s\n", "", "p50", "p99", "invokes")
	fmt.Fprintf(out, "%-22s %10s %10s %9d\n", "no console", round(a.P50), round(a.P99), len(alone))
	fmt.Fprintf(out, "%-22s %10s %10s %9d\n", fmt.Sprintf("%d console pages", cfg.Viewers), round(v.P50), round(v.P99), len(viewed))
	fmt.Fprintf(out, "%-22s %9.3fx %9.3fx\n", "ratio", float64(v.P50)/float64(a.P50), float64(v.P99)/float64(a.P99))
	return nil
}

// signIn signs in to the console with the bench's key, as its page does.
func signIn(ctx context.Context, endpoint string) (*http.Cookie, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/console/api/nonce", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	var n struct{ Nonce string }
	err = json.NewDecoder(resp.Body).Decode(&n)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	body := fmt.Sprintf(`{"accessKeyId":%q,"nonce":%q,"proof":%q}`, benchKey, n.Nonce,
		console.SignInProof(benchKey, benchSecret, benchRegion, n.Nonce))
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/console/api/signin", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		return nil, err
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			return c, nil
		}
	}
	return nil, fmt.Errorf("console sign-in: %s", resp.Status)
}

// consoleAccount is the bench key's account, as the console tells it.
func consoleAccount(ctx context.Context, endpoint string) (string, error) {
	ck, err := signIn(ctx, endpoint)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/console/api/whoami", nil)
	req.AddCookie(ck)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var who struct{ Account string }
	return who.Account, json.NewDecoder(resp.Body).Decode(&who)
}

// watch is one open console page: it signs in, reads the stream until ctx
// ends, and returns how many views it got.
func watch(ctx context.Context, endpoint, page string) int {
	ck, err := signIn(ctx, endpoint)
	if err != nil {
		return 0
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, page, nil)
	req.AddCookie(ck)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if sc.Text() == "event: view" {
			n++
		}
	}
	return n
}
