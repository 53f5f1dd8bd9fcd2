package queryd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsObserve(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	q := New(Config{}, nil, nil, nil, nil, nil, time.Now, WithMetrics(reg))
	m := q.m
	start := time.Now()
	m.observe(rpcCount, start, nil)
	m.observe(rpcCount, start, fmt.Errorf("%w: partition 3: no serving owner", ErrUnavailable))
	m.observe(rpcTop, start, context.DeadlineExceeded)
	m.observe(rpcTop, start, ErrStopped)
	m.observe(rpcWatch, time.Time{}, errors.Join(ErrUnavailable))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP clickagg_queryd_queries_unavailable_total Queries that failed with UNAVAILABLE (a partition without a serving owner, a stale split table), by RPC.
# TYPE clickagg_queryd_queries_unavailable_total counter
clickagg_queryd_queries_unavailable_total{rpc="GetAggregatedCount"} 1
clickagg_queryd_queries_unavailable_total{rpc="GetPopularAds"} 1
clickagg_queryd_queries_unavailable_total{rpc="WatchPopularAds"} 1
`), "clickagg_queryd_queries_unavailable_total"); err != nil {
		t.Error(err)
	}
	// Durations of the unary RPCs only, failed ones included: a watch
	// lasts as long as its client wants.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() == "clickagg_queryd_query_duration_seconds" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	if want := map[string]uint64{rpcCount: 2, rpcTop: 2}; !maps.Equal(got, want) {
		t.Errorf("query durations observed %v, want %v", got, want)
	}
}
