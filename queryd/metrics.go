package queryd

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WithMetrics registers queryd's metrics (clickagg_queryd_*) with reg.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(q *Queryd) { q.reg = reg }
}

// RPC names, the rpc label of the query metrics.
const (
	rpcCount = "GetAggregatedCount"
	rpcTop   = "GetPopularAds"
	rpcWatch = "WatchPopularAds"
)

// metrics are queryd's instruments. They exist whether or not they are
// registered.
type metrics struct {
	duration    *prometheus.HistogramVec
	unavailable *prometheus.CounterVec
	published   prometheus.Counter
	// by rpc, resolved once
	durations    map[string]prometheus.Observer
	unavailables map[string]prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clickagg_queryd_query_duration_seconds",
			Help:    "Duration of a query (gRPC or HTTP), fan-out and merge included, by RPC; failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"rpc"}),
		unavailable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clickagg_queryd_queries_unavailable_total",
			Help: "Queries that failed with UNAVAILABLE (a partition without a serving owner, a stale split table), by RPC.",
		}, []string{"rpc"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_queryd_published_minutes_total",
			Help: "Minutes whose top list this queryd published (stored and announced), corrections included.",
		}),
		durations:    map[string]prometheus.Observer{},
		unavailables: map[string]prometheus.Counter{},
	}
	for _, rpc := range []string{rpcCount, rpcTop, rpcWatch} {
		m.unavailables[rpc] = m.unavailable.WithLabelValues(rpc)
		if rpc != rpcWatch {
			m.durations[rpc] = m.duration.WithLabelValues(rpc)
		}
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.duration, m.unavailable, m.published}
}

// observe records one query of rpc that started at start and ended with
// err.
func (m *metrics) observe(rpc string, start time.Time, err error) {
	if o := m.durations[rpc]; o != nil {
		o.Observe(time.Since(start).Seconds())
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrStopped) {
		m.unavailables[rpc].Inc()
	}
}
