package roles

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/kiln-dev/kiln/internal/metrics"
)

// ServeMetrics serves set's Prometheus metrics on GET /metrics at addr,
// and with withPprof profiles of the running process (go tool pprof
// http://ADDR/debug/pprof/profile) for finding where an invoke's time goes.
// It returns the metrics URL and the server to close.
func ServeMetrics(addr string, set *metrics.Set, withPprof bool) (string, *http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", set.Handler())
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String() + "/metrics", srv, nil
}
