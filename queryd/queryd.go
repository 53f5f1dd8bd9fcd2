package queryd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/topn"
)

var (
	// ErrInvalid wraps every refusal of a malformed or out-of-range request.
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable wraps every failure to reach the owner of a partition;
	// errors.As with *UnavailableError gives the partitions.
	ErrUnavailable = errors.New("partitions unavailable")
	// ErrTooSlow ends a watch whose client fell behind the published minutes.
	ErrTooSlow = errors.New("watcher fell behind")
	// ErrStopped ends a watch when queryd shuts down.
	ErrStopped = errors.New("queryd stopped")
)

// UnavailableError says which partitions could not answer and why.
type UnavailableError struct {
	Partitions []int // sorted
	Reason     string
}

func (e *UnavailableError) Error() string {
	if len(e.Partitions) == 1 {
		return fmt.Sprintf("partition %d unavailable: %s", e.Partitions[0], e.Reason)
	}
	return fmt.Sprintf("partitions %v unavailable: %s", e.Partitions, e.Reason)
}

// Is makes errors.Is(err, ErrUnavailable) hold.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Filter restricts a query to clicks whose fields equal the set ones, in
// canonical form (see canonicalFilter).
type Filter struct {
	Country, IP, UserID string
}

func (f Filter) proto() *clickaggv1.Filter {
	if f == (Filter{}) {
		return nil
	}
	return &clickaggv1.Filter{Country: f.Country, Ip: f.IP, UserId: f.UserID}
}

// AdCount is the number of clicks of one ad.
type AdCount = topn.AdCount

// CountResult is one ad's clicks over [From, To), Unix minutes.
type CountResult struct {
	AdID     string
	Count    int64
	From, To int64
	// Complete is true when the partition's watermark has passed To.
	Complete bool
}

// TopResult is the top ads over [From, To), Unix minutes.
type TopResult struct {
	Ads      []AdCount
	From, To int64
	// Complete is true when every partition's watermark has passed To.
	Complete bool
}

// fanOutLimit bounds the concurrent calls of one fan-out.
const fanOutLimit = 16

// Queryd answers count and top queries by fanning out to the partitions'
// owners, and publishes each completed minute's top list.
type Queryd struct {
	cfg   Config
	parts *ring.Partitioner
	cl    *cluster.Client
	rdb   redis.UniversalClient
	dial  func(addr string) (clickaggv1.AggregatorServiceClient, error)
	lg    *slog.Logger
	now   func() time.Time

	dir atomic.Pointer[directory]

	// mu guards the inputs of the directory and the client cache.
	mu          sync.Mutex
	assignment  cluster.Assignment
	members     map[string]cluster.Member
	gen         uint64
	seenAssign  bool
	seenMembers bool
	isReady     bool
	clients     map[string]clickaggv1.AggregatorServiceClient

	// ready is closed once both the assignment and the members were read.
	ready chan struct{}

	subMu sync.Mutex
	subs  map[*subscriber]struct{}

	// stopped is closed when Run returns, to end the watches.
	stopped  chan struct{}
	stopOnce sync.Once
}

// New returns a Queryd. dial is called once per aggregator address and its
// client is kept for the life of the Queryd; closing the underlying
// connections is the caller's job. now is the clock that defines the
// current minute. New does no I/O.
func New(cfg Config, parts *ring.Partitioner, cl *cluster.Client, rdb redis.UniversalClient, dial func(addr string) (clickaggv1.AggregatorServiceClient, error), lg *slog.Logger, now func() time.Time) *Queryd {
	q := &Queryd{
		cfg:     cfg,
		parts:   parts,
		cl:      cl,
		rdb:     rdb,
		dial:    dial,
		lg:      lg,
		now:     now,
		members: map[string]cluster.Member{},
		clients: map[string]clickaggv1.AggregatorServiceClient{},
		subs:    map[*subscriber]struct{}{},
		stopped: make(chan struct{}),
		ready:   make(chan struct{}),
	}
	q.dir.Store(&directory{})
	return q
}

// Run follows the assignment and the aggregators in etcd and publishes the
// completed minutes until ctx ends. It returns nil when ctx ends, and the
// error of an etcd watch that gave up otherwise. Run is called once.
//
// Shutdown order: ctx ends → the etcd watches and the publisher stop (a poll
// in progress is abandoned; its minutes are published by the next run, which
// compares with Redis) → every WatchPopularAds stream ends with UNAVAILABLE
// → Run returns. Queries keep being answered from the last directory.
func (q *Queryd) Run(ctx context.Context) error {
	defer q.stopOnce.Do(func() { close(q.stopped) })
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return q.cl.WatchAssignment(gctx, q.setAssignment)
	})
	g.Go(func() error {
		return q.cl.WatchMembers(gctx, cluster.RoleAggregator, q.setMembers)
	})
	g.Go(func() error {
		q.publishLoop(gctx)
		return nil
	})
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// route is how to reach one partition's owner.
type route struct {
	member string
	addr   string
	// why is set when the partition cannot be reached.
	why string
}

