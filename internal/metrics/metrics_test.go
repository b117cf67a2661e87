package metrics

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestErrorTypeLabels: error types come from functions; as labels they are
// a bounded set, whatever a function names (invalid UTF-8 panicked).
func TestErrorTypeLabels(t *testing.T) {
	s := New()
	for i := range 1000 {
		s.Finished("1", "f", 0, 0, fmt.Sprintf("Custom%d", i))
	}
	s.Finished("1", "f", 0, 0, "\xff\xfe")
	s.Finished("1", "f", 0, 0, "Runtime.OutOfMemory")
	s.Finished("1", "f", 0, 0, "Sandbox.Timedout")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var series []string
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "kiln_function_errors_total{") {
			series = append(series, line)
		}
	}
	want := []string{
		`kiln_function_errors_total{account="1",function="f",type="Runtime.OutOfMemory"} 1`,
		`kiln_function_errors_total{account="1",function="f",type="Sandbox.Timedout"} 1`,
		`kiln_function_errors_total{account="1",function="f",type="other"} 1001`,
	}
	if strings.Join(series, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(series, "\n"), strings.Join(want, "\n"))
	}
}

// TestForget: a deleted function's series go; another account's function
// of the same name keeps its own.
func TestForget(t *testing.T) {
	s := New()
	for _, account := range []string{"1", "2"} {
		s.Started(account, "f")()
		s.Finished(account, "f", time.Millisecond, time.Millisecond, "Unhandled")
		s.Throttled(account, "f", "ReservedFunctionConcurrentInvocationLimitExceeded")
	}
	s.Forget("1", "f")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var ones, twos int
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		ones += strings.Count(line, `account="1"`)
		twos += strings.Count(line, `account="2"`)
	}
	if ones != 0 || twos == 0 {
		t.Fatalf("after Forget(1, f): %d series of account 1, %d of account 2:\n%s", ones, twos, rec.Body.String())
	}
}
