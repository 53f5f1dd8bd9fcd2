package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
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
	"github.com/clickagg/clickagg/testsupport"
)

// This file is a whole cluster in one test process: the real etcd of env,
// a real redis-server, real aggregators (aggregator.Aggregator with their
// gRPC servers), real coordinators with their gRPC servers, and the test
// acting as router. Network proxies can freeze a process's connections to
// etcd or Redis, which is what a paused (SIGSTOPped) process looks like
// from outside.

const redisPrefix = "clickagg"

type world struct {
	*env
	parts int
	part  *ring.Partitioner
	redis string // address
	// redisPassword is the password of the world's Redis, reached
	// directly or through a proxy.
	redisPassword string
	rdb           *redis.Client
	plog          *partlog.Log
	// aggCfg is the configuration new aggregators start with.
	aggCfg aggregator.Config
}

func newWorld(t *testing.T, parts int) *world {
	e := newEnv(t)
	r := testserver.Redis(t)
	rdb := redis.NewClient(testserver.RedisOptions(r))
	t.Cleanup(func() { _ = rdb.Close() })
	part, err := ring.NewPartitioner(parts)
	if err != nil {
		t.Fatal(err)
	}
	return &world{
		env:           e,
		parts:         parts,
		part:          part,
		redis:         r.Addr,
		redisPassword: r.Password,
		rdb:           rdb,
		plog:          partlog.New(rdb, redisPrefix),
		aggCfg: aggregator.Config{
			SnapshotInterval: 200 * time.Millisecond,
			ReadCount:        64,
			ReadBlock:        20 * time.Millisecond,
			AllowedLateness:  10 * time.Second,
			DedupHorizon:     aggregator.DefaultDedupHorizon,
			Retention:        aggregator.DefaultRetention,
			RawRetention:     aggregator.DefaultRawRetention,
			ReleaseTimeout:   aggregator.DefaultReleaseTimeout,
			LeaveTimeout:     10 * time.Second,
		},
	}
}

// aggNode is one running aggregator.
type aggNode struct {
	t      *testing.T
	id     string
	a      *aggregator.Aggregator
	addr   string
	client clickaggv1.AggregatorServiceClient
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// aggOpts says how an aggregator reaches etcd and Redis, and its clock.
type aggOpts struct {
	etcd  string // endpoint; "" = the world's
	redis string // address; "" = the world's
	now   func() time.Time
}

func (w *world) startAggregator(id string, o aggOpts) *aggNode {
	t := w.t
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	etcd := w.etcd()
	if o.etcd != "" {
		etcd = testserver.NewEtcdClient(t, o.etcd)
	}
	raddr := cmp.Or(o.redis, w.redis)
	// No read timeout: through a frozen proxy a command waits, as it would
	// in a paused process, instead of failing.
	rdb := redis.NewClient(&redis.Options{Addr: raddr, Password: w.redisPassword, ReadTimeout: -1, WriteTimeout: -1})
	lg := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("aggregator", id)
	now := o.now
	if now == nil {
		now = time.Now
	}
	a := aggregator.New(w.aggCfg, aggregator.Self{ID: id, Addr: addr, LeaseTTL: ttl}, partlog.New(rdb, redisPrefix), snapshot.New(rdb, redisPrefix), cluster.NewClient(etcd, "/t"), lg, now)
	gs := grpc.NewServer()
	clickaggv1.RegisterAggregatorServiceServer(gs, aggregator.NewServer(a))
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &aggNode{t: t, id: id, a: a, addr: addr, client: clickaggv1.NewAggregatorServiceClient(conn), cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		n.stop()
		gs.Stop()
		<-served
		_ = conn.Close()
		_ = rdb.Close()
	})
	return n
}

// stop cancels Run and waits for it to return.
func (n *aggNode) stop() {
	n.once.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				n.t.Errorf("aggregator %s: Run = %v", n.id, err)
			}
		case <-time.After(wait):
			n.t.Errorf("aggregator %s: Run did not return within %v", n.id, wait)
		}
	})
}