// directory is an immutable snapshot of where each partition is served.
type directory struct {
	// gen grows with every change of assignment or members, so a failed
	// call can tell whether retrying could reach someone else.
	gen    uint64
	routes []route // by partition; missing entries have no owner yet
}

func (d *directory) route(p int) route {
	if p >= len(d.routes) {
		return route{why: "no assignment received yet"}
	}
	return d.routes[p]
}

func (q *Queryd) setAssignment(a cluster.Assignment) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n := q.parts.Partitions(); a.Version != 0 && len(a.Owners) != n {
		q.lg.Warn("assignment does not cover the partitions", "version", a.Version, "owners", len(a.Owners), "partitions", n)
	}
	q.assignment = a
	q.seenAssign = true
	q.rebuild()
}

func (q *Queryd) setMembers(ms []cluster.Member) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.members = make(map[string]cluster.Member, len(ms))
	for _, m := range ms {
		q.members[m.ID] = m
	}
	q.seenMembers = true
	q.rebuild()
}

// rebuild publishes a new directory; q.mu is held. An owner is reachable
// only in the incarnation the assignment names: a restarted aggregator with
// the same ID does not serve the partition until the coordinator reassigns
// it, so calling it would only earn UNAVAILABLE.
func (q *Queryd) rebuild() {
	q.gen++
	d := &directory{gen: q.gen, routes: make([]route, q.parts.Partitions())}
	for p := range d.routes {
		r := &d.routes[p]
		switch {
		case q.assignment.Version == 0:
			r.why = "no assignment written yet"
		case p >= len(q.assignment.Owners):
			r.why = fmt.Sprintf("not in assignment version %d", q.assignment.Version)
		case q.assignment.Owners[p].Member == "":
			r.why = "no owner"
		default:
			o := q.assignment.Owners[p]
			r.member = o.Member
			m, ok := q.members[o.Member]
			switch {
			case !ok:
				r.why = fmt.Sprintf("owner %s is not a registered aggregator", o.Member)
			case m.Incarnation != o.Incarnation:
				r.why = fmt.Sprintf("owner %s restarted (incarnation %x, assigned %x) and is not yet reassigned", o.Member, m.Incarnation, o.Incarnation)
			case m.Addr == "":
				r.why = fmt.Sprintf("owner %s has no address", o.Member)
			default:
				r.addr = m.Addr
			}
		}
	}
	q.dir.Store(d)
	q.lg.Debug("directory updated", "version", q.assignment.Version, "members", len(q.members), "gen", d.gen)
	if q.seenAssign && q.seenMembers && !q.isReady {
		q.isReady = true
		close(q.ready)
	}
}

