package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
	"github.com/clickagg/clickagg/ring"
)

// joinDelayCap bounds how long joins wait, in JoinDelays after the first.
const joinDelayCap = 5

// retryPause paces the campaigns after a term ended, and the attempts to
// assign after one failed.
var retryPause = retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

const (
	resignTimeout = 5 * time.Second
	// commitTimeout bounds a leader write that must be attempted even
	// though the term is ending (see term.execute).
	commitTimeout = 5 * time.Second
)

// errLeadershipLost ends a term whose election lease is gone.
var errLeadershipLost = errors.New("deposed: the election lease was lost")

// fatalError is an error that campaigning again cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Stats counts the coordinator's notable events since it started.
type Stats struct {
	// RefusedWrites counts assignment changes refused because this
	// coordinator no longer held the election key (checked before the
	// handoffs, and by etcd in the write itself): it was paused or cut off
	// past its session TTL and another coordinator leads. Each ended the
	// term.
	RefusedWrites int64
	// PlannedHandoffs and UnplannedHandoffs count the partition moves
	// written, by whether the old owner released the partition first.
	PlannedHandoffs   int64
	UnplannedHandoffs int64
	// FailedReleases counts Release calls to a live old owner that failed
	// or timed out; each such move went ahead unplanned.
	FailedReleases int64
	// Executing is the number of admin requests the leader is carrying out
	// now (0 or 1: they run one at a time).
	Executing int64
	// SplitChanges counts the hot-key splits and unsplits made effective
	// (every live router acknowledged them), by the Controller or an
	// operator; WithdrawnChanges those withdrawn because some router did
	// not acknowledge in time or the request ended first.
	SplitChanges     int64
	WithdrawnChanges int64
	// AssignmentChanges counts the assignments written that moved at
	// least one partition.
	AssignmentChanges int64
}

// Cluster is what the coordinator needs of the cluster state in etcd;
// *cluster.Client satisfies it. It only reads: every write goes through
// the *cluster.Leadership that CampaignAt returns, fenced by the election.
type Cluster interface {
	// The election.
	CampaignAt(ctx context.Context, cand cluster.Candidate, ttl time.Duration) (*cluster.Leadership, error)
	Leader(ctx context.Context) (string, error)
	LeaderCandidate(ctx context.Context) (cluster.Candidate, error)
	// What the leader plans from.
	Members(ctx context.Context, role string) ([]cluster.Member, error)
	WatchMembers(ctx context.Context, role string, fn func([]cluster.Member)) error
	Assignment(ctx context.Context) (cluster.Assignment, error)
	Draining(ctx context.Context) (map[string]time.Time, error)
	Pins(ctx context.Context) (map[int]string, error)
	Handoffs(ctx context.Context) ([]cluster.Handoff, error)
	LastReconcileRun(ctx context.Context) (r cluster.ReconcileRun, ok bool, err error)
}

// Coordinator assigns partitions to aggregators while it is the leader,
// carries out the operators' moves, drains and rebalances, and answers the
// admin API.
type Coordinator struct {
	cfg Config
	// self is this coordinator's name in the election (the process's -id)
	// and the address followers forward admin mutations to.
	self       cluster.Candidate
	cl         Cluster
	partitions int
	dial       func(addr string) (grpc.ClientConnInterface, error)
	log        *slog.Logger

	mu    sync.Mutex
	conns map[string]grpc.ClientConnInterface // by address

	// term is the running term while this coordinator leads, else nil.
	term atomic.Pointer[termHandle]

	refusedWrites     atomic.Int64
	plannedHandoffs   atomic.Int64
	unplannedHandoffs atomic.Int64
	failedReleases    atomic.Int64
	executing         atomic.Int64
	splitChanges      atomic.Int64
	withdrawnChanges  atomic.Int64
	assignmentChanges atomic.Int64
	// aggregators is the number of live aggregators the current term saw
	// last.
	aggregators atomic.Int64

	reg prometheus.Registerer // nil without WithMetrics
	m   *metrics

	// hk is nil without WithHotKeys.
	hk *hotKeys
	// maxIDLen is the routers' -router.max-id-length (WithMaxIDLength); 0
	// means their default.
	maxIDLen int
	// now is the clock watermark delays are measured against (WithClock).
	now func() time.Time
}

