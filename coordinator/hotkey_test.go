package coordinator

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// This file runs coordinators with hot-key splitting against a real etcd,
// fake aggregators (real gRPC servers reporting what the test sets) and a
// router's real hotkey.Follower, which acknowledges every table version on
// its membership lease as routers do.

// hkConfig is a hot-key configuration with short intervals; change adjusts
// it before it is validated.
func hkConfig(t *testing.T, change func(*hotkey.Config)) hotkey.Config {
	t.Helper()
	var c hotkey.Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	c.MaxStaleness = time.Second
	c.ConfirmInterval = 50 * time.Millisecond
	c.Safety = 2 * time.Second
	c.LeadTime = 3 * time.Second
	c.AckPollInterval = 20 * time.Millisecond
	c.CheckInterval = 100 * time.Millisecond
	c.MaxWays = 4
	if change != nil {
		change(&c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// hkWorld is one cluster: etcd, fake aggregators, a router's follower.
type hkWorld struct {
	*env
	parts int
	part  *ring.Partitioner
	cfg   hotkey.Config
	clk   *testsupport.Clock
	store *hotkey.Store
	aggs  map[string]*fakeAggregator
	asg   cluster.Assignment
}

func newHKWorld(t *testing.T, parts int, cfg hotkey.Config, aggs ...string) *hkWorld {
	t.Helper()
	e := newEnv(t)
	part, err := ring.NewPartitioner(parts)
	if err != nil {
		t.Fatal(err)
	}
	w := &hkWorld{
		env:   e,
		parts: parts,
		part:  part,
		cfg:   cfg,
		clk:   testsupport.NewClock(time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)),
		store: hotkey.NewStore(e.etcd(), "/t", parts),
		aggs:  map[string]*fakeAggregator{},
	}
	for _, id := range aggs {
		f := startAggregator(t, id)
		e.register(id, f.addr)
		w.aggs[id] = f
	}
	return w
}

// startRouter registers router id and runs its follower, which
// acknowledges every table version it holds.
func (w *hkWorld) startRouter(id string) *hotkey.Follower {
	t := w.t
	t.Helper()
	reg, err := w.cl.Register(ctxT(t), cluster.Member{ID: id, Role: cluster.RoleRouter, Addr: "127.0.0.1:1"}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close(context.Background()) })
	f := hotkey.NewFollower(w.cfg, hotkey.NewStore(w.etcd(), "/t", w.parts), &hotkey.Acker{ID: id, Lease: clientv3.LeaseID(reg.Member().Incarnation)}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router %s follower: %v", id, err)
		}
	})
	return f
}

// startCoordinator runs a coordinator with hot keys and its gRPC API.
func (w *hkWorld) startCoordinator(id string) (*Coordinator, clickaggv1.CoordinatorServiceClient) {
	t := w.t
	t.Helper()
	lis := testserver.Listen(t)
	addr := lis.Addr().String()
	cfg := Config{Load: ring.DefaultLoad, SessionTTL: ttl, StatusTimeout: 2 * time.Second, ReleaseTimeout: 2 * time.Second}
	etcd := w.etcd()
	c := New(cfg, cluster.Candidate{ID: id, Addr: addr}, cluster.NewClient(etcd, "/t"), w.parts, w.dial, coordLogger(t, id), WithHotKeys(hotkey.NewStore(etcd, "/t", w.parts), w.cfg, w.clk.Now))
	client := serveCoordinator(t, lis, c)
	runCoordinator(t, id, c)
	return c, client
}

// rate is the events per second every owner reports for partition p:
// distinct, so that placements are predictable.
func rate(p int) float64 { return float64(10 * (p + 1)) }

// report makes every owner report its partitions as serving at rate(p),
// with heavy[p] as their heaviest ads.
func (w *hkWorld) report(heavy map[int][]*clickaggv1.AdCount) {
	by := map[string][]*clickaggv1.PartitionStatus{}
	for p, o := range w.asg.Owners {
		by[o.Member] = append(by[o.Member], &clickaggv1.PartitionStatus{
			Partition: int32(p), Member: o.Member, Epoch: o.Epoch, State: "serving",
			EventsPerSecond: rate(p), Heavy: heavy[p],
		})
	}
	for id, f := range w.aggs {
		f.set(by[id], false)
	}
}

