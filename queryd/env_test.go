package queryd

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/localserver"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
	"github.com/clickagg/clickagg/toplist"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

// base is the first minute of the generated clicks; now() is inside
// minute base+nowOffset.
const (
	base      = int64(29_000_000)
	nowOffset = 30
)

func testNow() time.Time { return time.Unix((base+nowOffset)*60+17, 0) }

// click is one counted click, in canonical form.
type click struct {
	ad                  string
	partition           int
	minute              int64
	country, ip, userID string
}

func (c click) matches(f Filter) bool {
	return (f.Country == "" || f.Country == c.country) &&
		(f.IP == "" || f.IP == c.ip) &&
		(f.UserID == "" || f.UserID == c.userID)
}

// truth is the ground-truth dataset that the fake aggregators serve and the
// test checks against.
type truth struct {
	parts  *ring.Partitioner
	mu     sync.Mutex
	clicks []click
	wm     []int64 // watermark per partition, Unix ms
	// revs is per partition the revision of each minute: the clicks added
	// after the partition's watermark had passed its end, as the tally
	// counts them.
	revs []map[int64]int64
	// probes counts the one-ad TopAds calls, with which the publisher
	// starts every poll.
	probes atomic.Int64
	// countCalls counts the Count calls.
	countCalls atomic.Int64
}

var (
	countries = []string{"US", "DE", "FR", "JP"}
	ips       = []string{"10.0.0.1", "10.0.0.2", "192.168.7.9", "2001:db8::1", "2001:db8::2"}
)

// newTruth generates n random clicks over ads ads and minutes minutes from
// base. Few ads and small per-minute counts make ties common.
func newTruth(parts *ring.Partitioner, seed uint64, n, ads, minutes int) *truth {
	rng := testsupport.NewRand(seed)
	tr := &truth{parts: parts, wm: make([]int64, parts.Partitions()), revs: make([]map[int64]int64, parts.Partitions())}
	for p := range tr.revs {
		tr.revs[p] = map[int64]int64{}
	}
	for range n {
		tr.add(click{
			ad:      fmt.Sprintf("ad-%03d", rng.IntN(ads)),
			minute:  base + int64(rng.IntN(minutes)),
			country: countries[rng.IntN(len(countries))],
			ip:      ips[rng.IntN(len(ips))],
			userID:  fmt.Sprintf("u%d", rng.IntN(20)),
		})
	}
	return tr
}

func (tr *truth) add(cs ...click) {
	for i := range cs {
		cs[i].partition = tr.parts.Partition(cs[i].ad)
	}
	tr.addIn(cs...)
}

// addIn adds clicks with their partition set, as the routers put a split
// ad's clicks in other partitions than its own.
func (tr *truth) addIn(cs ...click) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.clicks = append(tr.clicks, cs...)
	for _, c := range cs {
		if tr.wm[c.partition] >= (c.minute+1)*minuteMs {
			tr.revs[c.partition][c.minute]++
		}
	}
}

func (tr *truth) setWatermark(p int, ms int64) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.wm[p] = ms
}

func (tr *truth) setAllWatermarks(ms int64) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for p := range tr.wm {
		tr.wm[p] = ms
	}
}

// counts sums the clicks in [from, to) that match f, of the partitions for
// which keep returns true.
func (tr *truth) counts(from, to int64, f Filter, keep func(p int) bool) map[string]int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string]int64{}
	for _, c := range tr.clicks {
		if c.minute >= from && c.minute < to && c.matches(f) && keep(c.partition) {
			out[c.ad]++
		}
	}
	return out
}

func (tr *truth) count(ad string, from, to int64, f Filter) int64 {
	return tr.countIn(func(int) bool { return true }, ad, from, to, f)
}

// countIn counts ad's clicks in the partitions for which keep returns
// true.
func (tr *truth) countIn(keep func(p int) bool, ad string, from, to int64, f Filter) int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var n int64
	for _, c := range tr.clicks {
		if c.ad == ad && c.minute >= from && c.minute < to && c.matches(f) && keep(c.partition) {
			n++
		}
	}
	return n
}

