package aggregator

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clickagg/clickagg/tally"
)

// Option configures an Aggregator beyond its Config.
type Option func(*Aggregator)

// WithMetrics registers the aggregator's metrics (clickagg_aggregator_*)
// with reg. The per-partition lag gauges cost one Redis call per held
// partition at each scrape, bounded by scrapeTimeout.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(a *Aggregator) { a.promReg = reg }
}

// scrapeTimeout bounds the Redis calls of one scrape.
const scrapeTimeout = 3 * time.Second

// metrics are the aggregator's instruments measured where things happen.
// They exist whether or not they are registered, so that the hot paths
// never check.
type metrics struct {
	freshness        prometheus.Histogram
	snapshotDuration prometheus.Histogram
	snapshotBytes    prometheus.Histogram
	applied          prometheus.Counter
	duplicates       prometheus.Counter
	late             prometheus.Counter
	expired          prometheus.Counter
	releases         prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		freshness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "clickagg_aggregator_freshness_seconds",
			Help: "Time from a log entry's append (the Redis clock in its stream ID) to its events being queryable here, per entry applied to a serving partition.",
			// 1ms to about 33s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		snapshotDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clickagg_aggregator_snapshot_duration_seconds",
			Help:    "Duration of one partition snapshot write to Redis (the fenced script and the store's wait for room in its in-flight byte budget; encoding is not), failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		snapshotBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clickagg_aggregator_snapshot_size_bytes",
			Help:    "Bytes written by one partition snapshot (metadata and the changed minutes).",
			Buckets: prometheus.ExponentialBuckets(256, 4, 10),
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_aggregator_events_applied_total",
			Help: "Click events counted by this process (replays after a take included).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_aggregator_duplicate_events_total",
			Help: "Click events dropped because their event_id was already counted in their minute.",
		}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_aggregator_late_events_total",
			Help: "Click events counted after their minute had completed (each revises the minute).",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_aggregator_expired_events_total",
			Help: "Click events refused because their minute had left the dedup horizon.",
		}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_aggregator_handoff_releases_total",
			Help: "Partitions released to the coordinator for a live handoff (final snapshot written).",
		}),
	}
}

// countApplied adds the difference of a partition's event counters.
func (m *metrics) countApplied(before, after tally.Stats) {
	if d := after.EventsApplied - before.EventsApplied; d > 0 {
		m.applied.Add(float64(d))
	}
	if d := after.Duplicates - before.Duplicates; d > 0 {
		m.duplicates.Add(float64(d))
	}
	if d := after.Late - before.Late; d > 0 {
		m.late.Add(float64(d))
	}
	if d := after.Expired - before.Expired; d > 0 {
		m.expired.Add(float64(d))
	}
}

// collectors returns every collector of a: the instruments above, the
// counters of Stats, and the per-partition gauges read at scrape time.
func (a *Aggregator) collectors() []prometheus.Collector {
	m := a.m
	counter := func(name, help string, v func(Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(a.Stats())) })
	}
	return []prometheus.Collector{
		m.freshness, m.snapshotDuration, m.snapshotBytes, m.applied, m.duplicates, m.late, m.expired, m.releases,
		counter("clickagg_aggregator_fenced_writes_total", "Snapshot writes refused because a newer owner had claimed the partition; each dropped the partition.", func(s Stats) int64 { return s.FencedWrites }),
		counter("clickagg_aggregator_snapshot_failures_total", "Snapshot writes that failed for other reasons than fencing (retried at the next interval).", func(s Stats) int64 { return s.SnapshotErrors }),
		counter("clickagg_aggregator_corrupt_entries_total", "Log entries that did not decode; each stopped its partition from being served.", func(s Stats) int64 { return s.CorruptEntries }),
		counter("clickagg_aggregator_lease_losses_total", "Membership leases lost while running; each stopped every partition.", func(s Stats) int64 { return s.LeaseLosses }),
		&partitionCollector{a: a},
	}
}

