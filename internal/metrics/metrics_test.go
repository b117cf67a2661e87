package metrics

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestErrorTypeLabels: error types come from functions; as labels they are
// a bounded set, whatever a function names (invalid UTF-8 panicked).
func TestErrorTypeLabels(t *testing.T) {
	s := New()
	for i := range 1000 {
		s.Finished("f", 0, 0, fmt.Sprintf("Custom%d", i))
	}
	s.Finished("f", 0, 0, "\xff\xfe")
	s.Finished("f", 0, 0, "Runtime.OutOfMemory")
	s.Finished("f", 0, 0, "Sandbox.Timedout")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var series []string
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "kiln_function_errors_total{") {
			series = append(series, line)
		}
	}
	want := []string{
		`kiln_function_errors_total{function="f",type="Runtime.OutOfMemory"} 1`,
		`kiln_function_errors_total{function="f",type="Sandbox.Timedout"} 1`,
		`kiln_function_errors_total{function="f",type="other"} 1001`,
	}
	if strings.Join(series, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(series, "\n"), strings.Join(want, "\n"))
	}
}