// top ranks the brute-force counts of all partitions: count descending,
// then ad_id ascending.
func (tr *truth) top(from, to int64, n int, f Filter) []AdCount {
	return rank(tr.counts(from, to, f, func(int) bool { return true }), n)
}

func rank(counts map[string]int64, n int) []AdCount {
	all := make([]AdCount, 0, len(counts))
	for ad, c := range counts {
		all = append(all, AdCount{AdID: ad, Count: c})
	}
	slices.SortFunc(all, func(a, b AdCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.AdID, b.AdID))
	})
	return all[:min(n, len(all))]
}

// fakeAgg is a test implementation of the internal AggregatorService over
// the truth: it answers exactly for the partitions it owns and UNAVAILABLE
// for the others, as a real aggregator does, split ads included.
type fakeAgg struct {
	clickaggv1.UnimplementedAggregatorServiceServer
	id    string
	addr  string
	tr    *truth
	srv   *grpc.Server
	mu    sync.Mutex
	owned map[int]bool
	// gate, when set, holds every Count call until it is closed; entered
	// receives a value when a call arrives.
	gate    chan struct{}
	entered chan struct{}
}

func (a *fakeAgg) setOwned(ps []int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.owned = map[int]bool{}
	for _, p := range ps {
		a.owned[p] = true
	}
}

func (a *fakeAgg) serves(p int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.owned[p]
}

func (a *fakeAgg) Count(ctx context.Context, req *clickaggv1.CountRequest) (*clickaggv1.CountResponse, error) {
	a.mu.Lock()
	gate, entered := a.gate, a.entered
	a.mu.Unlock()
	if gate != nil {
		entered <- struct{}{}
		<-gate
	}
	p := int(req.GetPartition())
	if !a.serves(p) {
		return nil, status.Errorf(codes.Unavailable, "%s does not serve partition %d", a.id, p)
	}
	a.tr.countCalls.Add(1)
	f := Filter{Country: req.GetFilter().GetCountry(), IP: req.GetFilter().GetIp(), UserID: req.GetFilter().GetUserId()}
	n := a.tr.countIn(func(q int) bool { return q == p }, req.GetAdId(), req.GetFromMinute(), req.GetToMinute(), f)
	a.tr.mu.Lock()
	wm := a.tr.wm[p]
	a.tr.mu.Unlock()
	return &clickaggv1.CountResponse{Count: n, WatermarkMs: wm}, nil
}

func (a *fakeAgg) TopAds(ctx context.Context, req *clickaggv1.TopAdsRequest) (*clickaggv1.TopAdsResponse, error) {
	if req.GetCount() == 1 {
		a.tr.probes.Add(1)
	}
	want := map[int]bool{}
	for _, p := range req.GetPartitions() {
		if !a.serves(int(p)) {
			return nil, status.Errorf(codes.Unavailable, "%s does not serve partition %d", a.id, p)
		}
		want[int(p)] = true
	}
	f := Filter{Country: req.GetFilter().GetCountry(), IP: req.GetFilter().GetIp(), UserID: req.GetFilter().GetUserId()}
	counts := a.tr.counts(req.GetFromMinute(), req.GetToMinute(), f, func(p int) bool { return want[p] })
	resp := &clickaggv1.TopAdsResponse{}
	for _, ad := range slices.Sorted(slices.Values(req.GetSplitAds())) {
		if n := counts[ad]; n != 0 {
			resp.SplitCounts = append(resp.SplitCounts, &clickaggv1.AdCount{AdId: ad, Count: n})
		}
		delete(counts, ad)
	}
	for _, ac := range rank(counts, int(req.GetCount())) {
		resp.Ads = append(resp.Ads, &clickaggv1.AdCount{AdId: ac.AdID, Count: ac.Count})
	}
	a.tr.mu.Lock()
	for i, p := range req.GetPartitions() {
		if i == 0 || a.tr.wm[p] < resp.MinWatermarkMs {
			resp.MinWatermarkMs = a.tr.wm[p]
		}
	}
	a.tr.mu.Unlock()
	return resp, nil
}

