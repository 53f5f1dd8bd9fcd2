package router

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Rejection reasons as metric labels: the field a rejection names first
// (a reason lists every problem of the event, field by field, in this
// order), or "other". A small fixed set, never the client's values.
var rejectReasons = []string{"event_id", "ad_id", "user_id", "ip", "country", "click_time", "other"}

// rejectReason maps a rejection's text to its label.
func rejectReason(reason string) string {
	for _, f := range rejectReasons[:len(rejectReasons)-1] {
		if strings.HasPrefix(reason, f+" ") {
			return f
		}
	}
	return "other"
}

// metrics are the router's instruments. They exist whether or not they
// are registered (WithMetrics), so that the hot paths never check.
type metrics struct {
	requests       prometheus.Counter
	accepted       prometheus.Counter
	rejected       map[string]prometheus.Counter // by rejectReason
	rejectedVec    *prometheus.CounterVec
	appends        prometheus.Counter
	entryEvents    prometheus.Histogram
	appendDuration prometheus.Histogram
	appendFailures prometheus.Counter
	tickFailures   prometheus.Counter
	logFull        prometheus.Gauge
	logOverBound   prometheus.Gauge
	redisUsed      prometheus.Gauge
	redisBound     prometheus.Gauge
	redisNodeUsed  *prometheus.GaugeVec
	redisNodeLimit *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_router_requests_total",
			Help: "Ingest requests (unary calls and stream messages) handled, failed ones included.",
		}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_router_events_accepted_total",
			Help: "Click events appended to the partition logs and acknowledged.",
		}),
		rejectedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clickagg_router_events_rejected_total",
			Help: "Click events refused by validation, by the field their rejection names first.",
		}, []string{"reason"}),
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_router_log_entries_total",
			Help: "Log entries of click events appended to the partition logs (ticks excluded).",
		}),
		entryEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clickagg_router_log_entry_events",
			Help:    "Click events per appended log entry (group commit of concurrent requests).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		appendDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clickagg_router_append_duration_seconds",
			Help:    "Duration of one pipelined append of a batch to the partition logs.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		appendFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_router_append_failures_total",
			Help: "Appends of batches of click events that failed; their requests failed with UNAVAILABLE.",
		}),
		tickFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_router_tick_failures_total",
			Help: "Ticks (event-time frontiers) that could not be appended to every partition.",
		}),
		logFull: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clickagg_router_log_full",
			Help: "1 while Redis refuses this router's appends for lack of memory (maxmemory reached under noeviction), 0 once an append succeeds again.",
		}),
		logOverBound: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clickagg_router_log_over_bound",
			Help: "1 while this router refuses clicks because Redis uses at least -router.max-redis-memory-fraction of its maxmemory (the logs are not trimmed: archiving or snapshots are behind), 0 otherwise.",
		}),
		redisUsed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clickagg_router_redis_used_memory_bytes",
			Help: "Memory the fullest Redis primary (the largest share of its maxmemory) counts against its maxmemory, as this router last read it (INFO memory, every -router.redis-memory-check-interval).",
		}),
		redisBound: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clickagg_router_redis_memory_bound_bytes",
			Help: "Memory of the fullest Redis primary at which this router refuses clicks: -router.max-redis-memory-fraction of its maxmemory; 0 when no primary has a maxmemory or the bound is off.",
		}),
		redisNodeUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "clickagg_redis_used_memory_bytes",
			Help: "Memory each Redis primary that holds partition logs counts against its maxmemory (used_memory less replication and AOF buffers), as this router last read it (INFO memory, every -router.redis-memory-check-interval).",
		}, []string{"node"}),
		redisNodeLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "clickagg_redis_maxmemory_bytes",
			Help: "maxmemory of each Redis primary that holds partition logs, as this router last read it; 0: no limit.",
		}, []string{"node"}),
		rejected: make(map[string]prometheus.Counter, len(rejectReasons)),
	}
	for _, r := range rejectReasons {
		m.rejected[r] = m.rejectedVec.WithLabelValues(r)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.accepted, m.rejectedVec, m.appends, m.entryEvents, m.appendDuration, m.appendFailures, m.tickFailures, m.logFull,
		m.logOverBound, m.redisUsed, m.redisBound, m.redisNodeUsed, m.redisNodeLimit}
}

// WithMetrics registers the router's metrics (clickagg_router_*) with reg.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(r *Router) { r.reg = reg }
}

// register registers cs with reg and returns the first failure.
func register(reg prometheus.Registerer, cs []prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
