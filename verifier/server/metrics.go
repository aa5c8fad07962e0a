package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the attestation service's Prometheus metrics.
type Metrics struct {
	Attestations *prometheus.CounterVec // by verdict
	Refusals     *prometheus.CounterVec // by error code
	VerifyTime   prometheus.Histogram
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootgate_attestations_total", Help: "Completed attestations by verdict.",
		}, []string{"verdict"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootgate_attestation_refusals_total", Help: "Refused attestation requests by error code.",
		}, []string{"code"}),
		VerifyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bootgate_verification_seconds", Help: "Time to verify one attestation's evidence and evaluate the policy.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
	}
	reg.MustRegister(m.Attestations, m.Refusals, m.VerifyTime)
	return m
}