func (a *fakeAgg) MinuteRevisions(ctx context.Context, req *clickaggv1.MinuteRevisionsRequest) (*clickaggv1.MinuteRevisionsResponse, error) {
	for _, p := range req.GetPartitions() {
		if !a.serves(int(p)) {
			return nil, status.Errorf(codes.Unavailable, "%s does not serve partition %d", a.id, p)
		}
	}
	a.tr.mu.Lock()
	defer a.tr.mu.Unlock()
	sums := map[int64]int64{}
	resp := &clickaggv1.MinuteRevisionsResponse{}
	for i, p := range req.GetPartitions() {
		if i == 0 || a.tr.wm[p] < resp.MinWatermarkMs {
			resp.MinWatermarkMs = a.tr.wm[p]
		}
		for m, r := range a.tr.revs[p] {
			if m >= req.GetFromMinute() && m < req.GetToMinute() {
				sums[m] += r
			}
		}
	}
	for _, m := range slices.Sorted(maps.Keys(sums)) {
		resp.Minutes = append(resp.Minutes, &clickaggv1.MinuteRevision{Minute: m, Revision: sums[m]})
	}
	return resp, nil
}

// env is a cluster for queryd: an embedded etcd with an assignment and
// registered aggregators, three fake aggregators, a redis-server, and a
// Queryd with its gRPC server.
type env struct {
	t       *testing.T
	ctx     context.Context
	cl      *cluster.Client
	lead    *cluster.Leadership
	parts   *ring.Partitioner
	tr      *truth
	aggs    []*fakeAgg
	regs    map[string]*cluster.Registration
	owners  []cluster.Owner
	version uint64
	rdb     redis.UniversalClient
	redis   *localserver.Redis // the redis-server of newEnv, nil with newEnvOn
	cfg     Config
	q       *Queryd
	qc      clickaggv1.QueryServiceClient
	stop    func() // stops q's Run and waits for it
	dial    func(string) (clickaggv1.AggregatorServiceClient, error)
	opts    []Option
}

// newQueryd returns another Queryd on e's cluster and Redis.
func (e *env) newQueryd() *Queryd {
	return New(e.cfg, e.parts, e.cl, toplist.New(e.rdb, "clickagg"), e.dial, testLogger(e.t), testNow, e.opts...)
}

const partitions = 12

