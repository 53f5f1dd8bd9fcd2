package aggregator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
	"github.com/clickagg/clickagg/topn"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

const (
	redisPrefix = "clickagg"
	etcdPrefix  = "/clickagg"
	leaseTTL    = 2 * time.Second
	wait        = 30 * time.Second
)

// env is one cluster's external state: a real redis-server and a real
// embedded etcd, the test acting as router (it appends to the logs) and as
// coordinator (it writes assignments as the elected leader).
type env struct {
	t     *testing.T
	parts int
	rdb   *redis.Client
	etcd  *clientv3.Client
	log   *partlog.Log
	store *snapshot.Store
	cl    *cluster.Client
	lead  *cluster.Leadership
	part  *ring.Partitioner

	version uint64
	last    map[int]string   // partition → last entry ID appended
	ids     map[int][]string // partition → every entry ID appended
}

func newEnv(t *testing.T, parts int) *env {
	t.Helper()
	rdb := testserver.RedisClient(t)
	etcd := testserver.EtcdClient(t)
	e := &env{
		t:     t,
		parts: parts,
		rdb:   rdb,
		etcd:  etcd,
		log:   partlog.New(rdb, redisPrefix),
		store: snapshot.New(rdb, redisPrefix),
		cl:    cluster.NewClient(etcd, etcdPrefix),
		last:  make(map[int]string),
		ids:   make(map[int][]string),
	}
	var err error
	if e.part, err = ring.NewPartitioner(parts); err != nil {
		t.Fatal(err)
	}
	e.lead = campaign(t, e.cl)
	return e
}

func campaign(t *testing.T, cl *cluster.Client) *cluster.Leadership {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	lead, err := cl.Campaign(ctx, "test-coordinator", leaseTTL)
	if err != nil {
		t.Fatalf("campaign: %v", err)
	}
	t.Cleanup(func() { _ = lead.Resign(context.Background()) })
	return lead
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// member waits until id is registered with an incarnation other than
// not, and returns it.
func member(t *testing.T, cl *cluster.Client, id string, not int64) cluster.Member {
	t.Helper()
	var got cluster.Member
	testserver.Eventually(t, wait, func() error {
		ms, err := cl.Members(ctxT(t), cluster.RoleAggregator)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.ID == id && m.Incarnation != not {
				got = m
				return nil
			}
		}
		return fmt.Errorf("member %s (incarnation not %d) not registered: %v", id, not, ms)
	})
	return got
}

// assign writes an assignment, as the coordinator would.
func assign(t *testing.T, lead *cluster.Leadership, version *uint64, owners []cluster.Owner) {
	t.Helper()
	*version++
	if err := lead.Commit(ctxT(t), cluster.Update{Assignment: &cluster.Assignment{Version: *version, Owners: owners}}); err != nil {
		t.Fatalf("write assignment: %v", err)
	}
}

func (e *env) assign(owners []cluster.Owner) {
	e.t.Helper()
	if len(owners) != e.parts {
		e.t.Fatalf("assignment of %d partitions, want %d", len(owners), e.parts)
	}
	assign(e.t, e.lead, &e.version, owners)
}

// owners returns an assignment giving every partition to m at epoch.
func owners(parts int, m cluster.Member, epoch uint64) []cluster.Owner {
	o := make([]cluster.Owner, parts)
	for i := range o {
		o[i] = cluster.Owner{Member: m.ID, Incarnation: m.Incarnation, Epoch: epoch}
	}
	return o
}

// append appends encoded entries to partition p.
func (e *env) append(p int, entries ...*clickaggv1.LogEntry) {
	e.t.Helper()
	items := make([]partlog.Append, len(entries))
	for i, le := range entries {
		b, err := proto.Marshal(le)
		if err != nil {
			e.t.Fatal(err)
		}
		items[i] = partlog.Append{Partition: p, Data: b}
	}
	e.appendRaw(items)
}

func (e *env) appendRaw(items []partlog.Append) {
	e.t.Helper()
	ids, err := e.log.Append(ctxT(e.t), items)
	if err != nil {
		e.t.Fatalf("append: %v", err)
	}
	for i, it := range items {
		e.last[it.Partition] = ids[i]
		e.ids[it.Partition] = append(e.ids[it.Partition], ids[i])
	}
}

// send appends events as a router would: one batch entry per partition.
func (e *env) send(evs []*clickaggv1.LogEvent) {
	e.t.Helper()
	by := make(map[int][]*clickaggv1.LogEvent)
	for _, ev := range evs {
		p := e.part.Partition(ev.GetAdId())
		by[p] = append(by[p], ev)
	}
	for _, p := range slices.Sorted(maps.Keys(by)) {
		e.append(p, &clickaggv1.LogEntry{RouterId: "test-router", Events: by[p]})
	}
}

// tick appends a tick at ms to every partition.
func (e *env) tick(ms int64) {
	e.t.Helper()
	items := make([]partlog.Append, e.parts)
	b, err := proto.Marshal(&clickaggv1.LogEntry{RouterId: "test-router", TickMs: ms})
	if err != nil {
		e.t.Fatal(err)
	}
	for p := range e.parts {
		items[p] = partlog.Append{Partition: p, Data: b}
	}
	e.appendRaw(items)
}

