package aggregator

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// partitionsText is the exposition of clickagg_aggregator_partitions for
// an aggregator with failed and serving partitions and none restoring or
// released.
func partitionsText(failed, serving int) string {
	return fmt.Sprintf(`# HELP clickagg_aggregator_partitions Partitions held by this aggregator, by state (restoring, serving, failed, released).
# TYPE clickagg_aggregator_partitions gauge
clickagg_aggregator_partitions{state="failed"} %d
clickagg_aggregator_partitions{state="released"} 0
clickagg_aggregator_partitions{state="restoring"} 0
clickagg_aggregator_partitions{state="serving"} %d
`, failed, serving)
}

// TestMetrics checks the aggregator's metrics against a log the test
// wrote: events applied, duplicates, late and expired events (which
// ClickaggExpiredClicks reads), the per-partition gauges
// and the snapshot and freshness histograms.
func TestMetrics(t *testing.T) {
	e := newEnv(t, 2)
	reg := prometheus.NewPedanticRegistry()
	n := e.start(testConfig("agg-0"), e.cl, time.Now, WithMetrics(reg))
	m := member(t, e.cl, "agg-0", 0)
	e.assign(owners(2, m, 1))

	now := time.Now().UnixMilli()
	minute := now/minuteMs*minuteMs - 10*minuteMs
	ev := func(id, ad string, ms int64) *clickaggv1.LogEvent {
		return &clickaggv1.LogEvent{EventId: id, AdId: ad, ClickTimeMs: ms, UserId: "u", Ip: "192.0.2.1", Country: "US"}
	}
	// Partition 0: three events, one a duplicate; a tick completes their
	// minute; then a late one.
	e.append(0, &clickaggv1.LogEntry{RouterId: "r", Events: []*clickaggv1.LogEvent{ev("e1", "a", minute), ev("e2", "a", minute+1), ev("e1", "a", minute)}})
	e.append(0, &clickaggv1.LogEntry{RouterId: "r", TickMs: minute + 5*minuteMs})
	e.append(0, &clickaggv1.LogEntry{RouterId: "r", Events: []*clickaggv1.LogEvent{ev("e3", "a", minute+2)}})
	e.append(1, &clickaggv1.LogEntry{RouterId: "r", TickMs: now})
	// Partition 1: a click 8 hours old, after a tick at now: its minute
	// left the dedup horizon (6h30m) behind the watermark, it expires.
	e.append(1, &clickaggv1.LogEntry{RouterId: "r", Events: []*clickaggv1.LogEvent{ev("old", "b", now-8*60*minuteMs)}})
	n.waitServing(e.last)

	testserver.Eventually(t, wait, func() error {
		for name, tc := range map[string]struct {
			c    prometheus.Collector
			want float64
		}{
			"applied":    {n.a.m.applied, 3},
			"duplicates": {n.a.m.duplicates, 1},
			"late":       {n.a.m.late, 1},
			"expired":    {n.a.m.expired, 1},
		} {
			if got := testutil.ToFloat64(tc.c); got != tc.want {
				return fmt.Errorf("%s = %v, want %v", name, got, tc.want)
			}
		}
		// Snapshots are due every 50ms.
		if c, err := testutil.GatherAndCount(reg, "clickagg_aggregator_snapshot_duration_seconds", "clickagg_aggregator_snapshot_size_bytes"); err != nil || c != 2 {
			return fmt.Errorf("snapshot histograms: %d series, %v", c, err)
		}
		return nil
	})

	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP clickagg_aggregator_partition_lag_entries Log entries of the partition not applied yet.
# TYPE clickagg_aggregator_partition_lag_entries gauge
clickagg_aggregator_partition_lag_entries{partition="0"} 0
clickagg_aggregator_partition_lag_entries{partition="1"} 0
# HELP clickagg_aggregator_partition_lag_seconds Age of the oldest log entry of the partition not applied yet (0 when caught up).
# TYPE clickagg_aggregator_partition_lag_seconds gauge
clickagg_aggregator_partition_lag_seconds{partition="0"} 0
clickagg_aggregator_partition_lag_seconds{partition="1"} 0
`+partitionsText(0, 2)+`# HELP clickagg_aggregator_fenced_writes_total Snapshot writes refused because a newer owner had claimed the partition; each dropped the partition.
# TYPE clickagg_aggregator_fenced_writes_total counter
clickagg_aggregator_fenced_writes_total 0
# HELP clickagg_aggregator_state_keys Distinct (ad, minute) keys in memory, over the partitions held.
# TYPE clickagg_aggregator_state_keys gauge
clickagg_aggregator_state_keys 1
# HELP clickagg_aggregator_state_dedup_ids Clicks (ad_id, event_id pairs) remembered for deduplication, over the partitions held.
# TYPE clickagg_aggregator_state_dedup_ids gauge
clickagg_aggregator_state_dedup_ids 3
`), "clickagg_aggregator_partition_lag_entries", "clickagg_aggregator_partition_lag_seconds", "clickagg_aggregator_partitions", "clickagg_aggregator_fenced_writes_total",
		"clickagg_aggregator_state_keys", "clickagg_aggregator_state_dedup_ids"); err != nil {
		t.Error(err)
	}

	// The watermark delays: wall clock minus (tick - lateness), within the
	// time this test took.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	delays := map[string]float64{}
	stateBytes := map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "clickagg_aggregator_watermark_delay_seconds":
			for _, m := range mf.GetMetric() {
				delays[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		case "clickagg_aggregator_state_bytes":
			for _, m := range mf.GetMetric() {
				stateBytes[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	// One key of three counted events: rows, their user and ip hashes and
	// their ids take memory; no query has built a cache or an index.
	for budget, positive := range map[string]bool{"rows": true, "filter": true, "dedup": true, "top_cache": false, "country_index": false} {
		if b, ok := stateBytes[budget]; !ok || (b > 0) != positive {
			t.Errorf("state bytes of %s = %v (reported: %v), want positive %v", budget, b, ok, positive)
		}
	}
	end := time.Now().UnixMilli() + 1 // the gauge is not truncated to ms
	for p, tick := range map[string]int64{"0": minute + 5*minuteMs, "1": now} {
		wm := tick - lateness.Milliseconds()
		lo, hi := float64(now-wm)/1000, float64(end-wm)/1000
		if d, ok := delays[p]; !ok || d < lo || d > hi {
			t.Errorf("watermark delay of partition %s = %v (reported: %v), want in [%v, %v]", p, d, ok, lo, hi)
		}
	}
	// The instruments measured in place are the registered ones.
	var are prometheus.AlreadyRegisteredError
	if err := reg.Register(n.a.m.freshness); !errors.As(err, &are) || are.ExistingCollector != n.a.m.freshness {
		t.Errorf("freshness histogram not registered: %v", err)
	}
}

// TestSnapshotAgeMetric reads clickagg_aggregator_snapshot_age_seconds
// under a fake clock, snapshots due every minute of it: 0 when the
// partitions begin serving (no snapshot yet), 0 again right after the
// first snapshots, exactly the time the clock moved while none is due,
// and 0 once the next ones are stored.
func TestSnapshotAgeMetric(t *testing.T) {
	e := newEnv(t, 2)
	clock := testsupport.NewClock(time.Now())
	cfg := testConfig("agg-0")
	cfg.SnapshotInterval = time.Minute // by the fake clock
	reg := prometheus.NewPedanticRegistry()
	n := e.start(cfg, e.cl, clock.Now, WithMetrics(reg))
	e.assign(owners(2, member(t, e.cl, "agg-0", 0), 1))
	e.append(0, &clickaggv1.LogEntry{RouterId: "r", TickMs: clock.Now().UnixMilli()})
	e.append(1, &clickaggv1.LogEntry{RouterId: "r", TickMs: clock.Now().UnixMilli()})

	ages := func(want float64) func() error {
		return func() error {
			mfs, err := reg.Gather()
			if err != nil {
				return err
			}
			got := map[string]float64{}
			for _, mf := range mfs {
				if mf.GetName() == "clickagg_aggregator_snapshot_age_seconds" {
					for _, m := range mf.GetMetric() {
						got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
					}
				}
			}
			if w := map[string]float64{"0": want, "1": want}; !maps.Equal(got, w) {
				return fmt.Errorf("snapshot ages %v, want %v", got, w)
			}
			return nil
		}
	}
	testserver.Eventually(t, wait, ages(0))
	n.waitServing(e.last)
	clock.Advance(time.Minute) // every first snapshot is due within one interval
	e.waitStored(e.last)
	testserver.Eventually(t, wait, ages(0))
	clock.Advance(30 * time.Second) // the next are due a minute after the first
	testserver.Eventually(t, wait, ages(30))
	clock.Advance(30 * time.Second)
	testserver.Eventually(t, wait, ages(0))
}
