package queryd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/breakage"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
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
	// HistoryRevision is the revision of the history the count read, 0
	// for the counts the aggregators wrote (or none read).
	HistoryRevision int64
}

// TopResult is the top ads over [From, To), Unix minutes.
type TopResult struct {
	// HistoryRevision is as in CountResult.
	HistoryRevision int64
	Ads             []AdCount
	From, To        int64
	// Complete is true when every partition's watermark has passed To.
	Complete bool
}

// fanOutLimit bounds the concurrent calls of one fan-out.
const fanOutLimit = 16

// Publications is where the publisher stores each complete minute's top
// list and announces it; *toplist.Store (Redis) satisfies it. The lists
// are opaque to it: queryd encodes them (the protojson of a
// GetPopularAdsResponse) and compares what Load returns with what it would
// publish, so that nothing already stored is published twice.
type Publications interface {
	// Publish stores list as minute's list, replacing any earlier one, for
	// ttl (0: for ever), and announces it to listeners, in the order of
	// the calls. After an error the list may be stored but not announced:
	// the caller publishes the minute again even if Load returns it.
	Publish(ctx context.Context, minute int64, list []byte, ttl time.Duration) error
	// Load returns the stored list of each of minutes, in their order, nil
	// for a minute that has none.
	Load(ctx context.Context, minutes []int64) ([][]byte, error)
}

// Splits is queryd's copy of the hot-key split table; *hotkey.Follower
// satisfies it.
type Splits interface {
	// Table returns the table to answer with, or an error when the copy may
	// be stale: missing a split would undercount its ad.
	Table() (*hotkey.Table, error)
}

// Option configures a Queryd beyond its Config.
type Option func(*Queryd)

// WithSplits makes queries add up the partitions of split ads from the
// table of s, and fail with UNAVAILABLE while s fails. Without it, every ad
// is taken to live in its own partition: right only for a cluster that
// never splits (tests).
func WithSplits(s Splits) Option {
	return func(q *Queryd) { q.splits = s }
}

// Cluster is what queryd needs of the cluster state in etcd: it follows
// who owns which partition and which history revisions apply.
// *cluster.Client satisfies it.
type Cluster interface {
	WatchAssignment(ctx context.Context, fn func(cluster.Assignment)) error
	WatchMembers(ctx context.Context, role string, fn func([]cluster.Member)) error
	WatchAppliedRevisions(ctx context.Context, fn func([]byte) error) error
}

// defaultMaxIDLength is the routers' default -router.max-id-length.
const defaultMaxIDLength = 128

// WithMaxIDLength sets the longest ad_id and filter.user_id a query may
// name: the routers' -router.max-id-length, since no longer id was ever
// counted. Without it, or with 0, the routers' default.
func WithMaxIDLength(n int) Option {
	return func(q *Queryd) { q.maxIDLen = n }
}

// maxIDLength is the routers' -router.max-id-length, or their default.
func (q *Queryd) maxIDLength() int { return cmp.Or(q.maxIDLen, defaultMaxIDLength) }

// Queryd answers count and top queries by fanning out to the partitions'
// owners, and publishes each completed minute's top list.
type Queryd struct {
	cfg   Config
	parts *ring.Partitioner
	cl    Cluster
	pubs  Publications
	dial  func(addr string) (clickaggv1.AggregatorServiceClient, error)
	lg    *slog.Logger
	now   func() time.Time
	// splits is nil when queryd has no split table (WithSplits).
	splits Splits
	// maxIDLen is 0 without WithMaxIDLength.
	maxIDLen int

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

	// corr holds the minutes recounts corrected, to publish again.
	corr corrections
	// unannounced holds the minutes whose Publish failed: their list may
	// be stored but not announced (see Publications), so they are
	// published again even when the stored list is the one to publish.
	// Only the publish loop's goroutine touches it.
	unannounced map[int64]bool

	// stopped is closed when Run returns, to end the watches.
	stopped  chan struct{}
	stopOnce sync.Once

	reg prometheus.Registerer // nil without WithMetrics
	m   *metrics
}