func testConfig() Config {
	return Config{
		MaxCount:         1000,
		DefaultCount:     100,
		MaxWindow:        24 * time.Hour,
		CallTimeout:      5 * time.Second,
		PollInterval:     20 * time.Millisecond,
		PublishCount:     100,
		RepublishMinutes: 10,
		RepublishHorizon: defaultRepublishHorizon,
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// newEnv starts everything but q's Run, with a redis-server of its own;
// call start. Every Queryd of the env gets opts.
func newEnv(t *testing.T, tr *truth, cfg Config, opts ...Option) *env {
	t.Helper()
	r := testserver.Redis(t)
	rdb := redis.NewClient(testserver.RedisOptions(r))
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEnvOn(t, tr, cfg, rdb, opts...)
	e.redis = r
	return e
}

// newEnvOn is newEnv on rdb.
func newEnvOn(t *testing.T, tr *truth, cfg Config, rdb redis.UniversalClient, opts ...Option) *env {
	t.Helper()
	ctx := ctxT(t)
	e := &env{t: t, ctx: ctx, tr: tr, parts: tr.parts, cfg: cfg, regs: map[string]*cluster.Registration{}, opts: opts}
	e.cl = cluster.NewClient(testserver.EtcdClient(t), "/queryd-test")
	e.rdb = rdb

	var ids []string
	for i := range 3 {
		a := &fakeAgg{id: fmt.Sprintf("agg-%d", i), tr: tr}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a.addr = lis.Addr().String()
		a.srv = grpc.NewServer()
		clickaggv1.RegisterAggregatorServiceServer(a.srv, a)
		done := make(chan struct{})
		go func() { defer close(done); _ = a.srv.Serve(lis) }()
		t.Cleanup(func() { a.srv.Stop(); <-done })
		e.aggs = append(e.aggs, a)
		ids = append(ids, a.id)

		reg, err := e.cl.Register(ctx, cluster.Member{ID: a.id, Role: cluster.RoleAggregator, Addr: a.addr}, 10*time.Second)
		if err != nil {
			t.Fatalf("register %s: %v", a.id, err)
		}
		t.Cleanup(func() { _ = reg.Close(context.Background()) })
		e.regs[a.id] = reg
	}
	lead, err := e.cl.Campaign(ctx, "test-coordinator", 10*time.Second)
	if err != nil {
		t.Fatalf("campaign: %v", err)
	}
	t.Cleanup(func() { _ = lead.Resign(context.Background()) })
	e.lead = lead

	owners, err := ring.Assign(ids, partitions, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.owners = make([]cluster.Owner, partitions)
	for p, id := range owners {
		e.owners[p] = cluster.Owner{Member: id, Incarnation: e.regs[id].Member().Incarnation, Epoch: 1}
	}
	for _, a := range e.aggs {
		a.setOwned(e.partitionsOf(a.id))
	}
	e.writeAssignment()

	var connMu sync.Mutex
	var conns []*grpc.ClientConn
	t.Cleanup(func() {
		connMu.Lock()
		defer connMu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	dial := func(addr string) (clickaggv1.AggregatorServiceClient, error) {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		connMu.Lock()
		conns = append(conns, c)
		connMu.Unlock()
		return clickaggv1.NewAggregatorServiceClient(c), nil
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	e.dial = dial
	e.q = e.newQueryd()
	e.qc = serveQuery(t, NewServer(e.q))
	return e
}

// serveQuery serves srv on a loopback port and returns a client to it.
func serveQuery(t *testing.T, srv clickaggv1.QueryServiceServer) clickaggv1.QueryServiceClient {
	t.Helper()
	conn := testserver.ServeGRPC(t, testserver.Listen(t), func(gs *grpc.Server) {
		clickaggv1.RegisterQueryServiceServer(gs, srv)
	})
	return clickaggv1.NewQueryServiceClient(conn)
}

func (e *env) partitionsOf(id string) []int {
	var ps []int
	for p, o := range e.owners {
		if o.Member == id {
			ps = append(ps, p)
		}
	}
	return ps
}

// writeAssignment writes e.owners as the next assignment version and waits
// until q (if running) routes by it.
func (e *env) writeAssignment() {
	e.t.Helper()
	e.version++
	if err := e.lead.Commit(e.ctx, cluster.Update{Assignment: &cluster.Assignment{Version: e.version, Owners: slices.Clone(e.owners)}}); err != nil {
		e.t.Fatalf("write assignment: %v", err)
	}
	if e.q != nil {
		e.waitRoutes()
	}
}

// waitRoutes waits until q's directory matches e.owners and the registered
// members.
func (e *env) waitRoutes() {
	e.t.Helper()
	testserver.Eventually(e.t, 20*time.Second, func() error {
		d := e.q.dir.Load()
		for p, o := range e.owners {
			r := d.route(p)
			if r.member != o.Member {
				return fmt.Errorf("partition %d routed to %q, want %q", p, r.member, o.Member)
			}
			if o.Member == "" {
				continue
			}
			if _, live := e.regs[o.Member]; live && r.addr == "" {
				return fmt.Errorf("partition %d: no address yet (%s)", p, r.why)
			}
		}
		return nil
	})
}

// start runs q until the test ends (or stop is called) and waits until it
// routes every partition.
func (e *env) start() {
	e.t.Helper()
	e.stop = runQueryd(e.t, e.q)
	e.waitRoutes()
}

func runQueryd(t *testing.T, q *Queryd) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// agg returns the fake that owns partition p.
func (e *env) agg(p int) *fakeAgg {
	for _, a := range e.aggs {
		if a.id == e.owners[p].Member {
			return a
		}
	}
	e.t.Fatalf("partition %d has no owner", p)
	return nil
}

// adIn returns some ad of the truth in partition p.
func (e *env) adIn(p int) string {
	for i := range 1000 {
		ad := fmt.Sprintf("ad-%03d", i)
		if e.parts.Partition(ad) == p {
			return ad
		}
	}
	e.t.Fatalf("no ad in partition %d", p)
	return ""
}
