package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestStatusRender prints a cluster of 4 partitions: agg-1 (also the
// coordinator, one process) owns 0 and 1, agg-2 owns 2 and is draining,
// partition 3's owner agg-3 died (no longer registered, no report) and is
// moving to agg-2.
func TestStatusRender(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	v := statusView{
		summary: &clickaggv1.GetClusterStatusResponse{
			Leader: "agg-1", PartitionCount: 4,
			Members: []*clickaggv1.Member{
				{Id: "agg-1", Role: "aggregator", Addr: "10.0.0.1:9090", Version: "v0.2.0", HttpAddr: "10.0.0.1:8080"},
				{Id: "agg-1", Role: "coordinator", Addr: "10.0.0.1:9090", Version: "v0.2.0", HttpAddr: "10.0.0.1:8080"},
				{Id: "agg-2", Role: "aggregator", Addr: "10.0.0.2:9090", Version: "v0.1.0"},
				{Id: "router-1", Role: "router", Addr: "10.0.0.3:9090", Version: "v0.2.0", HttpAddr: "10.0.0.3:8080"},
				{Id: "router-2", Role: "router", Addr: "10.0.0.4:9090", Version: "v0.2.0"},
			},
			Routers: []*clickaggv1.RouterStatus{
				{Member: "router-1", Started: ts(-(time.Hour + 2*time.Minute + 3*time.Second + 400*time.Millisecond)), Requests: 260, Accepted: 91234,
					Rejected: 2, AppendFailures: 1, AcceptedPerSecond: 1520.56},
			},
			UnavailableRouters: []string{"router-2"},
			Unavailable:        []int32{3},
			Owners: []*clickaggv1.OwnerStatus{
				{Member: "agg-1", Partitions: 2, Serving: 2, Lag: 12, MaxLagSeconds: 0.25, WatermarkDelay: durationpb.New(4200 * time.Millisecond), EventsPerSecond: 1500.04},
				{Member: "agg-2", Partitions: 1, Restoring: 1, Lag: 300, MaxLagSeconds: 3, EventsPerSecond: 0, Draining: true},
				{Member: "agg-3", Partitions: 1, Unavailable: 1},
			},
			Totals: &clickaggv1.ClusterTotals{Serving: 2, Restoring: 1, Unavailable: 1, Lag: 312, MaxLagSeconds: 3, EventsPerSecond: 1500.04,
				EventsApplied: 90000, DuplicatesDropped: 3, LateEvents: 7, HandoffsInProgress: 1, Splits: 1,
				IngestAccepted: 91234, IngestRejected: 2, IngestAcceptedPerSecond: 1520.56, RoutersUnavailable: 1},
		},
		full: &clickaggv1.GetClusterStatusResponse{
			PartitionCount: 4,
			Partitions: []*clickaggv1.PartitionStatus{
				{Partition: 0, Member: "agg-1", Epoch: 5, State: "serving", Lag: 2, LagSeconds: 0.1, Watermark: ts(-4200 * time.Millisecond), EventsPerSecond: 1000},
				{Partition: 1, Member: "agg-1", Epoch: 5, State: "serving", Lag: 10, LagSeconds: 0.25, Watermark: ts(-3 * time.Second), EventsPerSecond: 500.04},
				{Partition: 2, Member: "agg-2", Epoch: 6, State: "restoring", Lag: 300, LagSeconds: 3},
			},
		},
		assignment: &clickaggv1.GetAssignmentResponse{Partitions: []*clickaggv1.PartitionAssignment{
			{Partition: 0, Member: "agg-1", Epoch: 5}, {Partition: 1, Member: "agg-1", Epoch: 5},
			{Partition: 2, Member: "agg-2", Epoch: 6}, {Partition: 3, Member: "agg-2", Epoch: 7},
		}},
		hot: &clickaggv1.GetHotKeysResponse{
			Keys:   []*clickaggv1.HotKey{{AdId: "ad-hot", Partition: 1, EventsPerSecond: 300, Share: 0.2}},
			Splits: []*clickaggv1.Split{{AdId: "ad-hot", Partitions: []int32{1, 2}, From: ts(time.Minute)}},
		},
		handoffs: &clickaggv1.GetHandoffsResponse{Handoffs: []*clickaggv1.Handoff{
			{Partition: 3, FromMember: "agg-3", ToMember: "agg-2", Epoch: 7, Stopped: ts(-2 * time.Second)},
			// Superseded by epoch 7, and finished: neither is in progress.
			{Partition: 3, FromMember: "agg-1", ToMember: "agg-3", Epoch: 4, Stopped: ts(-time.Hour)},
			{Partition: 2, FromMember: "agg-1", ToMember: "agg-2", Epoch: 6, Stopped: ts(-time.Minute), Serving: ts(-time.Minute)},
		}},
	}
	var b bytes.Buffer
	if err := v.render(&b, now); err != nil {
		t.Fatal(err)
	}
	want := strings.TrimPrefix(`
cluster      4 partitions: 2 serving, 1 restoring, 1 unavailable; leader agg-1
ingested     1520.6 clicks/s, 91234 accepted, 2 rejected; 1 of 2 routers, each since it started
applied      1500.0 events/s, 90000 events, 3 duplicates dropped, 7 late
freshness    lag 312 entries, oldest 3.0s; watermark delay -
moves        1 handoffs in progress, 1 splits
unavailable  partitions 3
unavailable  routers router-2 (not in the ingested sums)

MEMBER    ROLES                   VERSION  GRPC           HTTP           PARTITIONS  SERVING  LAG  OLDEST  WM DELAY  EVENTS/S
agg-1     aggregator,coordinator  v0.2.0   10.0.0.1:9090  10.0.0.1:8080  2           2        12   0.2s    4.2s      1500.0
agg-2     aggregator (draining)   v0.1.0   10.0.0.2:9090  -              1           0        300  3.0s    -         0.0
agg-3     aggregator (gone)       -        -              -              1           0        0    0.0s    -         0.0
router-1  router                  v0.2.0   10.0.0.3:9090  10.0.0.3:8080  -           -        -    -       -         -
router-2  router                  v0.2.0   10.0.0.4:9090  -              -           -        -    -       -         -

ROUTER    ACCEPTED     REJECTED  FAILED APPENDS  CLICKS/S  UP
router-1  91234        2         1               1520.6    1h2m3s
router-2  unavailable  -         -               -         -

HOT AD  PARTITION  EVENTS/S  SHARE
ad-hot  1          300.0     20.0%

SPLIT AD  PARTITIONS  FROM              TO
ad-hot    1,2         2026-12-07 12:01  open

HANDOFF      FROM   TO     EPOCH  PLANNED  STOPPED
partition 3  agg-3  agg-2  7      false    11:59:58

PARTITION  OWNER  EPOCH  STATE        LAG  OLDEST  WM DELAY  EVENTS/S
0          agg-1  5      serving      2    0.1s    4.2s      1000.0
1          agg-1  5      serving      10   0.2s    3.0s      500.0
2          agg-2  6      restoring    300  3.0s    -         0.0
3          agg-2  -      unavailable  -    -       -         -
`, "\n")
	if got := b.String(); got != want {
		t.Fatalf("render:\n%s\nwant:\n%s", got, want)
	}
}
