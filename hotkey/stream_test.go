package hotkey_test

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/queryd"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/toplist"
)

// startAggregator runs a real aggregator with its gRPC server and returns
// a client of it.
func (e *env) startAggregator(id string) clickaggv1.AggregatorServiceClient {
	t := e.t
	t.Helper()
	var ac aggregator.Config
	ac.RegisterFlags(flag.NewFlagSet(id, flag.ContinueOnError))
	ac.SnapshotInterval = 200 * time.Millisecond
	ac.ReadBlock = 20 * time.Millisecond
	ac.LeaveTimeout = 0 // no coordinator to hand partitions over
	// readLogs checks where every click landed after the run: keep the
	// logs (the default trims them at each snapshot).
	ac.RawRetention = time.Hour
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	a := aggregator.New(ac, aggregator.Self{ID: id, Addr: addr, LeaseTTL: leaseTTL}, partlog.New(e.rdb, redisPrefix), snapshot.New(e.rdb, redisPrefix), e.cl, testLogger(t).With("aggregator", id), time.Now)
	gs := grpc.NewServer()
	clickaggv1.RegisterAggregatorServiceServer(gs, aggregator.NewServer(a))
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	run(t, "aggregator "+id, a.Run)
	return dial(t, addr)
}

func dial(t *testing.T, addr string) clickaggv1.AggregatorServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return clickaggv1.NewAggregatorServiceClient(conn)
}

// assign gives the partitions to the registered aggregators by the ring
// and returns the owner of each partition.
func (e *env) assign(ids []string) []string {
	t := e.t
	t.Helper()
	ctx := ctxT(t)
	var ms []cluster.Member
	testserver.Eventually(t, wait, func() error {
		var err error
		if ms, err = e.cl.Members(ctx, cluster.RoleAggregator); err != nil {
			return err
		}
		if len(ms) != len(ids) {
			return fmt.Errorf("%d aggregators registered, want %d", len(ms), len(ids))
		}
		return nil
	})
	owners, err := ring.Assign(ids, e.parts.Partitions(), 0)
	if err != nil {
		t.Fatal(err)
	}
	inc := map[string]int64{}
	for _, m := range ms {
		inc[m.ID] = m.Incarnation
	}
	a := cluster.Assignment{Version: 1}
	for _, o := range owners {
		a.Owners = append(a.Owners, cluster.Owner{Member: o, Incarnation: inc[o], Epoch: 1})
	}
	lead, err := e.cl.Campaign(ctx, "test-coordinator", leaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lead.Resign(context.Background()) })
	if err := lead.Commit(ctx, cluster.Update{Assignment: &a}); err != nil {
		t.Fatal(err)
	}
	return owners
}

// caughtUp waits until every partition is served with nothing left to
// apply.
func caughtUp(t *testing.T, partitions int, aggs ...clickaggv1.AggregatorServiceClient) {
	t.Helper()
	testserver.Eventually(t, wait, func() error {
		serving := 0
		for _, a := range aggs {
			st, err := a.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
			if err != nil {
				return err
			}
			for _, p := range st.GetPartitions() {
				if p.GetState() != "serving" || p.GetLag() != 0 {
					return fmt.Errorf("partition %d on %s: %s, lag %d", p.GetPartition(), st.GetMember(), p.GetState(), p.GetLag())
				}
				serving++
			}
		}
		if serving != partitions {
			return fmt.Errorf("%d partitions serving, want %d", serving, partitions)
		}
		return nil
	})
}

// sent is the ground truth: every distinct click accepted, by event_id.
type sent map[string]*clickaggv1.ClickEvent

func (s sent) count(ad string, from, to int64, country string) int64 {
	var n int64
	for _, ev := range s {
		m := ev.GetClickTime().GetSeconds() / 60
		if ev.GetAdId() == ad && m >= from && m < to && (country == "" || ev.GetCountry() == country) {
			n++
		}
	}
	return n
}