// shutdown is what the process does on SIGTERM: leave (hand the partitions
// over), then stop.
func (n *aggNode) shutdown() {
	n.t.Helper()
	if err := n.a.Leave(ctxT(n.t)); err != nil {
		n.t.Errorf("aggregator %s: Leave = %v", n.id, err)
	}
	n.stop()
}

// coordNode is one running coordinator with its gRPC server.
type coordNode struct {
	c      *Coordinator
	addr   string
	client clickaggv1.CoordinatorServiceClient
	stop   func() error
}

// startCoordinator runs a coordinator with its admin API on loopback.
func (w *world) startCoordinator(id string, etcdEndpoint string, sessionTTL time.Duration) *coordNode {
	t := w.t
	t.Helper()
	lis := testserver.Listen(t)
	etcd := w.etcd()
	if etcdEndpoint != "" {
		etcd = testserver.NewEtcdClient(t, etcdEndpoint)
	}
	addr := lis.Addr().String()
	cfg := Config{Load: ring.DefaultLoad, SessionTTL: sessionTTL, StatusTimeout: 2 * time.Second, ReleaseTimeout: 10 * time.Second, JoinDelay: 500 * time.Millisecond}
	c := New(cfg, cluster.Candidate{ID: id, Addr: addr}, cluster.NewClient(etcd, "/t"), w.parts, w.dial, coordLogger(t, id))
	client := serveCoordinator(t, lis, c)
	return &coordNode{c: c, addr: addr, client: client, stop: runCoordinator(t, id, c)}
}

// assignment returns the stored assignment.
func (w *world) assignment() cluster.Assignment {
	w.t.Helper()
	a, err := w.cl.Assignment(ctxT(w.t))
	if err != nil {
		w.t.Fatal(err)
	}
	return a
}

// waitOwners waits until the assignment gives every partition to one of
// ids (exactly these members own something when exact is set) and returns
// it.
func (w *world) waitOwners(exact bool, ids ...string) cluster.Assignment {
	w.t.Helper()
	var a cluster.Assignment
	testserver.Eventually(w.t, wait, func() error {
		var err error
		if a, err = w.cl.Assignment(ctxT(w.t)); err != nil {
			return err
		}
		if len(a.Owners) != w.parts {
			return fmt.Errorf("assignment version %d has %d owners", a.Version, len(a.Owners))
		}
		owning := map[string]bool{}
		for p, o := range a.Owners {
			if !slices.Contains(ids, o.Member) {
				return fmt.Errorf("partition %d owned by %q, want one of %v", p, o.Member, ids)
			}
			owning[o.Member] = true
		}
		if exact && len(owning) != len(ids) {
			return fmt.Errorf("owners %v, want all of %v", slices.Sorted(maps.Keys(owning)), ids)
		}
		return nil
	})
	return a
}

// waitRing waits until the assignment places every partition as the ring
// over ids does: a plan carried out in waves is complete.
func (w *world) waitRing(ids ...string) cluster.Assignment {
	w.t.Helper()
	want, err := ring.Assign(ids, w.parts, ring.DefaultLoad)
	if err != nil {
		w.t.Fatal(err)
	}
	var a cluster.Assignment
	testserver.Eventually(w.t, wait, func() error {
		var err error
		if a, err = w.cl.Assignment(ctxT(w.t)); err != nil {
			return err
		}
		for p, id := range want {
			if p >= len(a.Owners) || a.Owners[p].Member != id {
				return fmt.Errorf("assignment version %d does not place as the ring yet: %v", a.Version, counts(a))
			}
		}
		return nil
	})
	return a
}

// counts returns how many partitions each member owns in a.
func counts(a cluster.Assignment) map[string]int {
	out := map[string]int{}
	for _, o := range a.Owners {
		out[o.Member]++
	}
	return out
}