// New returns the coordinator that campaigns as self, of a cluster of
// partitions partitions. dial
// returns a connection to the gRPC server at addr (aggregators, and the
// leader when this coordinator forwards to it); it is called once per
// address and its result reused, and the caller owns (and closes) the
// connections. New does no I/O.
func New(cfg Config, self cluster.Candidate, cl Cluster, partitions int, dial func(addr string) (grpc.ClientConnInterface, error), log *slog.Logger, opts ...Option) *Coordinator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Coordinator{
		cfg:        cfg,
		self:       self,
		cl:         cl,
		partitions: partitions,
		dial:       dial,
		log:        log,
		conns:      map[string]grpc.ClientConnInterface{},
		m:          newMetrics(),
		now:        time.Now,
	}
	for _, o := range opts {
		o(c)
	}
	if c.reg != nil {
		for _, col := range c.collectors() {
			if err := c.reg.Register(col); err != nil {
				log.Warn("register metrics", "err", err)
				break
			}
		}
	}
	if c.hk != nil {
		// An invalid count leaves them nil; Run refuses to start then.
		if parts, err := ring.NewPartitioner(partitions); err == nil {
			c.hk.parts = parts
			c.hk.planner = hotkey.NewPlanner(c.hk.cfg, parts)
		}
	}
	return c
}

// Stats returns the counters of notable events.
func (c *Coordinator) Stats() Stats {
	return Stats{
		RefusedWrites:     c.refusedWrites.Load(),
		PlannedHandoffs:   c.plannedHandoffs.Load(),
		UnplannedHandoffs: c.unplannedHandoffs.Load(),
		FailedReleases:    c.failedReleases.Load(),
		Executing:         c.executing.Load(),
		SplitChanges:      c.splitChanges.Load(),
		WithdrawnChanges:  c.withdrawnChanges.Load(),
		AssignmentChanges: c.assignmentChanges.Load(),
	}
}

// Run campaigns for leadership and assigns partitions while leader, until
// ctx ends; then it resigns, so that another coordinator takes over at
// once, and returns nil. It returns early only for errors that campaigning
// again cannot fix (an invalid configuration, a stored assignment of another
// partition count).
func (c *Coordinator) Run(ctx context.Context) error {
	if c.self.ID == "" {
		return errors.New("coordinator: empty ID")
	}
	if c.maxIDLen < 0 {
		return fmt.Errorf("coordinator: -router.max-id-length %d: must not be negative", c.maxIDLen)
	}
	if c.partitions < 1 || c.partitions > ring.MaxPartitions {
		return fmt.Errorf("coordinator: partition count %d: must be in [1, %d]", c.partitions, ring.MaxPartitions)
	}
	if err := c.cfg.Validate(); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if c.hk != nil {
		if err := c.hk.validate(c.partitions); err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
	}
	// Not retry.Do: a term never ends well, and one that lasted a while
	// starts the pauses again.
	pause := retryPause.Backoff()
	for {
		start := time.Now()
		err := c.lead(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fe := (*fatalError)(nil); errors.As(err, &fe) {
			return fmt.Errorf("coordinator: %w", err)
		}
		if time.Since(start) > time.Minute {
			pause.Reset()
		}
		d := pause.Next()
		c.log.Warn("leadership ended, campaigning again", "member", c.self.ID, "err", err, "retry_in", d)
		if retry.Sleep(ctx, d) != nil {
			return nil
		}
	}
}

// lead runs one term: campaign, read the state the previous leader left,
// then plan and execute until the term ends.
func (c *Coordinator) lead(ctx context.Context) error {
	l, err := c.cl.CampaignAt(ctx, c.self, c.cfg.SessionTTL)
	if err != nil {
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resignTimeout)
		defer cancel()
		if err := l.Resign(rctx); err != nil {
			c.log.Warn("resign", "member", c.self.ID, "err", err)
		}
	}()
	// Elected after the previous leader's key was deleted, so these reads
	// see every write the previous leader made.
	t := &term{c: c, l: l, gone: map[ownerKey]time.Time{}}
	if err := t.load(ctx); err != nil {
		return err
	}
	if n := len(t.cur.Owners); n != 0 && n != c.partitions {
		return &fatalError{fmt.Errorf("stored assignment has %d partitions, this coordinator was started with %d", n, c.partitions)}
	}
	if t.members, err = c.cl.Members(ctx, cluster.RoleAggregator); err != nil {
		return fmt.Errorf("read members: %w", err)
	}
	c.log.Info("elected leader", "member", c.self.ID, "version", t.cur.Version, "draining", len(t.cons.draining), "pins", len(t.cons.pins))

	g, gctx := errgroup.WithContext(ctx)
	h := &termHandle{reqs: make(chan *request), done: make(chan struct{}), ctx: gctx}
	if c.hk != nil {
		h.pub = hotkey.NewPublisher(c.hk.cfg, c.hk.store, c.cl, c.log.With("component", "hotkey"), c.hk.now)
		h.fence = l.Fence()
		h.fenced = make(chan error, 1)
	}
	c.term.Store(h)
	defer func() {
		c.term.CompareAndSwap(h, nil)
		// The term's context has ended, so the operators' split table
		// changes still running withdraw theirs (see applyChange); wait
		// for them, so that they do so with the fence of this term, before
		// the resignation voids it. The gate stays closed.
		h.gate.Lock()
		close(h.done)
	}()
	t.track = newTracker(c, l)

	// One slot, latest wins: a plan only needs the newest member list.
	updates := make(chan []cluster.Member, 1)
	g.Go(func() error {
		select {
		case <-l.Done():
			return errLeadershipLost
		case err := <-h.fenced: // nil channel without hot keys
			return err
		case <-gctx.Done():
			return nil
		}
	})
	if c.hk != nil {
		g.Go(func() error { return c.runHotKeys(gctx, h) })
	}
	g.Go(func() error {
		return c.cl.WatchMembers(gctx, cluster.RoleAggregator, func(ms []cluster.Member) {
			select {
			case <-updates:
			default:
			}
			updates <- ms
		})
	})
	g.Go(func() error { return t.track.run(gctx) })
	t.updates = updates
	g.Go(func() error { return t.run(gctx, updates, h.reqs) })
	return g.Wait()
}

