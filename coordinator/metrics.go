package coordinator

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WithMetrics registers the coordinator's metrics (clickagg_coordinator_*)
// with reg. The split gauge reads the split table from etcd at each scrape
// of the leader.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(c *Coordinator) { c.reg = reg }
}

// scrapeTimeout bounds the etcd read of one scrape.
const scrapeTimeout = 3 * time.Second

// metrics are the coordinator's instruments measured where things happen.
type metrics struct {
	handoffPause prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		handoffPause: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "clickagg_coordinator_handoff_pause_seconds",
			Help: "Time a moved partition had no serving owner: from its old owner's stop (release, or lease loss) to its new owner serving it.",
			// 10ms to about 80s.
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
}

// collectors returns every collector of c.
func (c *Coordinator) collectors() []prometheus.Collector {
	counter := func(name, help string, v func(Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(c.Stats())) })
	}
	handoffs := func(kind string, v func(Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "clickagg_coordinator_handoffs_total",
			Help:        "Partition moves written by this coordinator, by kind: planned (the old owner released it live) or unplanned.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(v(c.Stats())) })
	}
	return []prometheus.Collector{
		c.m.handoffPause,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "clickagg_coordinator_is_leader",
			Help: "1 while this coordinator leads the cluster, else 0.",
		}, func() float64 {
			if c.term.Load() != nil {
				return 1
			}
			return 0
		}),
		counter("clickagg_coordinator_assignment_changes_total", "Assignments written by this coordinator that moved at least one partition (rebalances).", func(s Stats) int64 { return s.AssignmentChanges }),
		handoffs("planned", func(s Stats) int64 { return s.PlannedHandoffs }),
		handoffs("unplanned", func(s Stats) int64 { return s.UnplannedHandoffs }),
		counter("clickagg_coordinator_refused_writes_total", "Leader writes refused because this coordinator no longer held the election (fenced); each ended its term.", func(s Stats) int64 { return s.RefusedWrites }),
		counter("clickagg_coordinator_failed_releases_total", "Release calls to a live old owner that failed or timed out; each move went ahead unplanned.", func(s Stats) int64 { return s.FailedReleases }),
		counter("clickagg_coordinator_split_changes_total", "Hot-key splits and unsplits made effective (every live router acknowledged them).", func(s Stats) int64 { return s.SplitChanges }),
		counter("clickagg_coordinator_withdrawn_split_changes_total", "Hot-key split changes withdrawn because a router did not acknowledge in time.", func(s Stats) int64 { return s.WithdrawnChanges }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "clickagg_coordinator_aggregators",
			Help: "Live aggregators in the membership, as the leader sees it; 0 on a coordinator that does not lead.",
		}, func() float64 {
			if c.term.Load() == nil {
				return 0
			}
			return float64(c.aggregators.Load())
		}),
		&splitCollector{c: c},
		&reconcileCollector{c: c},
	}
}

var splitsDesc = prometheus.NewDesc("clickagg_coordinator_hot_key_splits",
	"Ads split over several partitions now (open splits of the split table); reported by the leader only.", nil, nil)

// splitCollector reads the split table at scrape time, on the leader.
type splitCollector struct{ c *Coordinator }

func (s *splitCollector) Describe(ch chan<- *prometheus.Desc) { ch <- splitsDesc }

func (s *splitCollector) Collect(ch chan<- prometheus.Metric) {
	c := s.c
	if c.hk == nil || c.term.Load() == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	t, _, err := c.hk.store.Load(ctx)
	if err != nil {
		c.log.Debug("metrics: load split table", "err", err)
		return
	}
	open := 0
	for _, iv := range t.Splits() {
		if iv.Open() {
			open++
		}
	}
	ch <- prometheus.MustNewConstMetric(splitsDesc, prometheus.GaugeValue, float64(open))
}