// router appends click batches to the partition logs the way routers do,
// until stopped, and keeps the ground truth: every distinct event, and the
// last entry ID of each partition. A tenth of the events are retries of
// earlier ones, sent again in later batches.
type router struct {
	w    *world
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	events map[string]*clickaggv1.LogEvent
	ids    []string // event IDs sent, for retries
	last   map[int]string
	sent   int // events appended, retries included
	err    error
	rng    *rand.Rand
	base   int64 // first Unix minute of the clicks
}

const (
	routerAds     = 40
	routerMinutes = 6
)

func (w *world) startRouter() *router {
	r := &router{
		w:      w,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		events: map[string]*clickaggv1.LogEvent{},
		last:   map[int]string{},
		rng:    testsupport.NewRand(1),
		base:   time.Now().Add(-2*time.Hour).Unix() / 60,
	}
	go r.run()
	w.t.Cleanup(r.halt)
	return r
}

func (r *router) rnd(n int) int { return r.rng.IntN(n) }

func (r *router) run() {
	defer close(r.done)
	next := 0
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		var evs []*clickaggv1.LogEvent
		r.mu.Lock()
		for range 40 {
			if len(r.ids) > 0 && r.rnd(10) == 0 {
				evs = append(evs, proto.Clone(r.events[r.ids[r.rnd(len(r.ids))]]).(*clickaggv1.LogEvent))
				continue
			}
			next++
			x := r.rnd(routerAds)
			minute := r.base + int64(r.rnd(routerMinutes))
			evs = append(evs, &clickaggv1.LogEvent{
				EventId:     "ev-" + strconv.Itoa(next),
				AdId:        "ad-" + strconv.Itoa(x*x/routerAds), // skewed
				ClickTimeMs: minute*60_000 + int64(r.rnd(60_000)),
				UserId:      "user-" + strconv.Itoa(r.rnd(5)),
				Country:     []string{"US", "DE", "FR"}[r.rnd(3)],
				Ip:          "10.0.0." + strconv.Itoa(r.rnd(4)),
			})
		}
		r.mu.Unlock()
		if err := r.send(evs); err != nil {
			r.mu.Lock()
			r.err = err
			r.mu.Unlock()
			return
		}
		time.Sleep(5 * time.Millisecond) // a steady trickle, not a flood
	}
}

// send appends evs, one entry per partition, and records them once Redis
// acknowledged: like a router, which acknowledges only then.
func (r *router) send(evs []*clickaggv1.LogEvent) error {
	by := map[int][]*clickaggv1.LogEvent{}
	for _, ev := range evs {
		p := r.w.part.Partition(ev.GetAdId())
		by[p] = append(by[p], ev)
	}
	var items []partlog.Append
	for _, p := range slices.Sorted(maps.Keys(by)) {
		b, err := proto.Marshal(&clickaggv1.LogEntry{RouterId: "test-router", Events: by[p]})
		if err != nil {
			return err
		}
		items = append(items, partlog.Append{Partition: p, Data: b})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ids, err := r.w.plog.Append(ctx, items)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, it := range items {
		r.last[it.Partition] = ids[i]
	}
	for _, ev := range evs {
		if _, ok := r.events[ev.GetEventId()]; !ok {
			r.events[ev.GetEventId()] = ev
			r.ids = append(r.ids, ev.GetEventId())
		}
		r.sent++
	}
	return nil
}

// halt stops the router and fails the test if an append failed.
func (r *router) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
	if r.err != nil {
		r.w.t.Errorf("router: %v", r.err)
	}
}

// waitSent waits until at least n more events were appended.
func (r *router) waitSent(n int) {
	r.w.t.Helper()
	r.mu.Lock()
	target := r.sent + n
	r.mu.Unlock()
	testserver.Eventually(r.w.t, wait, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.err != nil {
			return r.err
		}
		if r.sent < target {
			return fmt.Errorf("%d events sent, waiting for %d", r.sent, target)
		}
		return nil
	})
}