var (
	partitionsDesc = prometheus.NewDesc("clickagg_aggregator_partitions",
		"Partitions held by this aggregator, by state (restoring, serving, failed, released).", []string{"state"}, nil)
	lagEntriesDesc = prometheus.NewDesc("clickagg_aggregator_partition_lag_entries",
		"Log entries of the partition not applied yet.", []string{"partition"}, nil)
	lagSecondsDesc = prometheus.NewDesc("clickagg_aggregator_partition_lag_seconds",
		"Age of the oldest log entry of the partition not applied yet (0 when caught up).", []string{"partition"}, nil)
	watermarkDelayDesc = prometheus.NewDesc("clickagg_aggregator_watermark_delay_seconds",
		"Wall clock minus the partition's watermark (event time up to which minutes are complete).", []string{"partition"}, nil)
	snapshotAgeDesc = prometheus.NewDesc("clickagg_aggregator_snapshot_age_seconds",
		"Wall clock minus when the partition's last snapshot was stored (since it began serving here, if it has none), for each partition held and not released. About -aggregator.snapshot-interval; while it grows the log is not trimmed and a restart replays more.", []string{"partition"}, nil)
	stateKeysDesc = prometheus.NewDesc("clickagg_aggregator_state_keys",
		"Distinct (ad, minute) keys in memory, over the partitions held.", nil, nil)
	stateDedupIDsDesc = prometheus.NewDesc("clickagg_aggregator_state_dedup_ids",
		"Clicks (ad_id, event_id pairs) remembered for deduplication, over the partitions held.", nil, nil)
	stateBytesDesc = prometheus.NewDesc("clickagg_aggregator_state_bytes",
		"Memory of the partitions held, by budget (package tally's accounting): rows (clicks by ad and by ad and country), filter (user and ip hashes per event, and their indexes), dedup (click-identity hashes), top_cache (Top's cached sums and late-event journal), country_index (rows grouped by country, built by country queries).", []string{"budget"}, nil)
)

// partitionCollector reads the held partitions at scrape time.
type partitionCollector struct{ a *Aggregator }

func (c *partitionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- partitionsDesc
	ch <- lagEntriesDesc
	ch <- lagSecondsDesc
	ch <- watermarkDelayDesc
	ch <- snapshotAgeDesc
	ch <- stateKeysDesc
	ch <- stateDedupIDsDesc
	ch <- stateBytesDesc
}

func (c *partitionCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	byState := map[string]int{}
	for _, s := range []state{stateRestoring, stateServing, stateFailed, stateReleased} {
		byState[s.String()] = 0
	}
	now := a.now()
	type held struct {
		id int
		wm int64
		// snapshotted: when the last snapshot was stored, else when the
		// partition began serving; zero for a released partition (nobody
		// snapshots it again) and one restoring without a snapshot.
		snapshotted time.Time
	}
	var hs []held
	var tps []*tally.Partition
	a.mu.RLock()
	for _, p := range a.parts {
		if p.state == stateStopped {
			continue
		}
		byState[p.state.String()]++
		h := held{id: p.id, wm: p.tp.Watermark()}
		if p.state != stateReleased {
			h.snapshotted = p.lastSnapshot
			if h.snapshotted.IsZero() {
				h.snapshotted = p.servingSince
			}
		}
		hs = append(hs, h)
		tps = append(tps, p.tp)
	}
	a.mu.RUnlock()
	// Each partition's accounting walks its minutes under its read lock;
	// at scrape intervals that is cheap next to applying.
	var mem tally.Memory
	for _, tp := range tps {
		mem.Add(tp.Memory())
	}
	ch <- prometheus.MustNewConstMetric(stateKeysDesc, prometheus.GaugeValue, float64(mem.Keys))
	ch <- prometheus.MustNewConstMetric(stateDedupIDsDesc, prometheus.GaugeValue, float64(mem.DedupIDs))
	for budget, b := range map[string]int64{"rows": mem.RowBytes, "filter": mem.FilterBytes, "dedup": mem.DedupBytes, "top_cache": mem.TopCacheBytes, "country_index": mem.CountryIndexBytes} {
		ch <- prometheus.MustNewConstMetric(stateBytesDesc, prometheus.GaugeValue, float64(b), budget)
	}
	for s, n := range byState {
		ch <- prometheus.MustNewConstMetric(partitionsDesc, prometheus.GaugeValue, float64(n), s)
	}
	for _, h := range hs {
		if !h.snapshotted.IsZero() {
			ch <- prometheus.MustNewConstMetric(snapshotAgeDesc, prometheus.GaugeValue, now.Sub(h.snapshotted).Seconds(), strconv.Itoa(h.id))
		}
		if h.wm <= 0 {
			continue // no tick yet: the delay is meaningless
		}
		ch <- prometheus.MustNewConstMetric(watermarkDelayDesc, prometheus.GaugeValue, now.Sub(time.UnixMilli(h.wm)).Seconds(), strconv.Itoa(h.id))
	}

	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	_, st, err := a.Status(ctx)
	if err != nil {
		a.lg.Debug("metrics: partition status", "err", err)
		return
	}
	loads, err := a.loads(ctx, st)
	if err != nil {
		a.lg.Debug("metrics: partition loads", "err", err)
	}
	for _, s := range st {
		if s.State != stateRestoring.String() && s.State != stateServing.String() {
			continue
		}
		p := strconv.Itoa(s.Partition)
		ch <- prometheus.MustNewConstMetric(lagEntriesDesc, prometheus.GaugeValue, float64(s.Lag), p)
		if l, ok := loads[s.Partition]; ok {
			ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, l.LagSeconds, p)
		}
	}
}