// New returns a Queryd that publishes the complete minutes' top lists to
// pubs. dial is called once per aggregator address and its client is kept
// for the life of the Queryd; closing the underlying connections is the
// caller's job. now is the clock that defines the current minute. New does
// no I/O.
func New(cfg Config, parts *ring.Partitioner, cl Cluster, pubs Publications, dial func(addr string) (clickaggv1.AggregatorServiceClient, error), lg *slog.Logger, now func() time.Time, opts ...Option) *Queryd {
	q := &Queryd{
		cfg:         cfg,
		parts:       parts,
		cl:          cl,
		pubs:        pubs,
		dial:        dial,
		lg:          lg,
		now:         now,
		members:     map[string]cluster.Member{},
		clients:     map[string]clickaggv1.AggregatorServiceClient{},
		subs:        map[*subscriber]struct{}{},
		stopped:     make(chan struct{}),
		unannounced: map[int64]bool{},
		ready:       make(chan struct{}),
		m:           newMetrics(),
	}
	for _, o := range opts {
		o(q)
	}
	if q.reg != nil {
		for _, c := range q.m.collectors() {
			if err := q.reg.Register(c); err != nil {
				lg.Warn("register metrics", "err", err)
				break
			}
		}
	}
	q.dir.Store(&directory{})
	return q
}