// waitSettled waits until every partition is served by its assigned owner
// at its epoch.
func (w *world) waitSettled() cluster.Assignment {
	w.t.Helper()
	var a cluster.Assignment
	testserver.Eventually(w.t, wait, func() error {
		var err error
		a, err = w.served(nil)
		return err
	})
	return a
}

// served checks that every partition is served by its assigned owner at
// its epoch, and at the offset in last when given, with no lag.
func (w *world) served(last map[int]string) (cluster.Assignment, error) {
	t := w.t
	a, err := w.cl.Assignment(ctxT(t))
	if err != nil {
		return a, err
	}
	if len(a.Owners) != w.parts {
		return a, fmt.Errorf("assignment version %d has %d owners", a.Version, len(a.Owners))
	}
	ms, err := w.cl.Members(ctxT(t), cluster.RoleAggregator)
	if err != nil {
		return a, err
	}
	addr := map[string]string{}
	for _, m := range ms {
		addr[m.ID] = m.Addr
	}
	reports := map[string]map[int]*clickaggv1.PartitionStatus{}
	for p, o := range a.Owners {
		if addr[o.Member] == "" {
			return a, fmt.Errorf("partition %d: owner %q is not registered", p, o.Member)
		}
		if reports[o.Member] == nil {
			st, err := w.aggClient(addr[o.Member]).PartitionStatus(ctxT(t), &clickaggv1.PartitionStatusRequest{})
			if err != nil {
				return a, err
			}
			reports[o.Member] = map[int]*clickaggv1.PartitionStatus{}
			for _, x := range st.GetPartitions() {
				reports[o.Member][int(x.GetPartition())] = x
			}
		}
		s := reports[o.Member][p]
		switch {
		case s == nil:
			return a, fmt.Errorf("partition %d: not held by its owner %s", p, o.Member)
		case s.GetEpoch() != o.Epoch || s.GetState() != "serving":
			return a, fmt.Errorf("partition %d on %s: epoch %d %s; want epoch %d serving", p, o.Member, s.GetEpoch(), s.GetState(), o.Epoch)
		case last != nil && (s.GetLag() != 0 || s.GetOffset() != cmp.Or(last[p], s.GetOffset())):
			return a, fmt.Errorf("partition %d on %s: offset %s lag %d; want %s", p, o.Member, s.GetOffset(), s.GetLag(), last[p])
		}
	}
	return a, nil
}

