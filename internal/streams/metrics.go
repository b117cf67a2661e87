package streams

import "github.com/prometheus/client_golang/prometheus"

// metrics count what the service takes and gives out, in this process.
type metrics struct {
	records, bytes *prometheus.CounterVec // by op: put, read
	failures       *prometheus.CounterVec // records of puts not taken, by error code
}

func newMetrics() metrics {
	return metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_stream_records_total",
			Help: "Records of Kiln streams put (taken) and read (given out, by GetRecords or the stream pollers), by op."}, []string{"op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_stream_bytes_total",
			Help: "Data bytes of the records of kiln_stream_records_total, by op."}, []string{"op"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_stream_put_failures_total",
			Help: "Records of puts that the store did not take, by the error code their put answered."}, []string{"code"}),
	}
}

// Metrics are the service's Prometheus metrics, to register with the
// process's.
func (s *Service) Metrics() prometheus.Collector { return s.metrics }

func (m metrics) Describe(ch chan<- *prometheus.Desc) {
	m.records.Describe(ch)
	m.bytes.Describe(ch)
	m.failures.Describe(ch)
}

func (m metrics) Collect(ch chan<- prometheus.Metric) {
	m.records.Collect(ch)
	m.bytes.Collect(ch)
	m.failures.Collect(ch)
}
