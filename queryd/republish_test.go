package queryd

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/toplist"
)

// TestRepublishHorizonDefault: the default horizon is the aggregators'
// default dedup horizon, the longest a minute can change.
func TestRepublishHorizonDefault(t *testing.T) {
	if defaultRepublishHorizon != aggregator.DefaultDedupHorizon {
		t.Fatalf("default -queryd.republish-horizon %v, want the aggregators' default -aggregator.dedup-horizon %v", defaultRepublishHorizon, aggregator.DefaultDedupHorizon)
	}
}

// realCluster is two real aggregators (aggregator.Aggregator with their
// gRPC servers) on a real redis-server and a real embedded etcd, the test
// acting as router (it appends to the partition logs) and as coordinator
// (it writes the assignment).
type realCluster struct {
	t     *testing.T
	ctx   context.Context
	parts *ring.Partitioner
	plog  *partlog.Log
	cl    *cluster.Client
	aggs  []clickaggv1.AggregatorServiceClient
	ids   int // event ids handed out
}

const realLateness = 10 * time.Second

func newRealCluster(t *testing.T, ctx context.Context, parts *ring.Partitioner) (*realCluster, func(string) (clickaggv1.AggregatorServiceClient, error)) {
	t.Helper()
	rdb := testserver.RedisClient(t)
	c := &realCluster{t: t, ctx: ctx, parts: parts, plog: partlog.New(rdb, "clickagg"), cl: cluster.NewClient(testserver.EtcdClient(t), "/queryd-real")}
	var conns []*grpc.ClientConn
	t.Cleanup(func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	})
	dial := func(addr string) (clickaggv1.AggregatorServiceClient, error) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		conns = append(conns, cc)
		return clickaggv1.NewAggregatorServiceClient(cc), nil
	}
	for i := range 2 {
		var cfg aggregator.Config
		cfg.RegisterFlags(flag.NewFlagSet("aggregator", flag.ContinueOnError))
		id := fmt.Sprintf("agg-%d", i)
		cfg.SnapshotInterval = 200 * time.Millisecond
		cfg.ReadBlock = 20 * time.Millisecond
		cfg.AllowedLateness = realLateness
		cfg.LeaveTimeout = 0
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		a := aggregator.New(cfg, aggregator.Self{ID: id, Addr: addr, LeaseTTL: 10 * time.Second}, c.plog, snapshot.New(rdb, "clickagg"), c.cl, testLogger(t).With("node", id), time.Now)
		gs := grpc.NewServer()
		clickaggv1.RegisterAggregatorServiceServer(gs, aggregator.NewServer(a))
		served := make(chan struct{})
		go func() { defer close(served); _ = gs.Serve(lis) }()
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("aggregator %s: %v", id, err)
			}
			gs.Stop()
			<-served
		})
		client, err := dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		c.aggs = append(c.aggs, client)
	}

	var members []cluster.Member
	testserver.Eventually(t, 30*time.Second, func() error {
		var err error
		if members, err = c.cl.Members(ctx, cluster.RoleAggregator); err != nil {
			return err
		}
		if len(members) != 2 {
			return fmt.Errorf("%d aggregators registered", len(members))
		}
		return nil
	})
	lead, err := c.cl.Campaign(ctx, "test-coordinator", 10*time.Second)
	if err != nil {
		t.Fatalf("campaign: %v", err)
	}
	t.Cleanup(func() { _ = lead.Resign(context.Background()) })
	byID := map[string]cluster.Member{}
	for _, m := range members {
		byID[m.ID] = m
	}
	owners, err := ring.Assign(slices.Sorted(maps.Keys(byID)), parts.Partitions(), 0)
	if err != nil {
		t.Fatal(err)
	}
	a := cluster.Assignment{Version: 1, Owners: make([]cluster.Owner, len(owners))}
	for p, id := range owners {
		a.Owners[p] = cluster.Owner{Member: id, Incarnation: byID[id].Incarnation, Epoch: 1}
	}
	if err := lead.Commit(ctx, cluster.Update{Assignment: &a}); err != nil {
		t.Fatalf("write assignment: %v", err)
	}
	return c, dial
}

// send appends clicks to their partitions' logs as a router would: one
// entry per partition.
func (c *realCluster) send(cs ...click) {
	c.t.Helper()
	by := map[int][]*clickaggv1.LogEvent{}
	for _, ck := range cs {
		c.ids++
		p := c.parts.Partition(ck.ad)
		by[p] = append(by[p], &clickaggv1.LogEvent{
			EventId: fmt.Sprintf("e%d", c.ids), AdId: ck.ad, ClickTimeMs: ck.minute*minuteMs + int64(c.ids%60_000),
			UserId: ck.userID, Ip: ck.ip, Country: ck.country,
		})
	}
	var items []partlog.Append
	for _, p := range slices.Sorted(maps.Keys(by)) {
		items = append(items, c.entry(p, &clickaggv1.LogEntry{RouterId: "test-router", Events: by[p]}))
	}
	c.append(items)
}

