package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/testserver"
)

// TestMetrics follows the coordinator's metrics through an election, a
// first assignment and a member loss.
func TestMetrics(t *testing.T) {
	const parts = 12
	e := newEnv(t)
	e.register("a", "127.0.0.1:1")
	b := e.register("b", "127.0.0.1:2")
	reg := prometheus.NewPedanticRegistry()
	_, stop := e.startOn(e.etcd(), "coord-1", parts, WithMetrics(reg))
	v1 := e.waitVersion(1)
	bs := 0
	for _, o := range v1.Owners {
		if o.Member == "b" {
			bs++
		}
	}

	value := func(name string, labels ...string) (float64, error) {
		mfs, err := reg.Gather()
		if err != nil {
			return 0, err
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metrics:
			for _, m := range mf.GetMetric() {
				for i := 0; i+1 < len(labels); i += 2 {
					found := false
					for _, lp := range m.GetLabel() {
						found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
					}
					if !found {
						continue metrics
					}
				}
				switch {
				case m.GetCounter() != nil:
					return m.GetCounter().GetValue(), nil
				case m.GetGauge() != nil:
					return m.GetGauge().GetValue(), nil
				case m.GetHistogram() != nil:
					return float64(m.GetHistogram().GetSampleCount()), nil
				}
			}
		}
		return 0, fmt.Errorf("%s%v not exported", name, labels)
	}
	type check struct {
		name   string
		labels []string // name, value, ...
		want   float64
	}
	expect := func(cs ...check) {
		t.Helper()
		testserver.Eventually(t, wait, func() error {
			for _, c := range cs {
				got, err := value(c.name, c.labels...)
				if err != nil {
					return err
				}
				if got != c.want {
					return fmt.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
				}
			}
			return nil
		})
	}
	expect(
		check{"clickagg_coordinator_is_leader", nil, 1},
		check{"clickagg_coordinator_aggregators", nil, 2},
		check{"clickagg_coordinator_assignment_changes_total", nil, 1},
		check{"clickagg_coordinator_refused_writes_total", nil, 0},
		check{"clickagg_coordinator_handoff_pause_seconds", nil, 0},
		check{"clickagg_reconcile_last_run_timestamp_seconds", nil, 0},
		check{"clickagg_reconcile_mismatched_rows", nil, 0},
	)

	// A reconcile run recorded in etcd is exported by the leader.
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	if err := e.cl.PutReconcileRun(ctxT(t), cluster.ReconcileRun{Started: day.Add(25 * time.Hour), From: day, To: day.Add(24 * time.Hour),
		RowsCompared: 900, MismatchedRows: 2, UnreadableFiles: 1, Holes: 3, UncheckedMinutes: 45}); err != nil {
		t.Fatal(err)
	}
	expect(
		check{"clickagg_reconcile_last_run_timestamp_seconds", nil, float64(day.Add(25 * time.Hour).Unix())},
		check{"clickagg_reconcile_range_end_timestamp_seconds", nil, float64(day.Add(24 * time.Hour).Unix())},
		check{"clickagg_reconcile_rows_compared", nil, 900},
		check{"clickagg_reconcile_mismatched_rows", nil, 2},
		check{"clickagg_reconcile_unreadable_history_files", nil, 1},
		check{"clickagg_reconcile_holes", nil, 3},
		check{"clickagg_reconcile_unchecked_minutes", nil, 45},
	)

	// b goes: its partitions move unplanned (it cannot release them).
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	e.waitVersion(2)
	expect(
		check{"clickagg_coordinator_aggregators", nil, 1},
		check{"clickagg_coordinator_assignment_changes_total", nil, 2},
		check{"clickagg_coordinator_handoffs_total", []string{"kind", "unplanned"}, float64(bs)},
		check{"clickagg_coordinator_handoffs_total", []string{"kind", "planned"}, 0},
	)

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	expect(
		check{"clickagg_coordinator_is_leader", nil, 0},
		check{"clickagg_coordinator_aggregators", nil, 0},
	)
}