// streamIDs returns the IDs of every entry in partition p's log.
func (e *env) streamIDs(p int) []string {
	e.t.Helper()
	msgs, err := e.rdb.XRange(ctxT(e.t), partlog.Key(redisPrefix, p), "-", "+").Result()
	if err != nil {
		e.t.Fatalf("xrange: %v", err)
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// storedMeta returns the stored snapshot meta of p, or nil if none.
// waitStored waits until each partition's stored snapshot is at the offset
// offsets gives it.
func (e *env) waitStored(offsets map[int]string) {
	e.t.Helper()
	testserver.Eventually(e.t, wait, func() error {
		for p, off := range offsets {
			if m, _ := e.storedMeta(p); m.GetOffset() != off {
				return fmt.Errorf("partition %d snapshot at %q, want %q", p, m.GetOffset(), off)
			}
		}
		return nil
	})
}

// storedMinute returns nil if partition p's snapshot holds minute m,
// else an error (snapshot.ErrNotFound if it does not).
func (e *env) storedMinute(p int, m int64) error {
	ld, err := e.store.Load(ctxT(e.t), p)
	if err != nil {
		return err
	}
	if _, ok := ld.Minutes[m]; !ok {
		return fmt.Errorf("minute %d of partition %d: %w", m, p, snapshot.ErrNotFound)
	}
	return nil
}

func (e *env) storedMeta(p int) (*clickaggv1.SnapshotMeta, uint64) {
	e.t.Helper()
	ld, err := e.store.Load(ctxT(e.t), p)
	if errors.Is(err, snapshot.ErrNotFound) {
		return nil, 0
	}
	if err != nil {
		e.t.Fatalf("load snapshot: %v", err)
	}
	var m clickaggv1.SnapshotMeta
	if err := proto.Unmarshal(ld.Meta, &m); err != nil {
		e.t.Fatalf("decode meta: %v", err)
	}
	return &m, ld.Epoch
}

// node is one running aggregator with its gRPC server.
type node struct {
	t      *testing.T
	a      *Aggregator
	rdb    *redis.Client
	client clickaggv1.AggregatorServiceClient
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// nodeConfig is an aggregator's configuration and its member ID.
type nodeConfig struct {
	Config
	id string
}

func testConfig(id string) nodeConfig {
	return nodeConfig{id: id, Config: Config{
		SnapshotInterval: 50 * time.Millisecond,
		ReadCount:        16,
		ReadBlock:        20 * time.Millisecond,
		AllowedLateness:  10 * time.Second,
		DedupHorizon:     DefaultDedupHorizon,
		Retention:        DefaultRetention,
		RawRetention:     DefaultRawRetention,
		ReleaseTimeout:   DefaultReleaseTimeout,
		LeaveTimeout:     DefaultLeaveTimeout,
	}}
}

// start runs an aggregator against cl (the env's cluster, or another
// view of it) with its own Redis client, so that a test can cut it off.
func (e *env) start(cfg nodeConfig, cl *cluster.Client, now func() time.Time, opts ...Option) *node {
	t := e.t
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.rdb.Options().Addr, Password: e.rdb.Options().Password})
	lg := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", cfg.id)
	self := Self{ID: cfg.id, Addr: lis.Addr().String(), LeaseTTL: leaseTTL}
	a := New(cfg.Config, self, partlog.New(rdb, redisPrefix), snapshot.New(rdb, redisPrefix), cl, lg, now, opts...)
	gs := grpc.NewServer()
	clickaggv1.RegisterAggregatorServiceServer(gs, NewServer(a))
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, a: a, rdb: rdb, client: clickaggv1.NewAggregatorServiceClient(conn), cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		n.stop()
		gs.Stop()
		_ = conn.Close()
		_ = rdb.Close()
	})
	return n
}

// stop cancels Run and waits for it to return.
func (n *node) stop() {
	n.t.Helper()
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				n.t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			n.t.Errorf("Run did not return within %v of cancel", wait)
		}
	})
}

// waitServing waits until n serves every partition in want at exactly the
// offset given, with no lag.
func (n *node) waitServing(want map[int]string) {
	n.t.Helper()
	testserver.Eventually(n.t, wait, func() error {
		st, err := n.client.PartitionStatus(ctxT(n.t), &clickaggv1.PartitionStatusRequest{})
		if err != nil {
			return err
		}
		got := make(map[int]*clickaggv1.PartitionStatus)
		for _, p := range st.GetPartitions() {
			got[int(p.GetPartition())] = p
		}
		for p, off := range want {
			s := got[p]
			switch {
			case s == nil:
				return fmt.Errorf("partition %d not held", p)
			case s.GetState() != "serving" || s.GetOffset() != off || s.GetLag() != 0:
				return fmt.Errorf("partition %d: state %s offset %s lag %d, want serving at %s", p, s.GetState(), s.GetOffset(), s.GetLag(), off)
			}
		}
		return nil
	})
}

