package cli

import (
	"net/http"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clickagg/clickagg/buildinfo"
)

// newRegistry returns the registry of one process's /metrics: the Go
// runtime and process collectors, clickagg_build_info (which build runs,
// for joining onto any series by instance), and each role's metrics once it is
// registered. A registry per Server, not the global one, so that tests can
// run several in one process, and so that the embedded etcd of clickagg dev
// (which registers its own gRPC metrics globally) does not clash with ours.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.NewCollector(buildinfo.Get()),
	)
	return reg
}

// grpcMetrics returns the gRPC server metrics (grpc_server_*, with the
// handling-time histogram) registered with reg; its interceptors go on the
// server, and InitializeMetrics after every service is registered.
func grpcMetrics(reg prometheus.Registerer) *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
	))
	reg.MustRegister(m)
	return m
}

// metricsHandler serves reg in the Prometheus exposition formats.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