// termHandle is how admin calls reach the running term.
type termHandle struct {
	reqs chan *request
	done chan struct{} // closed when the term has ended
	// ctx ends when the term does.
	ctx context.Context
	termHotKeys
}

// ownerKey identifies one life of an owner.
type ownerKey struct {
	member      string
	incarnation int64
}

// term is one leadership: the state the leader owns, kept in memory
// because only the leader writes it, and re-read after a write whose
// outcome is unknown.
type term struct {
	c     *Coordinator
	l     *cluster.Leadership
	track *tracker

	cur     cluster.Assignment
	cons    constraints
	members []cluster.Member // live aggregators
	// gone records when each lost owner was noticed: the stop time of its
	// partitions' unplanned handoffs.
	gone  map[ownerKey]time.Time
	stale bool // cur or cons may be behind etcd
	// updates delivers member lists; a plan in waves stops early when one
	// is waiting, and the rest is planned again with it.
	updates <-chan []cluster.Member
}

// load reads the assignment, drains and pins from etcd.
func (t *term) load(ctx context.Context) error {
	cur, err := t.c.cl.Assignment(ctx)
	if err != nil {
		return fmt.Errorf("read assignment: %w", err)
	}
	draining, err := t.c.cl.Draining(ctx)
	if err != nil {
		return fmt.Errorf("read drains: %w", err)
	}
	pins, err := t.c.cl.Pins(ctx)
	if err != nil {
		return fmt.Errorf("read pins: %w", err)
	}
	cons := constraints{draining: map[string]bool{}, pins: pins}
	for id := range draining {
		cons.draining[id] = true
	}
	t.cur, t.cons, t.stale = cur, cons, false
	return nil
}

// onlyJoins reports whether ms differs from the current members only by
// added aggregators: no member gone or restarted, none newly leaving or
// unhealthy.
func (t *term) onlyJoins(ms []cluster.Member) bool {
	next := make(map[string]cluster.Member, len(ms))
	for _, m := range ms {
		next[m.ID] = m
	}
	for _, m := range t.members {
		n, ok := next[m.ID]
		if !ok || n.Incarnation != m.Incarnation || n.Leaving != m.Leaving || n.Unhealthy != m.Unhealthy {
			return false
		}
	}
	return len(ms) > len(t.members)
}

// setMembers takes a new member list and notes the owners that left.
func (t *term) setMembers(ms []cluster.Member) {
	now := time.Now()
	live := make(map[ownerKey]bool, len(ms))
	for _, m := range ms {
		live[ownerKey{m.ID, m.Incarnation}] = true
	}
	for _, m := range t.members {
		k := ownerKey{m.ID, m.Incarnation}
		if _, ok := t.gone[k]; !live[k] && !ok {
			t.gone[k] = now
		}
	}
	// Forget owners that no partition names any more.
	owning := map[ownerKey]bool{}
	for _, o := range t.cur.Owners {
		owning[ownerKey{o.Member, o.Incarnation}] = true
	}
	for k := range t.gone {
		if !owning[k] {
			delete(t.gone, k)
		}
	}
	t.members = ms
	t.c.aggregators.Store(int64(len(ms)))
}

