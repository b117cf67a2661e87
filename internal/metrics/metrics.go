// Package metrics defines Kiln's Prometheus metrics. Components record into
// a *Set; a nil *Set records nothing, so metrics stay optional everywhere.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Set is every metric of one Kiln process.
type Set struct {
	reg         *prometheus.Registry
	invocations *prometheus.CounterVec
	errors      *prometheus.CounterVec
	throttles   *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	initDur     *prometheus.HistogramVec
	concurrent  *prometheus.GaugeVec
}

// New creates the metrics in a fresh registry (with Go and process collectors).
func New() *Set {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900}
	s := &Set{
		reg: reg,
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_invocations_total",
			Help: "Invokes that reached a function, by function and outcome (success, error)."}, []string{"account", "function", "outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_function_errors_total",
			Help: "Function errors by function and Lambda error type (those of Lambda and its runtimes; \"other\" for those functions name)."}, []string{"account", "function", "type"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_throttles_total",
			Help: "Invokes refused with TooManyRequestsException, by function and reason."}, []string{"account", "function", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_invoke_duration_seconds",
			Help: "Function run time of each invoke, as in the REPORT line.", Buckets: buckets}, []string{"account", "function"}),
		initDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_init_duration_seconds",
			Help: "Init phase of new execution environments.", Buckets: buckets}, []string{"account", "function"}),
		concurrent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_concurrent_executions",
			Help: "Invokes running now, by function."}, []string{"account", "function"}),
	}
	reg.MustRegister(s.invocations, s.errors, s.throttles, s.duration, s.initDur, s.concurrent)
	return s
}

// Handler serves the metrics in Prometheus's text format.
func (s *Set) Handler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
}

// Register adds a collector of another component (for example environments by state).
func (s *Set) Register(c prometheus.Collector) {
	if s != nil {
		s.reg.MustRegister(c)
	}
}

// Started records an invoke that got a concurrency slot; call the returned
// func when it ends.
func (s *Set) Started(account, function string) (done func()) {
	if s == nil {
		return func() {}
	}
	g := s.concurrent.WithLabelValues(account, function)
	g.Inc()
	return g.Dec
}

// Finished records an invoke that ran: its duration, its init phase if it
// had one, and its error type if it failed.
func (s *Set) Finished(account, function string, d, init time.Duration, errorType string) {
	if s == nil {
		return
	}
	s.duration.WithLabelValues(account, function).Observe(d.Seconds())
	if init > 0 {
		s.initDur.WithLabelValues(account, function).Observe(init.Seconds())
	}
	if errorType != "" {
		s.invocations.WithLabelValues(account, function, "error").Inc()
		s.errors.WithLabelValues(account, function, ErrorTypeLabel(errorType)).Inc()
		return
	}
	s.invocations.WithLabelValues(account, function, "success").Inc()
}

// Forget drops a deleted function's series (a function of the same name
// made later starts from zero, as its CloudWatch metrics would).
func (s *Set) Forget(account, function string) {
	if s == nil {
		return
	}
	labels := prometheus.Labels{"account": account, "function": function}
	s.invocations.DeletePartialMatch(labels)
	s.errors.DeletePartialMatch(labels)
	s.throttles.DeletePartialMatch(labels)
	s.duration.DeletePartialMatch(labels)
	s.initDur.DeletePartialMatch(labels)
	s.concurrent.DeletePartialMatch(labels)
}

// errorTypes are the error types that are labels of their own: those Lambda
// and its runtimes give. Any other is named by the function, user data
// (unbounded, possibly not even UTF-8, which a label must be): "other".
var errorTypes = map[string]bool{
	"Unhandled": true, "Handled": true,
	"Sandbox.Timedout": true, "Runtime.ExitError": true, "Runtime.OutOfMemory": true,
	"Function.ResponseSizeTooLarge": true, "Runtime.InvalidEntrypoint": true, "Runtime.InitTimeout": true,
	"Runtime.ImportModuleError": true, "Runtime.HandlerNotFound": true, "Runtime.UserCodeSyntaxError": true,
	"Runtime.MarshalError": true, "Runtime.Unknown": true, "Extension.Crash": true,
}

// ErrorTypeLabel is the label of a function error's type.
func ErrorTypeLabel(errorType string) string {
	if errorTypes[errorType] {
		return errorType
	}
	return "other"
}

// Throttled records a refused invoke.
func (s *Set) Throttled(account, function, reason string) {
	if s != nil {
		s.throttles.WithLabelValues(account, function, reason).Inc()
	}
}

// GaugeFunc is a gauge read at scrape time.
func GaugeFunc(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
}

// CounterFunc is a counter whose value f reads.
func CounterFunc(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f)
}