func (s sent) top(from, to int64, n int, country string) []queryd.AdCount {
	sums := map[string]int64{}
	for _, ev := range s {
		m := ev.GetClickTime().GetSeconds() / 60
		if m >= from && m < to && (country == "" || ev.GetCountry() == country) {
			sums[ev.GetAdId()]++
		}
	}
	var all []queryd.AdCount
	for ad, c := range sums {
		all = append(all, queryd.AdCount{AdID: ad, Count: c})
	}
	slices.SortFunc(all, func(a, b queryd.AdCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.AdID, b.AdID))
	})
	return all[:min(n, len(all))]
}

// TestSplitAndUnsplitMidStreamStayExact runs the data path for real: two
// routers following the split table, three aggregators, queryd. A hot ad
// (40% of clicks) is split over three partitions on distinct aggregators
// in the middle of a stream of clicks, then unsplit; 5% of the clicks are
// retried through the other router, including every retry wave right
// after each change took effect. Then every click is in the partition the
// routing rule names and in no other, and every count and top list (one
// ad, several ads, per minute and across the changes, with a filter,
// queried and published) equals the ground truth.
func TestSplitAndUnsplitMidStreamStayExact(t *testing.T) {
	const (
		partitions = 8
		hot        = "ad-hot"
		// warm is split too; its share of a partition is too small to be in
		// an owner's top list, while its total is in the global top 3: a
		// merge that does not add split counts up gets it wrong.
		warm    = "ad-warm"
		perStep = 120
	)
	start := time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)
	e := newEnv(t, partitions, start)
	e.cfg.MaxStaleness = 8 * time.Second // clock steps of 4s
	ctx := ctxT(t)

	ids := []string{"agg-0", "agg-1", "agg-2"}
	var aggs []clickaggv1.AggregatorServiceClient
	for _, id := range ids {
		aggs = append(aggs, e.startAggregator(id))
	}
	owners := e.assign(ids)
	caughtUp(t, partitions, aggs...)

	ra, rb := e.startRouter("router-a"), e.startRouter("router-b")
	fq := e.follower(nil, "queryd")
	var qc queryd.Config
	qc.RegisterFlags(flag.NewFlagSet("queryd", flag.ContinueOnError))
	qc.PollInterval = 50 * time.Millisecond
	q := queryd.New(qc, e.parts, e.cl, toplist.New(e.rdb, redisPrefix), func(addr string) (clickaggv1.AggregatorServiceClient, error) { return dial(t, addr), nil },
		testLogger(t).With("role", "queryd"), e.clk.Now, queryd.WithSplits(fq))
	run(t, "queryd", q.Run)
	followers := []*hotkey.Follower{ra.fol, rb.fol, fq}
	e.fresh(0, followers...)

	fence, _ := leader(t, e.etcd, "coordinator")
	pub := hotkey.NewPublisher(e.cfg, e.store, e.cl, testLogger(t), e.clk.Now)
	// One sub-key on each aggregator, as the coordinator would place it.
	obs := hotkey.Observation{Members: ids}
	for p, o := range owners {
		obs.Partitions = append(obs.Partitions, hotkey.PartitionLoad{Partition: p, Member: o})
	}
	planner := hotkey.NewPlanner(e.cfg, e.parts)
	change, err := planner.Place(hot, 3, obs)
	if err != nil {
		t.Fatal(err)
	}
	warmChange, err := planner.Place(warm, 3, obs)
	if err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(7, 11))
	truth := sent{}
	var order []*clickaggv1.ClickEvent // every distinct click, in sending order
	n := 0
	// sendNew sends k new clicks through router a, their click times up to
	// 40s old and up to 4s ahead of the clock.
	sendNew := func(k int) {
		batch := make([]*clickaggv1.ClickEvent, k)
		for i := range batch {
			n++
			ad := hot
			switch r := rng.Float64(); {
			case r >= 0.5:
				ad = fmt.Sprintf("ad-%02d", rng.IntN(20)*rng.IntN(20)/19) // skewed, with ties
			case r >= 0.4:
				ad = warm
			}
			at := e.clk.Now().Add(time.Duration(rng.IntN(44_000)-40_000) * time.Millisecond)
			batch[i] = click(fmt.Sprintf("ev-%05d", n), ad, at, []string{"US", "DE", "FR"}[rng.IntN(3)])
			truth[batch[i].GetEventId()] = batch[i]
			order = append(order, batch[i])
		}
		e.ingest(ra, batch...)
	}
	// retry resends k earlier clicks, as exact copies, through router b.
	retries := 0
	retry := func(k int) {
		batch := make([]*clickaggv1.ClickEvent, k)
		for i := range batch {
			batch[i] = proto.CloneOf(order[rng.IntN(len(order))])
		}
		retries += k
		e.ingest(rb, batch...)
	}
	stepTo := func(to time.Time, version uint64) {
		for e.clk.Now().Before(to) {
			e.step(e.clk.Now().Add(e.cfg.MaxStaleness/2), version, followers...)
			sendNew(perStep)
			retry(perStep / 20)
		}
	}

	stepTo(start.Add(20*time.Second), 0)
	split, err := pub.Apply(ctx, fence, change)
	if err != nil {
		t.Fatal(err)
	}
	if iv, err := pub.Apply(ctx, fence, warmChange); err != nil || iv.FromMinute != split.FromMinute {
		t.Fatalf("split of %s: %+v, %v; want it from minute %d too", warm, iv, err, split.FromMinute)
	}
	m := split.FromMinute
	// Right after the split takes effect, a wave of retries of everything
	// sent before it.
	stepTo(minuteTime(m), 2)
	retry(len(order) / 20)
	stepTo(minuteTime(m+2).Add(10*time.Second), 2)
	unsplit, err := pub.Apply(ctx, fence, hotkey.Change{AdID: hot, Unsplit: true})
	if err != nil {
		t.Fatal(err)
	}
	if iv, err := pub.Apply(ctx, fence, hotkey.Change{AdID: warm, Unsplit: true}); err != nil || iv.ToMinute != unsplit.ToMinute {
		t.Fatalf("unsplit of %s: %+v, %v; want it to end at minute %d too", warm, iv, err, unsplit.ToMinute)
	}
	m2 := unsplit.ToMinute
	stepTo(minuteTime(m2), 4)
	retry(len(order) / 20)
	// Well past minute m2 and its lateness, so that the ticks of more
	// than one step complete it: the routers tick every 50ms of real
	// time, and a loaded machine may not tick at every step.
	stepTo(minuteTime(m2+1).Add(50*time.Second), 4)
	t.Logf("%d clicks, %d retries; split of %s over %v from minute %d to %d", len(truth), retries, hot, split.Partitions, m, m2)
	// Ticks stop only once every partition's watermark is past minute m2
	// and the lateness after it: until then its top list may never be
	// published.
	done := minuteTime(m2 + 1).Add(30 * time.Second).UnixMilli()
	testserver.Eventually(t, wait, func() error {
		for _, a := range aggs {
			st, err := a.PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
			if err != nil {
				return err
			}
			for _, p := range st.GetPartitions() {
				if p.GetWatermark().AsTime().UnixMilli() < done {
					return fmt.Errorf("partition %d: watermark %v, want at least %v", p.GetPartition(), p.GetWatermark().AsTime(), time.UnixMilli(done).UTC())
				}
			}
		}
		return nil
	})

	// Every click is in the partition the rule names, and in that one only.
	ra.stopTick()
	rb.stopTick()
	caughtUp(t, partitions, aggs...)
	where := map[string]int{}
	subKeys := map[int]int{}
	for _, l := range e.readLogs() {
		id := l.ev.GetEventId()
		want := e.parts.Partition(l.ev.GetAdId())
		if mm := l.ev.GetClickTimeMs() / 60_000; l.ev.GetAdId() == hot && mm >= m && mm < m2 {
			want = split.Partitions[xxhash.Sum64String(id)%uint64(len(split.Partitions))]
			subKeys[want]++
		}
		if mm := l.ev.GetClickTimeMs() / 60_000; l.ev.GetAdId() == warm && mm >= m && mm < m2 {
			want = warmChange.Partitions[xxhash.Sum64String(id)%uint64(len(warmChange.Partitions))]
		}
		if l.partition != want {
			t.Fatalf("click %s in partition %d, want %d", id, l.partition, want)
		}
		if p, ok := where[id]; ok && p != l.partition {
			t.Fatalf("click %s in partitions %d and %d", id, p, l.partition)
		}
		where[id] = l.partition
	}
	if len(where) != len(truth) {
		t.Fatalf("%d distinct clicks in the logs, want %d", len(where), len(truth))
	}
	if len(subKeys) != 3 {
		t.Fatalf("the split's clicks went to %v, want all of %v", subKeys, split.Partitions)
	}

	// Counts: every (ad, minute), and windows across the changes.
	e.fresh(4, fq)
	first, last := start.Add(-time.Minute).Unix()/60, e.clk.Now().Unix()/60+1
	ads := map[string]bool{}
	for _, ev := range truth {
		ads[ev.GetAdId()] = true
	}
	type window struct{ from, to int64 }
	windows := []window{{first, last}, {m - 1, m + 1}, {m, m2}, {m2 - 1, m2 + 1}, {m + 1, last}}
	for mm := first; mm < last; mm++ {
		windows = append(windows, window{mm, mm + 1})
	}
	// Queried concurrently, as users would: the race detector makes each
	// call slow.
	var g errgroup.Group
	g.SetLimit(8)
	for ad := range ads {
		for _, w := range windows {
			for _, country := range []string{"", "DE"} {
				want := truth.count(ad, w.from, w.to, country)
				g.Go(func() error {
					got, err := q.Count(ctx, ad, w.from, w.to, queryd.Filter{Country: country})
					if err != nil {
						return err
					}
					if got.Count != want {
						t.Errorf("count of %s over [%d, %d) country %q = %d, want %d", ad, w.from, w.to, country, got.Count, want)
					}
					return nil
				})
			}
		}
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if c := truth.count(hot, m, m2, ""); c < 1000 {
		t.Fatalf("only %d clicks of %s while split", c, hot)
	}
	if top := truth.top(m, m2, 3, ""); top[2].AdID != warm {
		t.Fatalf("top 3 while split: %v, want %s third", top, warm)
	}

	// Top lists, queried.
	for _, w := range windows {
		for _, tc := range []struct {
			n       int
			country string
		}{{3, ""}, {100, ""}, {5, "FR"}} {
			got, err := q.Top(ctx, w.from, w.to, tc.n, queryd.Filter{Country: tc.country})
			if err != nil {
				t.Fatal(err)
			}
			if want := truth.top(w.from, w.to, tc.n, tc.country); !slices.Equal(got.Ads, want) {
				t.Errorf("top %d over [%d, %d) country %q:\n got %v\nwant %v", tc.n, w.from, w.to, tc.country, got.Ads, want)
			}
		}
	}

	// Top lists, published: every completed minute's list in Redis is the
	// truth (late clicks made the publisher correct it).
	testserver.Eventually(t, wait, func() error {
		for mm := first; mm < m2+1; mm++ {
			v, err := e.rdb.Get(ctx, toplist.Key(redisPrefix, mm)).Result()
			if err != nil {
				return fmt.Errorf("published top of minute %d: %w", mm, err)
			}
			var resp clickaggv1.GetPopularAdsResponse
			if err := protojson.Unmarshal([]byte(v), &resp); err != nil {
				return err
			}
			want := truth.top(mm, mm+1, qc.PublishCount, "")
			if len(resp.GetAds()) != len(want) {
				return fmt.Errorf("minute %d: %d ads published, want %d", mm, len(resp.GetAds()), len(want))
			}
			for i, a := range resp.GetAds() {
				if a.GetAdId() != want[i].AdID || a.GetCount() != want[i].Count {
					return fmt.Errorf("minute %d: published #%d %s %d, want %s %d", mm, i, a.GetAdId(), a.GetCount(), want[i].AdID, want[i].Count)
				}
			}
		}
		return nil
	})
}