// run plans after every membership change and serves the admin requests,
// one at a time, until the term ends.
//
// A change that only adds aggregators waits until no other has joined for
// JoinDelay (at most joinDelayCap times that after the first): the members
// of a scale-out start one after another, and one plan for all of them
// moves each partition once, where a plan per member would move some
// partitions again before their new owner even served them. A change that
// loses an owner or marks one leaving is planned at once (with any joins
// waiting).
func (t *term) run(ctx context.Context, updates <-chan []cluster.Member, reqs <-chan *request) error {
	var (
		pending   = true           // members not yet reflected in a written assignment
		again     <-chan time.Time // set while a failed assign waits to retry
		pause     = retryPause.Backoff()
		joining   <-chan time.Time // set while additions wait for JoinDelay
		firstJoin time.Time        // when the waiting additions started
	)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ms := <-updates:
			onlyJoins := t.onlyJoins(ms)
			t.setMembers(ms)
			pending = true
			if d := t.c.cfg.JoinDelay; onlyJoins && d > 0 {
				now := time.Now()
				if joining == nil {
					firstJoin = now
				}
				wait := min(d, firstJoin.Add(joinDelayCap*d).Sub(now))
				joining = time.After(max(wait, 0))
				continue
			}
			joining = nil
		case <-joining:
			joining = nil
		case req := <-reqs:
			t.c.executing.Add(1)
			moves, err := t.handle(ctx, req)
			t.c.executing.Add(-1)
			req.reply <- response{moves: moves, err: err}
			switch {
			case errors.Is(err, cluster.ErrNotLeader):
				return err
			case fatal(err):
				return err
			case err == nil && !req.dryRun:
				// The plan it executed reflected the latest members.
				pending, joining = false, nil
			}
			continue
		case <-again:
			again = nil
		}
		if !pending || again != nil {
			continue
		}
		var err error
		if t.stale {
			err = t.load(ctx)
		}
		if err == nil {
			_, err = t.apply(ctx, t.cons, cluster.Update{})
		}
		switch {
		case err == nil:
			pending = false
			pause.Reset()
		case errors.Is(err, cluster.ErrNotLeader), fatal(err):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			// Not retry.Do: the term keeps serving membership changes and
			// admin requests while it waits.
			d := pause.Next()
			t.c.log.Warn("assign", "err", err, "retry_in", d)
			again = time.After(d)
		}
	}
}

func fatal(err error) bool {
	fe := (*fatalError)(nil)
	return errors.As(err, &fe)
}

// apply plans for the current members under cons and executes the plan
// together with u (the etcd form of a change of constraints). It returns
// the moves it made. The caller has reloaded a stale state.
//
// The plan is carried out in waves (see waves): each wave is one
// assignment version, and the next starts once the new owners of the
// previous one serve, so that no new owner has more than moveWave
// partitions to load at once. u is written with the first wave: if this
// leader dies between waves, its successor plans the rest from it. A
// membership change stops the waves early (the moves returned are those
// made); the next plan continues from where they stopped.
func (t *term) apply(ctx context.Context, cons constraints, u cluster.Update) ([]Move, error) {
	c := t.c
	next, moved, changed, err := planWith(t.cur, t.members, cons, c.partitions, c.cfg.Load)
	if err != nil {
		return nil, &fatalError{err}
	}
	if !changed {
		if u.Drain == nil && u.Undrain == nil && u.Pin == nil && !u.ClearPins {
			return nil, nil
		}
		if err := t.execute(ctx, t.cur, nil, false, u); err != nil {
			return nil, err
		}
		t.cons = cons
		return nil, nil
	}
	waves := t.waves(next, moved)
	if len(waves) == 0 {
		waves = [][]int{nil} // nothing moves, but the assignment is new
	}
	var made []Move
	for i, wave := range waves {
		if i > 0 && len(t.updates) > 0 {
			c.log.Info("members changed: the rest of the plan is planned again", "waves_done", i, "waves", len(waves))
			return made, nil
		}
		step := stepTowards(t.cur, next, wave)
		if err := t.execute(ctx, step, wave, true, u); err != nil {
			return nil, err
		}
		u = cluster.Update{}
		t.cons = cons
		prev := t.cur
		t.cur = step
		made = append(made, movesOf(prev, step, wave)...)
		unassigned := 0
		for _, o := range step.Owners {
			if o.Member == "" {
				unassigned++
			}
		}
		c.log.Info("assignment changed", "version", step.Version, "moved", len(wave), "wave", i+1, "waves", len(waves), "aggregators", len(t.members), "unassigned", unassigned, "from_version", prev.Version)
		if i < len(waves)-1 {
			t.awaitServing(ctx, step, wave)
		}
	}
	if len(t.members) > c.partitions {
		c.log.Warn("more aggregators than partitions, some stay idle", "aggregators", len(t.members), "partitions", c.partitions)
	}
	slices.SortFunc(made, func(x, y Move) int { return cmp.Compare(x.Partition, y.Partition) })
	return made, nil
}