func (q *Queryd) client(addr string) (clickaggv1.AggregatorServiceClient, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if c, ok := q.clients[addr]; ok {
		return c, nil
	}
	c, err := q.dial(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	q.clients[addr] = c
	return c, nil
}

// withRetry runs call against the current directory and, when it fails for
// unavailability and the directory changed meanwhile (a partition moved,
// an owner registered), once more against the new one. A context error of
// the caller wins over unavailability: the caller gave up, nobody failed.
func (q *Queryd) withRetry(ctx context.Context, call func(*directory) error) error {
	d := q.dir.Load()
	err := call(d)
	if err != nil && errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
		if d2 := q.dir.Load(); d2.gen != d.gen {
			err = call(d2)
		}
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Count returns adID's clicks over [from, to) Unix minutes from the owner of
// its partition.
func (q *Queryd) Count(ctx context.Context, adID string, from, to int64, f Filter) (CountResult, error) {
	p := q.parts.Partition(adID)
	req := &clickaggv1.CountRequest{Partition: int32(p), AdId: adID, FromMinute: from, ToMinute: to, Filter: f.proto()}
	var resp *clickaggv1.CountResponse
	err := q.withRetry(ctx, func(d *directory) error {
		r := d.route(p)
		if r.why != "" {
			return &UnavailableError{Partitions: []int{p}, Reason: r.why}
		}
		c, err := q.client(r.addr)
		if err != nil {
			return &UnavailableError{Partitions: []int{p}, Reason: fmt.Sprintf("owner %s: %v", r.member, err)}
		}
		cctx, cancel := context.WithTimeout(ctx, q.cfg.CallTimeout)
		defer cancel()
		resp, err = c.Count(cctx, req)
		if err != nil {
			return &UnavailableError{Partitions: []int{p}, Reason: fmt.Sprintf("owner %s at %s: %v", r.member, r.addr, err)}
		}
		return nil
	})
	if err != nil {
		return CountResult{}, err
	}
	return CountResult{
		AdID:     adID,
		Count:    resp.GetCount(),
		From:     from,
		To:       to,
		Complete: resp.GetWatermarkMs() >= to*minuteMs,
	}, nil
}

const minuteMs = 60_000

// Top returns the exact top n ads over [from, to) Unix minutes across every
// partition, or fails if any partition cannot answer.
func (q *Queryd) Top(ctx context.Context, from, to int64, n int, f Filter) (TopResult, error) {
	ads, wm, err := q.top(ctx, from, to, n, f)
	if err != nil {
		return TopResult{}, err
	}
	return TopResult{Ads: ads, From: from, To: to, Complete: wm >= to*minuteMs}, nil
}

// top returns the top n ads and the smallest watermark of all partitions.
func (q *Queryd) top(ctx context.Context, from, to int64, n int, f Filter) ([]AdCount, int64, error) {
	var (
		ads []AdCount
		wm  int64
	)
	err := q.withRetry(ctx, func(d *directory) error {
		var err error
		ads, wm, err = q.topOnce(ctx, d, from, to, n, f)
		return err
	})
	return ads, wm, err
}

// topOnce asks each owner for the top n of its partitions and merges the
// answers. Every non-split ad lives in exactly one partition, so the lists
// are disjoint and the merge of per-owner exact top n lists is the exact
// global top n.
func (q *Queryd) topOnce(ctx context.Context, d *directory, from, to int64, n int, f Filter) ([]AdCount, int64, error) {
	type group struct {
		route
		parts []int32
	}
	byOwner := map[string]*group{}
	var missing []int
	var reasons []string
	for p := range q.parts.Partitions() {
		r := d.route(p)
		if r.why != "" {
			missing = append(missing, p)
			reasons = append(reasons, fmt.Sprintf("partition %d: %s", p, r.why))
			continue
		}
		g := byOwner[r.member]
		if g == nil {
			g = &group{route: r}
			byOwner[r.member] = g
		}
		g.parts = append(g.parts, int32(p))
	}
	if len(missing) > 0 {
		// Asking the others would only produce an answer we must not give.
		return nil, 0, &UnavailableError{Partitions: missing, Reason: strings.Join(reasons, "; ")}
	}

	groups := make([]*group, 0, len(byOwner))
	for _, g := range byOwner {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b *group) int { return int(a.parts[0] - b.parts[0]) })
	lists := make([][]AdCount, len(groups))
	wms := make([]int64, len(groups))
	errs := make([]error, len(groups))
	var eg errgroup.Group
	eg.SetLimit(fanOutLimit)
	for i, g := range groups {
		eg.Go(func() error {
			lists[i], wms[i], errs[i] = q.callTop(ctx, g.route, g.parts, from, to, n, f)
			return nil
		})
	}
	_ = eg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, p := range groups[i].parts {
				missing = append(missing, int(p))
			}
			reasons = append(reasons, fmt.Sprintf("partitions %v: %v", groups[i].parts, err))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, 0, &UnavailableError{Partitions: missing, Reason: strings.Join(reasons, "; ")}
	}
	return topn.Merge(n, lists...), slices.Min(wms), nil
}

func (q *Queryd) callTop(ctx context.Context, r route, parts []int32, from, to int64, n int, f Filter) ([]AdCount, int64, error) {
	c, err := q.client(r.addr)
	if err != nil {
		return nil, 0, fmt.Errorf("owner %s: %w", r.member, err)
	}
	cctx, cancel := context.WithTimeout(ctx, q.cfg.CallTimeout)
	defer cancel()
	resp, err := c.TopAds(cctx, &clickaggv1.TopAdsRequest{
		Partitions: parts,
		FromMinute: from,
		ToMinute:   to,
		Count:      int32(n),
		Filter:     f.proto(),
	})
	if err != nil {
		return nil, 0, fmt.Errorf("owner %s at %s: %w", r.member, r.addr, err)
	}
	return fromProtoAds(resp.GetAds()), resp.GetMinWatermarkMs(), nil
}
