package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/kiln-dev/kiln/internal/console"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/server"
)

// getConsole reads one of the console's JSON views, SigV4-signed.
func getConsole(t *testing.T, s *server.Server, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.Endpoint+path, nil)
	sum := sha256.Sum256(nil)
	err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: s.Identity.AccessKeyID, SecretAccessKey: s.Identity.SecretAccessKey},
		req, hex.EncodeToString(sum[:]), "lambda", s.Region, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// A function's first cold start is a scale-up; once the idle reaper took
// its environment, the next is labelled idle-reap, on the function's page
// and the fleet's.
func TestConsoleColdStartCauses(t *testing.T) {
	s := kilntest.Start(t, server.Config{IdleTimeout: 300 * time.Millisecond})
	c := kilntest.Lambda(s)
	toolkit(t, c, "reaped", nil)
	call(t, c, &lambda.InvokeInput{FunctionName: aws.String("reaped")})
	waitFor(t, func() bool { st := s.Assignment().Stats("", ""); return st.Idle+st.Busy == 0 })
	call(t, c, &lambda.InvokeInput{FunctionName: aws.String("reaped")})

	var view console.FunctionView
	getConsole(t, s, "/console/api/functions/"+s.Identity.AccountID+"/reaped", &view)
	causes := map[string]int{}
	invocations := 0
	for _, p := range view.Series {
		invocations += p.Invocations
		for c, n := range p.ColdStarts {
			causes[c] += n
		}
	}
	if invocations != 2 || causes["scale-up"] != 1 || causes["idle-reap"] != 1 || len(causes) != 2 {
		t.Errorf("the function's hour: %d invocations, cold starts %v; want 2, one scale-up and one idle-reap", invocations, causes)
	}
	var fleet console.Fleet
	getConsole(t, s, "/console/api/fleet", &fleet)
	clear(causes)
	for _, p := range fleet.ColdStarts {
		for c, n := range p.ColdStarts {
			causes[c] += n
		}
	}
	if causes["scale-up"] != 1 || causes["idle-reap"] != 1 {
		t.Errorf("the fleet's cold starts: %v", causes)
	}
	if len(fleet.Workers) != 1 || fleet.Mode != "kiln up" {
		t.Errorf("fleet %+v: want kiln up's one worker", fleet)
	}
}