// moveWave bounds the live handoffs to one new owner in one wave: the new
// owner loads each partition's snapshot, and its last one would otherwise
// wait for all the others.
const moveWave = 8

// waves orders the moves: every move whose old owner is gone (nothing to
// hand over, nobody serves it meanwhile) in the first wave, and the live
// handoffs at most moveWave per new owner per wave, in partition order.
func (t *term) waves(next cluster.Assignment, moved []int) [][]int {
	live := make(map[ownerKey]bool, len(t.members))
	for _, m := range t.members {
		live[ownerKey{m.ID, m.Incarnation}] = true
	}
	var waves [][]int
	add := func(i, p int) {
		for len(waves) <= i {
			waves = append(waves, nil)
		}
		waves[i] = append(waves[i], p)
	}
	perOwner := map[string]int{}
	for _, p := range moved {
		var old cluster.Owner
		if p < len(t.cur.Owners) {
			old = t.cur.Owners[p]
		}
		if old.Member == "" || !live[ownerKey{old.Member, old.Incarnation}] {
			add(0, p)
			continue
		}
		to := next.Owners[p].Member
		add(perOwner[to]/moveWave, p)
		perOwner[to]++
	}
	return waves
}

// stepTowards returns cur with the partitions parts moved to their owners
// in next, as the next version; moved partitions get it as their epoch.
func stepTowards(cur, next cluster.Assignment, parts []int) cluster.Assignment {
	owners := make([]cluster.Owner, len(next.Owners))
	copy(owners, cur.Owners)
	version := cur.Version + 1
	for _, o := range cur.Owners {
		version = max(version, o.Epoch+1)
	}
	for _, p := range parts {
		o := next.Owners[p]
		o.Epoch, o.Released = version, ""
		owners[p] = o
	}
	return cluster.Assignment{Version: version, Owners: owners}
}

// awaitServing waits until the new owners of parts in a serve them, at
// most ReleaseTimeout: a wave that does not complete (a new owner died)
// does not hold the next one back for long, and the next plan fixes it.
func (t *term) awaitServing(ctx context.Context, a cluster.Assignment, parts []int) {
	c := t.c
	addr := map[string]string{}
	for _, m := range t.members {
		addr[m.ID] = m.Addr
	}
	waiting := map[int]bool{}
	for _, p := range parts {
		if a.Owners[p].Member != "" {
			waiting[p] = true
		}
	}
	deadline := time.Now().Add(c.cfg.ReleaseTimeout)
	for len(waiting) > 0 && time.Now().Before(deadline) && len(t.updates) == 0 {
		members := map[string]bool{}
		for p := range waiting {
			members[a.Owners[p].Member] = true
		}
		for id := range members {
			resp, err := c.partitionStatus(ctx, addr[id])
			if err != nil || resp.GetMember() != id {
				continue
			}
			for _, ps := range resp.GetPartitions() {
				p := int(ps.GetPartition())
				if waiting[p] && a.Owners[p].Member == id && ps.GetEpoch() == a.Owners[p].Epoch && ps.GetState() == "serving" {
					delete(waiting, p)
				}
			}
		}
		if len(waiting) > 0 && retry.Sleep(ctx, wavePoll) != nil {
			return
		}
	}
	if len(waiting) > 0 {
		c.log.Warn("next wave of moves without waiting longer for the last one", "version", a.Version, "not_serving", len(waiting))
	}
}

// wavePoll is how often awaitServing asks the new owners.
const wavePoll = 50 * time.Millisecond

// conn returns the connection to the server at addr.
func (c *Coordinator) conn(addr string) (grpc.ClientConnInterface, error) {
	if addr == "" {
		return nil, errors.New("no address registered")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := c.dial(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// aggregator returns the client of the aggregator at addr.
func (c *Coordinator) aggregator(addr string) (clickaggv1.AggregatorServiceClient, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	return clickaggv1.NewAggregatorServiceClient(cc), nil
}