// checkExact stops the router, waits until every partition is served by
// its assigned owner at the last entry appended, and compares every
// (ad, minute) count and every owner's top ads with the ground truth.
func (w *world) checkExact(r *router) {
	t := w.t
	t.Helper()
	r.halt()
	var a cluster.Assignment
	testserver.Eventually(t, wait, func() error {
		var err error
		a, err = w.served(r.last)
		return err
	})
	ms, err := w.cl.Members(ctxT(t), cluster.RoleAggregator)
	if err != nil {
		t.Fatal(err)
	}
	addr := map[string]string{}
	for _, m := range ms {
		addr[m.ID] = m.Addr
	}

	type key struct {
		ad     string
		minute int64
	}
	truth := map[key]int64{}
	for _, ev := range r.events {
		truth[key{ev.GetAdId(), ev.GetClickTimeMs() / 60_000}]++
	}
	checked := 0
	for x := range routerAds {
		ad := "ad-" + strconv.Itoa(x)
		p := w.part.Partition(ad)
		cl := w.aggClient(addr[a.Owners[p].Member])
		for m := r.base; m < r.base+routerMinutes; m++ {
			resp, err := cl.Count(ctxT(t), &clickaggv1.CountRequest{Partition: int32(p), AdId: ad, FromMinute: m, ToMinute: m + 1})
			if err != nil {
				t.Fatalf("count %s minute %d: %v", ad, m, err)
			}
			if want := truth[key{ad, m}]; resp.GetCount() != want {
				t.Errorf("count %s minute %d = %d, want %d", ad, m, resp.GetCount(), want)
			}
			checked++
		}
	}
	// Each owner's top ads over all of its partitions.
	byOwner := map[string][]int32{}
	for p, o := range a.Owners {
		byOwner[o.Member] = append(byOwner[o.Member], int32(p))
	}
	for id, ps := range byOwner {
		resp, err := w.aggClient(addr[id]).TopAds(ctxT(t), &clickaggv1.TopAdsRequest{Partitions: ps, FromMinute: r.base, ToMinute: r.base + routerMinutes, Count: 5})
		if err != nil {
			t.Fatalf("top of %s: %v", id, err)
		}
		sums := map[string]int64{}
		for _, ev := range r.events {
			if slices.Contains(ps, int32(w.part.Partition(ev.GetAdId()))) {
				sums[ev.GetAdId()]++
			}
		}
		ads := slices.Collect(maps.Keys(sums))
		slices.SortFunc(ads, func(x, y string) int { return cmp.Or(cmp.Compare(sums[y], sums[x]), cmp.Compare(x, y)) })
		ads = ads[:min(5, len(ads))]
		var got []string
		for _, ac := range resp.GetAds() {
			got = append(got, ac.GetAdId())
			if ac.GetCount() != sums[ac.GetAdId()] {
				t.Errorf("top of %s: %s counted %d, want %d", id, ac.GetAdId(), ac.GetCount(), sums[ac.GetAdId()])
			}
		}
		if !slices.Equal(got, ads) {
			t.Errorf("top of %s = %v, want %v", id, got, ads)
		}
	}
	if checked == 0 || len(r.events) == 0 || r.sent == len(r.events) {
		t.Fatalf("checked %d counts over %d events (%d sent): the test needs counts, events and retries", checked, len(r.events), r.sent)
	}
	t.Logf("exact: %d distinct events (%d sent) over %d partitions", len(r.events), r.sent, w.parts)
}

func (w *world) aggClient(addr string) clickaggv1.AggregatorServiceClient {
	w.t.Helper()
	cc, err := w.dial(addr)
	if err != nil {
		w.t.Fatal(err)
	}
	return clickaggv1.NewAggregatorServiceClient(cc)
}

// handoffs returns the handoffs recorded after version from, once each has
// its serving time; superseded ones (the partition moved again before its
// new owner served it) are left out: they never get one.
func (w *world) handoffs(from uint64) []cluster.Handoff {
	w.t.Helper()
	var out []cluster.Handoff
	testserver.Eventually(w.t, wait, func() error {
		hs, err := w.cl.Handoffs(ctxT(w.t))
		if err != nil {
			return err
		}
		latest := map[int]uint64{}
		for _, h := range hs {
			latest[h.Partition] = max(latest[h.Partition], h.Epoch)
		}
		out = out[:0]
		for _, h := range hs {
			if h.Epoch <= from {
				continue
			}
			if h.Serving.IsZero() {
				if h.Epoch < latest[h.Partition] {
					continue
				}
				return fmt.Errorf("handoff of partition %d at epoch %d has no serving time yet", h.Partition, h.Epoch)
			}
			out = append(out, h)
		}
		return nil
	})
	return out
}

// etcdProxy returns a proxy to the world's etcd and its client endpoint.
func (w *world) etcdProxy() (*testserver.Proxy, string) {
	w.t.Helper()
	u, err := url.Parse(w.endpoint)
	if err != nil {
		w.t.Fatal(err)
	}
	p := testserver.NewProxy(w.t, u.Host)
	return p, "http://" + p.Addr()
}

// leaderLease returns the lease of the current leader's election key.
func (w *world) leaderLease() clientv3.LeaseID {
	w.t.Helper()
	resp, err := w.etcd().Get(ctxT(w.t), "/t/leader/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) != 1 {
		w.t.Fatalf("leader key: %v, %v", resp, err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}
