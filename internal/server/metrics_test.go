package server_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/kiln-dev/kiln/internal/kilntest"
	"github.com/kiln-dev/kiln/internal/server"
)

func TestPrometheusMetrics(t *testing.T) {
	s := kilntest.Start(t, server.Config{MetricsListen: "127.0.0.1:0"})
	c := kilntest.Lambda(s)
	toolkit(t, c, "met", nil)
	call(t, c, &lambda.InvokeInput{FunctionName: aws.String("met")})
	call(t, c, &lambda.InvokeInput{FunctionName: aws.String("met"), Payload: []byte(`{"action":"error","msg":"x"}`)})
	c.PutFunctionConcurrency(ctx, &lambda.PutFunctionConcurrencyInput{FunctionName: aws.String("met"), ReservedConcurrentExecutions: aws.Int32(0)})
	waitFor(t, func() bool {
		_, err := c.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("met")})
		return err != nil
	})

	metrics := scrape(t, s)
	acct := accountLabel(s)
	value := func(series string) float64 {
		v, ok := metrics(series)
		if !ok {
			t.Errorf("no series %s", series)
		}
		return v
	}
	for series, want := range map[string]float64{
		`kiln_invocations_total{` + acct + `function="met",outcome="success"}`:                                        1,
		`kiln_invocations_total{` + acct + `function="met",outcome="error"}`:                                          1,
		`kiln_function_errors_total{` + acct + `function="met",type="other"}`:                                         1, // the function's own type (errorString)
		`kiln_init_duration_seconds_count{` + acct + `function="met"}`:                                                1,
		`kiln_invoke_duration_seconds_count{` + acct + `function="met"}`:                                              2,
		`kiln_environments{state="idle"}`:                                                                             1,
		`kiln_concurrent_executions{` + acct + `function="met"}`:                                                      0,
		`kiln_throttles_total{` + acct + `function="met",reason="ReservedFunctionConcurrentInvocationLimitExceeded"}`: 1,
		`kiln_log_lines_dropped_total{reason="rate_limit"}`:                                                           0,
		`kiln_log_lines_dropped_total{reason="queue_full"}`:                                                           0,
		`kiln_log_max_bytes`: 1 << 30,
		// The start-up collection found nothing to delete in a new store.
		`kiln_collected_blobs_total{store="code"}`:   0,
		`kiln_collected_bytes_total{store="images"}`: 0,
	} {
		if got := value(series); got < want || want == 0 && got != 0 {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	value("kiln_log_stored_bytes") // there: how much depends on when the logs' round ran

	// A deleted function's series go with it (the frontend hears of the
	// delete from the metadata watch).
	if _, err := c.DeleteFunction(ctx, &lambda.DeleteFunctionInput{FunctionName: aws.String("met")}); err != nil {
		t.Fatal(err)
	}
	ran := `kiln_invocations_total{` + acct + `function="met",outcome="success"}`
	waitFor(t, func() bool { _, ok := scrape(t, s)(ran); return !ok })
}

// accountLabel is the account label of s's default account's series, as
// it leads a series' labels.
func accountLabel(s *server.Server) string { return `account="` + s.Identity.AccountID + `",` }
