package coordinator

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestSummarize rolls up a cluster of 7 partitions: a owns 0-2 (all
// reported, one restoring), b owns 3-4 (4 not reported), c owns 5
// (reported without a watermark), 6 has no owner; d is a live aggregator
// with nothing. Routers r1 and r2 answered, r3 did not. The sums are
// written out by hand.
func TestSummarize(t *testing.T) {
	base := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	report := func(p int, member, state string, lag int64, lagSec, eps float64, applied, dups, late int64, wm time.Duration) *clickaggv1.PartitionStatus {
		ps := &clickaggv1.PartitionStatus{
			Partition: int32(p), Member: member, State: state, Lag: lag, LagSeconds: lagSec, EventsPerSecond: eps,
			EventsApplied: applied, DuplicatesDropped: dups, LateEvents: late,
		}
		if wm >= 0 {
			ps.Watermark = timestamppb.New(base.Add(wm))
		}
		return ps
	}
	st := ClusterStatus{
		Leader:     "coord-1",
		Partitions: 7,
		Members: []cluster.Member{
			{ID: "a", Role: cluster.RoleAggregator, Leaving: true},
			{ID: "b", Role: cluster.RoleAggregator},
			{ID: "coord-1", Role: cluster.RoleCoordinator},
			{ID: "d", Role: cluster.RoleAggregator},
		},
		// c is named by the assignment but not live (it just died).
		Owners: []cluster.Owner{
			{Member: "a", Epoch: 3}, {Member: "a", Epoch: 3}, {Member: "a", Epoch: 5},
			{Member: "b", Epoch: 4}, {Member: "b", Epoch: 4}, {Member: "c", Epoch: 2}, {},
		},
		Reports: []*clickaggv1.PartitionStatus{
			report(0, "a", "serving", 10, 0.5, 100, 1000, 1, 2, 3*time.Minute),
			report(1, "a", "serving", 20, 1.5, 50.5, 2000, 0, 0, time.Minute),
			report(2, "a", "restoring", 300, 9, 0, 30, 3, 4, 2*time.Minute),
			report(3, "b", "serving", 0, 0, 25.25, 4000, 5, 6, 4*time.Minute),
			report(5, "c", "serving", 7, 0.25, 1, 70, 0, 1, -1),
		},
		Unavailable: []int{4, 6},
		Routers: []*clickaggv1.RouterStatus{
			{Member: "r1", Accepted: 5000, Rejected: 12, AcceptedPerSecond: 80.5},
			{Member: "r2", Accepted: 2100, Rejected: 0, AcceptedPerSecond: 96.25},
		},
		UnavailableRouters: []string{"r3"},
	}
	draining := map[string]time.Time{"b": base}
	handoffs := []cluster.Handoff{
		{Partition: 2, From: "b", To: "a", Epoch: 5},                                // a restoring it: in progress
		{Partition: 2, From: "c", To: "b", Epoch: 4},                                // superseded by epoch 5
		{Partition: 0, From: "b", To: "a", Epoch: 3, Serving: base},                 // done
		{Partition: 3, From: "a", To: "b", Epoch: 4, Serving: base.Add(-time.Hour)}, // done
	}
	splits := []hotkey.Interval{
		{AdID: "ad-1", Partitions: []int{1, 3}, FromMinute: 10},
		{AdID: "ad-2", Partitions: []int{2, 5}, FromMinute: 10, ToMinute: 20},
		{AdID: "ad-3", Partitions: []int{0, 4}, FromMinute: 30},
	}

	got := summarize(st, draining, handoffs, splits)
	want := Summary{
		ClusterStatus: st,
		Owners: []OwnerSummary{
			{Member: "a", Partitions: 3, Serving: 2, Restoring: 1, Draining: true, MinWatermark: base.Add(time.Minute),
				Rollup: Rollup{Lag: 330, MaxLagSeconds: 9, EventsPerSecond: 150.5, EventsApplied: 3030, DuplicatesDropped: 4, LateEvents: 6}},
			{Member: "b", Partitions: 2, Serving: 1, Unavailable: 1, Draining: true,
				Rollup: Rollup{EventsPerSecond: 25.25, EventsApplied: 4000, DuplicatesDropped: 5, LateEvents: 6}},
			{Member: "c", Partitions: 1, Serving: 1,
				Rollup: Rollup{Lag: 7, MaxLagSeconds: 0.25, EventsPerSecond: 1, EventsApplied: 70, LateEvents: 1}},
			{Member: "d"},
		},
		Totals: Totals{
			Serving: 4, Restoring: 1, Unavailable: 2, HandoffsInProgress: 1, Splits: 2,
			IngestAccepted: 7100, IngestRejected: 12, IngestPerSecond: 176.75, RoutersUnavailable: 1,
			Rollup: Rollup{Lag: 337, MaxLagSeconds: 9, EventsPerSecond: 176.75, EventsApplied: 7100, DuplicatesDropped: 9, LateEvents: 13},
		},
	}
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Fatalf("summarize (-want +got):\n%s", d)
	}
}