// table returns the split table to answer with: nil (no splits) without
// WithSplits.
func (q *Queryd) table() (*hotkey.Table, error) {
	if q.splits == nil {
		return nil, nil
	}
	t, err := q.splits.Table()
	if err != nil {
		return nil, fmt.Errorf("%w: split table: %w", ErrUnavailable, err)
	}
	return t, nil
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
	if q.maxIDLen < 0 {
		return fmt.Errorf("queryd: -router.max-id-length %d: must not be negative", q.maxIDLen)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return q.cl.WatchAssignment(gctx, q.setAssignment)
	})
	g.Go(func() error {
		return q.cl.WatchMembers(gctx, cluster.RoleAggregator, q.setMembers)
	})
	g.Go(func() error {
		return q.cl.WatchAppliedRevisions(gctx, q.setApplied)
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

// Routable returns nil once queryd knows whom to ask: it has received the
// assignment and the members. A partition without a serving owner is not
// queryd's fault and fails only the queries that need it (UNAVAILABLE, see
// -queryd.move-wait); taking every queryd out of service for it, as a
// readiness check of every partition would, fails the queries of all the
// other partitions too.
func (q *Queryd) Routable() error {
	if q.dir.Load() == nil {
		return errors.New("no assignment and members received yet")
	}
	return nil
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

// movePause paces withRetry's calls while the directory stays the same.
var movePause = retry.Policy{Min: 20 * time.Millisecond, Max: 250 * time.Millisecond}

// withRetry runs call against the current directory and, while it fails
// for unavailability, again (at once when the directory changed, else after
// a short backoff) until MoveWait has passed: a partition in a live handoff
// has no serving owner for a fraction of a second, and a caller would
// rather wait that out than be told to retry. A context error of the
// caller wins over unavailability: the caller gave up, nobody failed.
func (q *Queryd) withRetry(ctx context.Context, call func(*directory) error) error {
	// Wall clock, not q.now: the wait is real time whatever clock defines
	// minutes.
	deadline := time.Now().Add(q.cfg.MoveWait)
	// Not retry.Do: a new directory is asked at once, and no pause may
	// end past the deadline.
	pause := movePause.Backoff()
	d := q.dir.Load()
	err := call(d)
	for tries := 0; err != nil && errors.Is(err, ErrUnavailable) && ctx.Err() == nil; tries++ {
		d2 := q.dir.Load()
		switch {
		case d2.gen != d.gen && (tries == 0 || time.Now().Before(deadline)):
			// The directory moved on: ask the new owners at once.
		default:
			wait := pause.Next()
			if time.Now().Add(wait).After(deadline) {
				return err
			}
			if err := retry.Sleep(ctx, wait); err != nil {
				return err
			}
			d2 = q.dir.Load()
		}
		d = d2
		err = call(d)
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Count returns adID's clicks over [from, to) Unix minutes from the owner of
// its partition, and, for a split ad, from the owners of every partition
// of every interval overlapping the window, added up: each click lives in
// exactly one of them.
func (q *Queryd) Count(ctx context.Context, adID string, from, to int64, f Filter) (CountResult, error) {
	t, err := q.table()
	if err != nil {
		return CountResult{}, err
	}
	ps := t.Partitions(q.parts, adID, from, to)
	var (
		n, wm, rev int64
	)
	err = q.withRetry(ctx, func(d *directory) error {
		var err error
		n, wm, rev, err = q.countOnce(ctx, d, ps, adID, from, to, f)
		return err
	})
	if err != nil {
		return CountResult{}, err
	}
	return CountResult{
		AdID:            adID,
		Count:           n,
		From:            from,
		To:              to,
		Complete:        wm >= to*minuteMs,
		HistoryRevision: rev,
	}, nil
}

// countOnce sums adID's counts in the partitions ps and returns the
// smallest of their watermarks and the history revision read; any
// partition that cannot answer fails it.
func (q *Queryd) countOnce(ctx context.Context, d *directory, ps []int, adID string, from, to int64, f Filter) (int64, int64, int64, error) {
	counts := make([]int64, len(ps))
	wms := make([]int64, len(ps))
	hist := make([]historyRead, len(ps))
	errs := make([]error, len(ps))
	call := func(i int) {
		p := ps[i]
		r := d.route(p)
		if r.why != "" {
			errs[i] = errors.New(r.why)
			return
		}
		c, err := q.client(r.addr)
		if err != nil {
			errs[i] = fmt.Errorf("owner %s: %w", r.member, err)
			return
		}
		cctx, cancel := context.WithTimeout(ctx, q.cfg.CallTimeout)
		defer cancel()
		resp, err := c.Count(cctx, &clickaggv1.CountRequest{Partition: int32(p), AdId: adID, FromMinute: from, ToMinute: to, Filter: f.proto()})
		if err != nil {
			errs[i] = fmt.Errorf("owner %s at %s: %w", r.member, r.addr, err)
			return
		}
		counts[i], wms[i] = resp.GetCount(), resp.GetWatermarkMs()
		hist[i] = historyRead{revision: resp.GetHistoryRevision(), applied: resp.GetHistoryApplied()}
	}
	if len(ps) == 1 {
		call(0)
	} else {
		var eg errgroup.Group
		eg.SetLimit(fanOutLimit)
		for i := range ps {
			eg.Go(func() error { call(i); return nil })
		}
		_ = eg.Wait()
	}
	if err := ownerAnswer(errs); err != nil {
		return 0, 0, 0, err
	}
	if breakage.On(breakage.PartialQueryd) {
		// Broken on purpose: answers are exact or fail, never partial
		// (docs/architecture.md, invariant 8). The partitions whose
		// call failed are left out: they add nothing to the count and
		// hold back no watermark.
		leaveOutFailed(errs, wms)
	}
	var missing []int
	var reasons []string
	for i, err := range errs {
		if err != nil {
			missing = append(missing, ps[i])
			reasons = append(reasons, err.Error())
		}
	}
	if len(missing) > 0 {
		if len(missing) > 1 {
			for i := range reasons {
				reasons[i] = fmt.Sprintf("partition %d: %s", missing[i], reasons[i])
			}
		}
		return 0, 0, 0, &UnavailableError{Partitions: missing, Reason: strings.Join(reasons, "; ")}
	}
	rev, err := sameHistory(ps, hist)
	if err != nil {
		return 0, 0, 0, err
	}
	var n int64
	for _, c := range counts {
		n += c
	}
	return n, slices.Min(wms), rev, nil
}

// leaveOutFailed clears the errors of the calls that failed and takes
// their watermarks out of the minimum (breakage.PartialQueryd); if none
// answered, every watermark is 0, as before any tick.
func leaveOutFailed(errs []error, wms []int64) {
	answered := false
	for i := range errs {
		if errs[i] != nil {
			errs[i], wms[i] = nil, math.MaxInt64
		} else {
			answered = true
		}
	}
	if !answered {
		clear(wms)
	}
}

// historyRead is what an owner's answer says about the history it read.
type historyRead struct {
	revision, applied int64
}

// sameHistory returns the latest history revision the answers of one
// query read, checking that every owner that read the history did so
// through the same applied revisions: one that has not seen a recalc
// -apply yet fails the query as unavailable, to be asked again, so that
// no answer mixes two revisions.
func sameHistory(ps []int, hist []historyRead) (int64, error) {
	var rev, applied int64
	for i, h := range hist {
		if h.applied == 0 {
			continue
		}
		if applied != 0 && h.applied != applied {
			return 0, &UnavailableError{Partitions: ps[i : i+1], Reason: fmt.Sprintf("owners read the history through applied revisions %d and %d: a recalc -apply is reaching them", applied, h.applied)}
		}
		applied = h.applied
		rev = max(rev, h.revision)
	}
	return rev, nil
}

const minuteMs = 60_000

// ownerAnswer returns the first of errs in which an owner answered that
// the query cannot be answered as asked, whoever owns the partition: a
// window older than what it keeps (OUT_OF_RANGE), or history it misses or
// cannot read (DATA_LOSS). Waiting for another owner would not help, and
// reporting it as UNAVAILABLE would hide the reason.
func ownerAnswer(errs []error) error {
	for _, err := range errs {
		switch status.Code(err) {
		case codes.OutOfRange, codes.DataLoss:
			return err
		}
	}
	return nil
}

// Top returns the exact top n ads over [from, to) Unix minutes across every
// partition, or fails if any partition cannot answer.
func (q *Queryd) Top(ctx context.Context, from, to int64, n int, f Filter) (TopResult, error) {
	ads, wm, rev, err := q.topRev(ctx, from, to, n, f)
	if err != nil {
		return TopResult{}, err
	}
	return TopResult{Ads: ads, From: from, To: to, Complete: wm >= to*minuteMs, HistoryRevision: rev}, nil
}

// top returns the top n ads and the smallest watermark of all partitions.
func (q *Queryd) top(ctx context.Context, from, to int64, n int, f Filter) ([]AdCount, int64, error) {
	ads, wm, _, err := q.topRev(ctx, from, to, n, f)
	return ads, wm, err
}

// topRev is top, and the history revision the answers read.
func (q *Queryd) topRev(ctx context.Context, from, to int64, n int, f Filter) ([]AdCount, int64, int64, error) {
	t, err := q.table()
	if err != nil {
		return nil, 0, 0, err
	}
	split := t.SplitAds(from, to)
	var (
		ads     []AdCount
		wm, rev int64
	)
	err = q.withRetry(ctx, func(d *directory) error {
		var err error
		ads, wm, rev, err = q.topOnce(ctx, d, from, to, n, f, split)
		return err
	})
	return ads, wm, rev, err
}

// topOnce asks each owner for the top n of its partitions, leaving out the
// split ads, whose counts each owner returns separately, and merges the
// answers. Every non-split ad lives in exactly one partition, so the top
// lists are disjoint and the merge of per-owner exact top n lists is the
// exact top n of the non-split ads; each split ad's counts over all owners
// add up to its exact count (topn.Merge sums an ad found in several
// lists), so merging them in keeps the result exact.
func (q *Queryd) topOnce(ctx context.Context, d *directory, from, to int64, n int, f Filter, split []string) ([]AdCount, int64, int64, error) {
	groups, err := q.ownerGroups(d)
	if err != nil {
		return nil, 0, 0, err
	}
	lists := make([][]AdCount, 2*len(groups))
	wms := make([]int64, len(groups))
	errs := make([]error, len(groups))
	hist := make([]historyRead, len(groups))
	var eg errgroup.Group
	eg.SetLimit(fanOutLimit)
	for i, g := range groups {
		eg.Go(func() error {
			lists[2*i], lists[2*i+1], wms[i], hist[i], errs[i] = q.callTop(ctx, g.route, g.parts, from, to, n, f, split)
			return nil
		})
	}
	_ = eg.Wait()
	if err := ownerAnswer(errs); err != nil {
		return nil, 0, 0, err
	}
	if breakage.On(breakage.PartialQueryd) {
		// Broken on purpose, as in countOnce: the owners whose call
		// failed are left out of the merge and the watermark.
		for i := range errs {
			if errs[i] != nil {
				lists[2*i], lists[2*i+1] = nil, nil
			}
		}
		leaveOutFailed(errs, wms)
	}
	if err := groupsFailed(groups, errs); err != nil {
		return nil, 0, 0, err
	}
	first := make([]int, len(groups))
	for i, g := range groups {
		first[i] = int(g.parts[0])
	}
	rev, err := sameHistory(first, hist)
	if err != nil {
		return nil, 0, 0, err
	}
	return topn.Merge(n, lists...), slices.Min(wms), rev, nil
}

// ownerGroup is the partitions one owner serves.
type ownerGroup struct {
	route
	parts []int32
}

// groupsFailed is the UnavailableError naming every partition of the
// groups whose call failed (errs[i] for groups[i]), or nil if none did.
func groupsFailed(groups []*ownerGroup, errs []error) error {
	var missing []int
	var reasons []string
	for i, err := range errs {
		if err != nil {
			for _, p := range groups[i].parts {
				missing = append(missing, int(p))
			}
			reasons = append(reasons, fmt.Sprintf("partitions %v: %v", groups[i].parts, err))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return &UnavailableError{Partitions: missing, Reason: strings.Join(reasons, "; ")}
}

// ownerGroups groups every partition by its owner, ordered by their first
// partition, or fails when any partition has none: asking the others
// would only produce an answer that must not be given.
func (q *Queryd) ownerGroups(d *directory) ([]*ownerGroup, error) {
	byOwner := map[string]*ownerGroup{}
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
			g = &ownerGroup{route: r}
			byOwner[r.member] = g
		}
		g.parts = append(g.parts, int32(p))
	}
	if len(missing) > 0 {
		return nil, &UnavailableError{Partitions: missing, Reason: strings.Join(reasons, "; ")}
	}
	groups := make([]*ownerGroup, 0, len(byOwner))
	for _, g := range byOwner {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b *ownerGroup) int { return int(a.parts[0] - b.parts[0]) })
	return groups, nil
}

// callTop returns one owner's top list, the counts of the split ads in its
// partitions, its smallest watermark, and what it read of the history.
func (q *Queryd) callTop(ctx context.Context, r route, parts []int32, from, to int64, n int, f Filter, split []string) ([]AdCount, []AdCount, int64, historyRead, error) {
	c, err := q.client(r.addr)
	if err != nil {
		return nil, nil, 0, historyRead{}, fmt.Errorf("owner %s: %w", r.member, err)
	}
	cctx, cancel := context.WithTimeout(ctx, q.cfg.CallTimeout)
	defer cancel()
	resp, err := c.TopAds(cctx, &clickaggv1.TopAdsRequest{
		Partitions: parts,
		FromMinute: from,
		ToMinute:   to,
		Count:      int32(n),
		Filter:     f.proto(),
		SplitAds:   split,
	})
	if err != nil {
		return nil, nil, 0, historyRead{}, fmt.Errorf("owner %s at %s: %w", r.member, r.addr, err)
	}
	top := fromProtoAds(resp.GetAds())
	if len(split) > 0 {
		// An owner that ignored split_ads would answer with partial counts
		// of split ads in its top list: refuse rather than merge them.
		for _, a := range top {
			if _, found := slices.BinarySearch(split, a.AdID); found {
				return nil, nil, 0, historyRead{}, fmt.Errorf("owner %s at %s returned split ad %s in its top list: it does not support split ads", r.member, r.addr, a.AdID)
			}
		}
	}
	return top, fromProtoAds(resp.GetSplitCounts()), resp.GetMinWatermarkMs(),
		historyRead{revision: resp.GetHistoryRevision(), applied: resp.GetHistoryApplied()}, nil
}