// completeUpTo appends to every partition a tick that makes minute m the
// newest complete one, and waits until every partition is served with
// that watermark.
func (c *realCluster) completeUpTo(m int64) {
	c.t.Helper()
	wm := (m + 1) * minuteMs
	var items []partlog.Append
	for p := range c.parts.Partitions() {
		items = append(items, c.entry(p, &clickaggv1.LogEntry{RouterId: "test-router", TickMs: wm + realLateness.Milliseconds()}))
	}
	c.append(items)
	testserver.Eventually(c.t, 30*time.Second, func() error {
		served := 0
		for _, a := range c.aggs {
			st, err := a.PartitionStatus(c.ctx, &clickaggv1.PartitionStatusRequest{})
			if err != nil {
				return err
			}
			for _, ps := range st.GetPartitions() {
				if ps.GetState() != "serving" || ps.GetWatermark().AsTime().UnixMilli() != wm || ps.GetLag() != 0 {
					return fmt.Errorf("partition %d: %s, watermark %v, lag %d", ps.GetPartition(), ps.GetState(), ps.GetWatermark().AsTime(), ps.GetLag())
				}
				served++
			}
		}
		if served != c.parts.Partitions() {
			return fmt.Errorf("%d partitions served", served)
		}
		return nil
	})
}

func (c *realCluster) entry(p int, le *clickaggv1.LogEntry) partlog.Append {
	b, err := proto.Marshal(le)
	if err != nil {
		c.t.Fatal(err)
	}
	return partlog.Append{Partition: p, Data: b}
}

func (c *realCluster) append(items []partlog.Append) {
	c.t.Helper()
	if _, err := c.plog.Append(c.ctx, items); err != nil {
		c.t.Fatalf("append: %v", err)
	}
}

// TestRepublishAcrossHorizon runs the publisher on real aggregators: late
// clicks in a minute published long before (older than the last
// -queryd.republish-minutes, which were all a poll re-checked before), but
// inside the dedup horizon, change its top list, and the corrected list
// replaces the stored one and is announced on the channel and to a watcher
// that had the minute; no other minute is announced again.
func TestRepublishAcrossHorizon(t *testing.T) {
	ctx := ctxT(t)
	parts := newPartitioner(t)
	tr := newTruth(parts, 13, 1500, 40, 12)
	c, dial := newRealCluster(t, ctx, parts)
	c.send(tr.clicks...)
	c.completeUpTo(base + 2)

	cfg := testConfig()
	cfg.PublishCount = 5
	cfg.RepublishMinutes = 3
	cfg.RecheckInterval = 0
	rdb := testserver.RedisClient(t)
	pubsub := subscribe(t, ctx, rdb)
	q := New(cfg, parts, c.cl, toplist.New(rdb, "clickagg"), dial, testLogger(t), testNow)
	runQueryd(t, q)
	qc := serveQuery(t, NewServer(q))
	for m := base; m <= base+2; m++ {
		expect(t, "startup", pubsub.next(), tr, m, 5, Filter{})
	}
	w := watch(t, ctx, qc, &clickaggv1.WatchPopularAdsRequest{Count: 4})
	expect(t, "watch start", w.next(), tr, base+2, 4, Filter{})

	c.completeUpTo(base + 9)
	for m := base + 3; m <= base+9; m++ {
		expect(t, "advance channel", pubsub.next(), tr, m, 5, Filter{})
		expect(t, "advance watch", w.next(), tr, m, 4, Filter{})
	}

	// base+2 is 7 minutes back: outside the last 3, inside the aggregators'
	// dedup horizon (6h30m), so the clicks are counted, late.
	late := base + 2
	var lateClicks []click
	for i := range 12 {
		lateClicks = append(lateClicks, click{ad: "ad-late", minute: late, country: "DE", ip: "10.0.0.2", userID: fmt.Sprintf("late%d", i)})
	}
	before := tr.top(late, late+1, 5, Filter{})
	tr.add(lateClicks...)
	if after := tr.top(late, late+1, 5, Filter{}); after[0].AdID != "ad-late" || slices.Equal(before, after) {
		t.Fatalf("late clicks do not change minute %d's top: %v, then %v", late, before, after)
	}
	c.send(lateClicks...)

	expect(t, "correction channel", pubsub.next(), tr, late, 5, Filter{})
	expect(t, "correction watch", w.next(), tr, late, 4, Filter{})
	got, ok := stored(t, ctx, rdb, late)
	if !ok {
		t.Fatalf("minute %d not stored", late)
	}
	expect(t, "correction key", got, tr, late, 5, Filter{})

	// The next announcement is the next minute: nothing unchanged was
	// announced again.
	c.completeUpTo(base + 10)
	expect(t, "after correction channel", pubsub.next(), tr, base+10, 5, Filter{})
	expect(t, "after correction watch", w.next(), tr, base+10, 4, Filter{})
}
