package coordinator

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clickagg/clickagg/cluster"
)

// clickagg reconcile is a batch job (a CronJob) that nothing scrapes: it
// records its result in etcd, and the leader exports it at each scrape.
// Before any run every gauge is 0, so the staleness alert fires on a
// cluster that was never reconciled.

var reconcileGauges = []struct {
	desc  *prometheus.Desc
	value func(cluster.ReconcileRun) float64
}{
	{prometheus.NewDesc("clickagg_reconcile_last_run_timestamp_seconds",
		"When the last completed clickagg reconcile started (Unix seconds); 0 before the first. Reported by the leader.", nil, nil),
		func(r cluster.ReconcileRun) float64 { return unixOrZero(r.Started.Unix(), r.Started.IsZero()) }},
	{prometheus.NewDesc("clickagg_reconcile_range_end_timestamp_seconds",
		"End (exclusive) of the range the last clickagg reconcile checked (Unix seconds); 0 before the first. Reported by the leader.", nil, nil),
		func(r cluster.ReconcileRun) float64 { return unixOrZero(r.To.Unix(), r.To.IsZero()) }},
	{prometheus.NewDesc("clickagg_reconcile_rows_compared",
		"Rows (minute, ad, country) of the history the last clickagg reconcile compared with its recount of the raw archive. Reported by the leader.", nil, nil),
		func(r cluster.ReconcileRun) float64 { return float64(r.RowsCompared) }},
	{prometheus.NewDesc("clickagg_reconcile_mismatched_rows",
		"Rows whose served history differed from the recount of the raw archive (in count or in clicks) in the last clickagg reconcile. Reported by the leader.", nil, nil),
		func(r cluster.ReconcileRun) float64 { return float64(r.MismatchedRows) }},
	{prometheus.NewDesc("clickagg_reconcile_unreadable_history_files",
		"History files missing or corrupt in the last clickagg reconcile: their minutes are served by nothing. Reported by the leader.", nil, nil),
		func(r cluster.ReconcileRun) float64 { return float64(r.UnreadableFiles) }},
	{prometheus.NewDesc("clickagg_reconcile_holes",
		"Holes (missing files) in the raw archive the last clickagg reconcile found. Reported by the leader.", nil, nil),
		func(r cluster.ReconcileRun) float64 { return float64(r.Holes) }},
	{prometheus.NewDesc("clickagg_reconcile_unchecked_minutes",
		"Partition-minutes the last clickagg reconcile could not check (archive holes, unreadable history files). Reported by the leader.", nil, nil),
		func(r cluster.ReconcileRun) float64 { return float64(r.UncheckedMinutes) }},
}

func unixOrZero(s int64, zero bool) float64 {
	if zero {
		return 0
	}
	return float64(s)
}

// reconcileCollector reads the last reconcile run at scrape time, on the
// leader.
type reconcileCollector struct{ c *Coordinator }

func (r *reconcileCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range reconcileGauges {
		ch <- g.desc
	}
}

func (r *reconcileCollector) Collect(ch chan<- prometheus.Metric) {
	c := r.c
	if c.term.Load() == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	run, _, err := c.cl.LastReconcileRun(ctx)
	if err != nil {
		c.log.Debug("metrics: last reconcile run", "err", err)
		return
	}
	for _, g := range reconcileGauges {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, g.value(run))
	}
}