func (n *node) count(p int, ad string, w Window, f *clickaggv1.Filter) (int64, error) {
	resp, err := n.client.Count(ctxT(n.t), &clickaggv1.CountRequest{Partition: int32(p), AdId: ad, FromMinute: w.From, ToMinute: w.To, Filter: f})
	return resp.GetCount(), err
}

func (n *node) top(ps []int, w Window, count int, f *clickaggv1.Filter) ([]topn.AdCount, error) {
	req := &clickaggv1.TopAdsRequest{FromMinute: w.From, ToMinute: w.To, Count: int32(count), Filter: f}
	for _, p := range ps {
		req.Partitions = append(req.Partitions, int32(p))
	}
	resp, err := n.client.TopAds(ctxT(n.t), req)
	if err != nil {
		return nil, err
	}
	out := make([]topn.AdCount, len(resp.GetAds()))
	for i, a := range resp.GetAds() {
		out[i] = topn.AdCount{AdID: a.GetAdId(), Count: a.GetCount()}
	}
	return out, nil
}

// wantCode fails unless err is a gRPC status with code c.
func wantCode(t *testing.T, err error, c codes.Code) {
	t.Helper()
	if status.Code(err) != c {
		t.Fatalf("got error %v, want code %v", err, c)
	}
}

// truth is the ground truth: every distinct event sent, by event_id.
type truth struct {
	part   *ring.Partitioner
	events map[string]*clickaggv1.LogEvent
}

func newTruth(part *ring.Partitioner) *truth {
	return &truth{part: part, events: make(map[string]*clickaggv1.LogEvent)}
}

// add records evs and returns how many were duplicates.
func (g *truth) add(evs []*clickaggv1.LogEvent) int {
	dups := 0
	for _, ev := range evs {
		if _, ok := g.events[ev.GetEventId()]; ok {
			dups++
			continue
		}
		g.events[ev.GetEventId()] = ev
	}
	return dups
}

func matches(ev *clickaggv1.LogEvent, w Window, f *clickaggv1.Filter) bool {
	m := tally.MinuteOf(ev.GetClickTimeMs())
	return m >= w.From && m < w.To &&
		(f.GetCountry() == "" || f.GetCountry() == ev.GetCountry()) &&
		(f.GetIp() == "" || f.GetIp() == ev.GetIp()) &&
		(f.GetUserId() == "" || f.GetUserId() == ev.GetUserId())
}

func (g *truth) count(ad string, w Window, f *clickaggv1.Filter) int64 {
	var n int64
	for _, ev := range g.events {
		if ev.GetAdId() == ad && matches(ev, w, f) {
			n++
		}
	}
	return n
}

func (g *truth) top(ps []int, w Window, n int, f *clickaggv1.Filter) []topn.AdCount {
	sums := make(map[string]int64)
	for _, ev := range g.events {
		if slices.Contains(ps, g.part.Partition(ev.GetAdId())) && matches(ev, w, f) {
			sums[ev.GetAdId()]++
		}
	}
	var all []topn.AdCount
	for ad, c := range sums {
		all = append(all, topn.AdCount{AdID: ad, Count: c})
	}
	slices.SortFunc(all, func(a, b topn.AdCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.AdID, b.AdID))
	})
	return all[:min(n, len(all))]
}

// gen makes click events with skewed ads and few distinct attributes, so
// that filters and rankings have something to tell apart.
type gen struct {
	next int
	ads  []string
	rng  *rand.Rand
}

func newGen(ads int) *gen {
	g := &gen{rng: testsupport.NewRand(1)}
	for i := range ads {
		g.ads = append(g.ads, "ad-"+strconv.Itoa(i))
	}
	return g
}

// rnd is seeded, so failures replay.
func (g *gen) rnd(n int) int { return g.rng.IntN(n) }

var (
	countries = []string{"US", "DE", "FR"}
	ips       = []string{"10.0.0.1", "10.0.0.2", "192.168.1.7", "2001:db8::1"}
)

// events returns n new events in the minutes [from, to).
func (g *gen) events(n int, from, to int64) []*clickaggv1.LogEvent {
	evs := make([]*clickaggv1.LogEvent, n)
	for i := range evs {
		g.next++
		// Squaring skews the ads: low indexes get most clicks.
		r := g.rnd(len(g.ads))
		ad := g.ads[r*r/len(g.ads)]
		minute := from + int64(g.rnd(int(to-from)))
		evs[i] = &clickaggv1.LogEvent{
			EventId:     "ev-" + strconv.Itoa(g.next),
			AdId:        ad,
			ClickTimeMs: minute*minuteMs + int64(g.rnd(minuteMs)),
			UserId:      "user-" + strconv.Itoa(g.rnd(6)),
			Ip:          ips[g.rnd(len(ips))],
			Country:     countries[g.rnd(len(countries))],
		}
	}
	return evs
}

// pick returns n events of evs chosen at random, as exact copies (a retry).
func (g *gen) pick(evs []*clickaggv1.LogEvent, n int) []*clickaggv1.LogEvent {
	out := make([]*clickaggv1.LogEvent, n)
	for i := range out {
		out[i] = proto.Clone(evs[g.rnd(len(evs))]).(*clickaggv1.LogEvent)
	}
	return out
}