// firsts returns each aggregator's lowest partition, in partition order,
// with its owner: where the planner puts one sub-key each when every
// aggregator takes one (the least loaded partition of each).
func (w *hkWorld) firsts() ([]int, []string) {
	first := map[string]int{}
	for p, o := range w.asg.Owners {
		if _, ok := first[o.Member]; !ok {
			first[o.Member] = p
		}
	}
	var ps []int
	for _, p := range first {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	ms := make([]string, len(ps))
	for i, p := range ps {
		ms[i] = w.asg.Owners[p].Member
	}
	return ps, ms
}

func (w *hkWorld) table() (*hotkey.Table, int64) {
	w.t.Helper()
	tab, rev, err := w.store.Load(ctxT(w.t))
	if err != nil {
		w.t.Fatal(err)
	}
	return tab, rev
}

func minuteOf(m int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(m*60, 0)) }

func wantSplit(ad string, ps []int, members []string, from, to int64) *clickaggv1.Split {
	s := &clickaggv1.Split{AdId: ad, From: minuteOf(from), Members: members}
	for _, p := range ps {
		s.Partitions = append(s.Partitions, int32(p))
	}
	if to != 0 {
		s.To = minuteOf(to)
	}
	return s
}

// TestSplitKeyRPCs: SplitKey, UnsplitKey and GetHotKeys through the gRPC
// API: every refusal with its code, dry runs that write nothing, a split
// acknowledged by the router, forwarding from a follower, and the hot ads
// and split table GetHotKeys reports.
func TestSplitKeyRPCs(t *testing.T) {
	const parts = 8
	// Nothing is hot and no split cools down during the test: only the
	// calls change the table.
	w := newHKWorld(t, parts, hkConfig(t, func(c *hotkey.Config) { c.SplitRate, c.UnsplitRate, c.MinSplit = 1e9, 1, time.Hour }), "a", "b", "c")
	w.startRouter("r1")
	_, leader := w.startCoordinator("coord-1")
	w.waitLeader("coord-1")
	_, follower := w.startCoordinator("coord-2")
	w.asg = w.waitVersion(1)
	w.report(nil)

	split := func(ad string, ways int32, dry bool) func() error {
		return func() error {
			_, err := leader.SplitKey(ctxT(t), &clickaggv1.SplitKeyRequest{AdId: ad, Ways: ways, DryRun: dry})
			return err
		}
	}
	unsplit := func(ad string, dry bool) func() error {
		return func() error {
			_, err := leader.UnsplitKey(ctxT(t), &clickaggv1.UnsplitKeyRequest{AdId: ad, DryRun: dry})
			return err
		}
	}
	refusals := func(t *testing.T, tests []refusal) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.call()
				if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) {
					t.Fatalf("got %v, want %v mentioning %q", err, tt.code, tt.msg)
				}
			})
		}
	}
	refusals(t, []refusal{
		{"split: empty ad", split("", 2, false), codes.InvalidArgument, "ad_id is empty"},
		{"split: empty ad, dry run", split("", 2, true), codes.InvalidArgument, "ad_id is empty"},
		{"split: control character", split("ad\n1", 2, false), codes.InvalidArgument, "control character U+000A at byte 2"},
		{"split: ad too long", split(strings.Repeat("x", 129), 2, false), codes.InvalidArgument, "129 bytes long, at most 128"},
		{"split: one way", split("ad-1", 1, false), codes.InvalidArgument, "ways 1: must be in [2, 4]"},
		{"split: negative ways", split("ad-1", -2, true), codes.InvalidArgument, "ways -2"},
		{"split: over max ways", split("ad-1", 5, false), codes.InvalidArgument, "ways 5: must be in [2, 4]"},
		{"split: more ways than aggregators", split("ad-1", 4, false), codes.InvalidArgument, `cannot split ad "ad-1" 4 ways: only 3 aggregators`},
		{"split: more ways than aggregators, dry run", split("ad-1", 4, true), codes.InvalidArgument, "only 3 aggregators"},
		{"unsplit: empty ad", unsplit("", false), codes.InvalidArgument, "ad_id is empty"},
		{"unsplit: not split", unsplit("ad-1", false), codes.FailedPrecondition, `ad "ad-1" is not split; nothing to unsplit`},
		{"unsplit: not split, dry run", unsplit("ad-1", true), codes.FailedPrecondition, `ad "ad-1" is not split`},
		{"hot keys: negative count", func() error {
			_, err := leader.GetHotKeys(ctxT(t), &clickaggv1.GetHotKeysRequest{Count: -1})
			return err
		}, codes.InvalidArgument, "count -1"},
	})
	if tab, rev := w.table(); rev != 0 || tab.Version() != 0 {
		t.Fatalf("split table version %d at revision %d after the refusals, want none written", tab.Version(), rev)
	}

	// A dry run, from the leader and through the follower: the plan, and
	// nothing written. Every aggregator takes a sub-key on its least loaded
	// (lowest) partition, from the first minute routers can learn of in
	// time.
	m := hotkey.EffectiveMinute(w.clk.Now(), w.cfg.MaxSkew, w.cfg.LeadTime)
	ps, ms := w.firsts()
	want := &clickaggv1.SplitKeyResponse{Split: wantSplit("ad-1", ps, ms, m, 0), DryRun: true}
	for name, cl := range map[string]clickaggv1.CoordinatorServiceClient{"leader": leader, "follower": follower} {
		got, err := cl.SplitKey(ctxT(t), &clickaggv1.SplitKeyRequest{AdId: "ad-1", Ways: 3, DryRun: true})
		if err != nil {
			t.Fatalf("dry run at the %s: %v", name, err)
		}
		if d := diff(want, got); d != "" {
			t.Fatalf("dry run at the %s (-want +got):\n%s", name, d)
		}
	}
	if tab, rev := w.table(); rev != 0 || tab.Version() != 0 {
		t.Fatalf("split table version %d at revision %d after dry runs, want none written", tab.Version(), rev)
	}

	// The split itself, through the follower: the dry run's plan, stored.
	got, err := follower.SplitKey(ctxT(t), &clickaggv1.SplitKeyRequest{AdId: "ad-1", Ways: 3})
	if err != nil {
		t.Fatal(err)
	}
	want.DryRun = false
	if d := diff(want, got); d != "" {
		t.Fatalf("split (-want +got):\n%s", d)
	}
	tab, rev := w.table()
	if iv, ok := tab.Open("ad-1"); tab.Version() != 1 || !ok || iv.FromMinute != m || !slices.Equal(iv.Partitions, ps) || !slices.Equal(iv.Members, ms) {
		t.Fatalf("stored table version %d: %+v; want version 1 with ad-1 over %v from minute %d", tab.Version(), tab.Splits(), ps, m)
	}
	acks, err := w.store.Acks(ctxT(t))
	if err != nil || acks["r1"].Version < 1 {
		t.Fatalf("router acks %v, %v; want r1 at version 1 (the split waited for it)", acks, err)
	}

	refusals(t, []refusal{
		{"split: already split", split("ad-1", 2, false), codes.FailedPrecondition,
			fmt.Sprintf(`ad "ad-1" is already split over partitions %v since minute %d; unsplit it first`, ps, m)},
		{"split: already split, dry run", split("ad-1", 2, true), codes.FailedPrecondition, "already split"},
	})
	if _, r := w.table(); r != rev {
		t.Fatalf("split table revision %d after refused splits, want %d", r, rev)
	}

	// GetHotKeys: the heaviest ads over every partition, and the table.
	hot, warm := "ad-hot", "ad-warm"
	w.report(map[int][]*clickaggv1.AdCount{
		0: {{AdId: hot, Count: 600}, {AdId: warm, Count: 120}},
		5: {{AdId: hot, Count: 300}, {AdId: "ad-1", Count: 60}},
		7: {{AdId: warm, Count: 60}},
	})
	var total float64
	for p := range parts {
		total += rate(p)
	}
	key := func(ad string, r float64) *clickaggv1.HotKey {
		return &clickaggv1.HotKey{AdId: ad, Partition: int32(w.part.Partition(ad)), EventsPerSecond: r, Share: r / total}
	}
	wantHK := &clickaggv1.GetHotKeysResponse{
		Keys:   []*clickaggv1.HotKey{key(hot, 15), key(warm, 3), key("ad-1", 1)},
		Splits: []*clickaggv1.Split{wantSplit("ad-1", ps, ms, m, 0)},
	}
	for name, cl := range map[string]clickaggv1.CoordinatorServiceClient{"leader": leader, "follower": follower} {
		got, err := cl.GetHotKeys(ctxT(t), &clickaggv1.GetHotKeysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(wantHK, got); d != "" {
			t.Fatalf("GetHotKeys at the %s (-want +got):\n%s", name, d)
		}
	}
	got2, err := leader.GetHotKeys(ctxT(t), &clickaggv1.GetHotKeysRequest{Count: 1})
	if err != nil || len(got2.GetKeys()) != 1 || got2.GetKeys()[0].GetAdId() != hot {
		t.Fatalf("GetHotKeys count 1 = %v, %v; want only %s", got2, err, hot)
	}

	// Unsplit: the split has not started (the clock is before its first
	// minute), so it goes as a whole: it ends where it starts.
	wantUn := &clickaggv1.UnsplitKeyResponse{Split: wantSplit("ad-1", ps, ms, m, m), DryRun: true}
	gotUn, err := leader.UnsplitKey(ctxT(t), &clickaggv1.UnsplitKeyRequest{AdId: "ad-1", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(wantUn, gotUn); d != "" {
		t.Fatalf("unsplit dry run (-want +got):\n%s", d)
	}
	if _, r := w.table(); r != rev {
		t.Fatalf("split table revision %d after an unsplit dry run, want %d", r, rev)
	}
	gotUn, err = follower.UnsplitKey(ctxT(t), &clickaggv1.UnsplitKeyRequest{AdId: "ad-1"})
	if err != nil {
		t.Fatal(err)
	}
	wantUn.DryRun = false
	if d := diff(wantUn, gotUn); d != "" {
		t.Fatalf("unsplit (-want +got):\n%s", d)
	}
	if tab, _ := w.table(); tab.Version() != 2 || len(tab.Splits()) != 0 {
		t.Fatalf("stored table version %d: %+v; want version 2 and no splits", tab.Version(), tab.Splits())
	}
	refusals(t, []refusal{
		{"unsplit: unsplit already", unsplit("ad-1", false), codes.FailedPrecondition, `ad "ad-1" is not split`},
	})
}

type refusal struct {
	name string
	call func() error
	code codes.Code
	msg  string
}

// TestControllerSplitsAndUnsplitsHotAd: the leader's Controller splits an
// ad its owner reports above the split rate, over MaxWays aggregators,
// once the router acknowledged, and ends the split once the ad has been
// cool for MinSplit.
func TestControllerSplitsAndUnsplitsHotAd(t *testing.T) {
	const parts = 8
	w := newHKWorld(t, parts, hkConfig(t, func(c *hotkey.Config) {
		c.SplitRate, c.UnsplitRate, c.MinSplit, c.MaxWays = 100, 10, 30*time.Second, 3
	}), "a", "b", "c")
	w.startRouter("r1")
	co, _ := w.startCoordinator("coord-1")
	w.waitLeader("coord-1")
	w.asg = w.waitVersion(1)

	hot := "ad-hot"
	home := w.part.Partition(hot)
	// 40/s below the split rate: nothing happens.
	w.report(map[int][]*clickaggv1.AdCount{home: {{AdId: hot, Count: 40 * 60}}})
	time.Sleep(5 * w.cfg.CheckInterval) // a few checks; nothing to wait for
	if tab, rev := w.table(); rev != 0 {
		t.Fatalf("split table %+v written for an ad below the split rate", tab.Splits())
	}

	// 600/s: split over 3 aggregators (its share would be above a quarter
	// of the mean aggregator's load with fewer).
	w.report(map[int][]*clickaggv1.AdCount{home: {{AdId: hot, Count: 600 * 60}}})
	m := hotkey.EffectiveMinute(w.clk.Now(), w.cfg.MaxSkew, w.cfg.LeadTime)
	var iv hotkey.Interval
	testserver.Eventually(t, wait, func() error {
		tab, _, err := w.store.Load(ctxT(t))
		if err != nil {
			return err
		}
		var ok bool
		if iv, ok = tab.Open(hot); !ok {
			return fmt.Errorf("%s not split: %+v", hot, tab.Splits())
		}
		return nil
	})
	ps, ms := w.firsts()
	if iv.FromMinute != m || !slices.Equal(iv.Partitions, ps) || !slices.Equal(iv.Members, ms) {
		t.Fatalf("split %+v, want over %v (%v) from minute %d", iv, ps, ms, m)
	}
	// Written is not effective: the router's ack makes it so. Moving the
	// clock past the ack deadline before that would withdraw it.
	testserver.Eventually(t, wait, func() error {
		if st := co.Stats(); st.SplitChanges != 1 || st.WithdrawnChanges != 0 {
			return fmt.Errorf("stats %+v, want one change made effective", st)
		}
		return nil
	})

	// Cool, but not for MinSplit since the split started: kept. Then
	// unsplit from the first minute routers can learn of.
	cool := map[int][]*clickaggv1.AdCount{}
	for _, p := range append([]int{home}, iv.Partitions...) {
		cool[p] = []*clickaggv1.AdCount{{AdId: hot, Count: 60}}
	}
	w.report(cool)
	w.clk.Set(iv.From().Add(w.cfg.MinSplit - time.Second))
	time.Sleep(5 * w.cfg.CheckInterval)
	if tab, _ := w.table(); tab.Version() != 1 {
		t.Fatalf("split table version %d before the split lasted MinSplit, want 1: %+v", tab.Version(), tab.Splits())
	}
	now := iv.From().Add(w.cfg.MinSplit)
	w.clk.Set(now)
	end := hotkey.EffectiveMinute(now, w.cfg.MaxSkew, w.cfg.LeadTime)
	testserver.Eventually(t, wait, func() error {
		tab, _, err := w.store.Load(ctxT(t))
		if err != nil {
			return err
		}
		if _, ok := tab.Open(hot); ok {
			return fmt.Errorf("%s still split: %+v", hot, tab.Splits())
		}
		return nil
	})
	testserver.Eventually(t, wait, func() error {
		if st := co.Stats(); st.SplitChanges != 2 || st.WithdrawnChanges != 0 {
			return fmt.Errorf("stats %+v, want two changes made effective", st)
		}
		return nil
	})
	tab, _ := w.table()
	if got := tab.Intervals(hot); tab.Version() != 2 || len(got) != 1 || got[0].FromMinute != m || got[0].ToMinute != end {
		t.Fatalf("stored table version %d: %+v; want version 2 with %s split over minutes [%d, %d)", tab.Version(), got, hot, m, end)
	}
}

// TestSplitKeyFencedEndsTerm: a split table write refused because the
// election key is gone (another coordinator could lead) fails the call
// with UNAVAILABLE, writes nothing, and ends the term like any refused
// leader write; the coordinator then campaigns and leads again.
func TestSplitKeyFencedEndsTerm(t *testing.T) {
	w := newHKWorld(t, 4, hkConfig(t, func(c *hotkey.Config) { c.SplitRate, c.UnsplitRate, c.MinSplit = 1e9, 1, time.Hour }), "a", "b")
	co, cl := w.startCoordinator("coord-1")
	w.waitLeader("coord-1")
	w.asg = w.waitVersion(1)
	w.report(nil)

	// The key goes while the session lives on: only the fence can tell.
	etcd := w.etcd()
	if _, err := etcd.Delete(ctxT(t), "/t/leader/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	_, err := cl.SplitKey(ctxT(t), &clickaggv1.SplitKeyRequest{AdId: "ad-1"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "not the leader") {
		t.Fatalf("split by a deposed leader = %v, want UNAVAILABLE", err)
	}
	if tab, rev := w.table(); rev != 0 {
		t.Fatalf("split table %+v written by a deposed leader", tab.Splits())
	}
	if st := co.Stats(); st.RefusedWrites != 1 {
		t.Fatalf("stats %+v, want one refused write", st)
	}
	// A new term: the split goes through.
	testserver.Eventually(t, wait, func() error {
		_, err := cl.SplitKey(ctxT(t), &clickaggv1.SplitKeyRequest{AdId: "ad-1"})
		return err
	})
	if tab, _ := w.table(); tab.Version() != 1 || len(tab.Intervals("ad-1")) != 1 {
		t.Fatalf("split table version %d: %+v; want ad-1 split at version 1", tab.Version(), tab.Splits())
	}
}
