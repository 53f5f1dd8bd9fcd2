package aggregator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/retry"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
)

// Log is what the aggregator needs of the partition log; *partlog.Log
// satisfies it.
type Log interface {
	Read(ctx context.Context, after map[int]string, count int64, block time.Duration) (map[int][]partlog.Entry, error)
	Lag(ctx context.Context, p int, after string) (int64, string, error)
}

// SnapshotStore is what the aggregator needs of the snapshot store;
// *snapshot.Store satisfies it.
type SnapshotStore interface {
	Claim(ctx context.Context, p int, epoch uint64) error
	Save(ctx context.Context, p int, w snapshot.Write) error
	Load(ctx context.Context, p int) (snapshot.Loaded, error)
}

// Cluster is what the aggregator needs of the cluster state in etcd;
// *cluster.Client satisfies it.
type Cluster interface {
	Register(ctx context.Context, m cluster.Member, ttl time.Duration) (*cluster.Registration, error)
	WatchAssignment(ctx context.Context, fn func(cluster.Assignment)) error
	Members(ctx context.Context, role string) ([]cluster.Member, error)
	Leader(ctx context.Context) (string, error)
}

// Self is how the aggregator registers in etcd. The process that runs it
// knows these from its own flags and its listener; no aggregator flag
// sets them, so they are not in Config.
type Self struct {
	// ID is the member ID (the process's -id), stable across restarts of
	// the same aggregator; empty means the hostname.
	ID string
	// Addr is the gRPC address queryd and the coordinator dial.
	Addr string
	// LeaseTTL is how long the membership lease outlives the process
	// (-etcd.lease-ttl): one knob, shared by every role, for how soon a
	// dead member is noticed.
	LeaseTTL time.Duration
	// Version and HTTPAddr are registered with the member (see
	// cluster.Member) for operators and consoles; either may be empty.
	Version, HTTPAddr string
}

// validate refuses a Self that cannot register; a bad lease TTL is named
// by the process's flag that sets it, since the aggregator has none.
func (s Self) validate() error {
	switch {
	case s.Addr == "":
		return errors.New("aggregator: advertise address is empty")
	case s.LeaseTTL < cluster.MinLeaseTTL || s.LeaseTTL%time.Second != 0:
		return fmt.Errorf("-etcd.lease-ttl %v: must be a whole number of seconds, at least %v", s.LeaseTTL, cluster.MinLeaseTTL)
	}
	return nil
}

// Timeouts of the steps that run after ctx has ended, so that shutdown is
// bounded even when Redis or etcd do not answer.
const (
	finalSnapshotTimeout = 10 * time.Second
	revokeTimeout        = 5 * time.Second
)

// retryPause paces the attempts to register, and to take a partition
// after an error that may pass (Redis unreachable).
var retryPause = retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// watchFailedPause is the pause before registering again after the
// assignment watch failed: etcd, which the watch needs, is likely in
// trouble, and the registration is retried with retryPause after it.
const watchFailedPause = 5 * time.Second

// Stats counts the aggregator's exceptional events since it started.
type Stats struct {
	// FencedWrites counts snapshot writes refused because a newer owner had
	// claimed the partition; each made this aggregator drop the partition.
	FencedWrites int64
	// CorruptEntries counts log entries that did not decode; each stopped
	// its partition from being served.
	CorruptEntries int64
	// LeaseLosses counts the times the membership lease was lost while
	// running; each stopped every partition and started a new incarnation.
	LeaseLosses int64
	// SnapshotErrors counts snapshot writes that failed for other reasons
	// than fencing (they are retried at the next interval).
	SnapshotErrors int64
}

// Aggregator owns the partitions the coordinator assigns to its current
// incarnation, keeps their state from their logs, snapshots it, and answers
// queries about it.
type Aggregator struct {
	cfg   Config
	self  Self
	opts  tally.Options
	log   Log
	store SnapshotStore
	cl    Cluster
	lg    *slog.Logger
	now   func() time.Time

	mu     sync.RWMutex
	member string // ID once Run has resolved it
	ready  bool   // registered, and the assignment watch delivered
	// live is true while the current incarnation may serve; partitions
	// taken while it is false are never served.
	live  bool
	parts map[int]*partition    // the partitions of the current incarnation
	reg   *cluster.Registration // the current incarnation; nil between
	sess  *sessionState         // nil between incarnations
	// wanted are the partitions the assignment gives the current
	// incarnation; unhealthy is whether it gave them back (see trouble).
	wanted    map[int]uint64
	unhealthy bool
	sketchCap int                             // counters per sketch slot
	probe     func(ctx context.Context) error // nil without WithRedisProbe
	archiver  Archiver                        // nil without WithArchiver
	history   HistoryWriter                   // nil without WithHistory
	// histReader and marks answer windows older than memory; nil without
	// WithHistoryReader.
	histReader HistoryReader
	marks      HistoryMarks

	fencedWrites   atomic.Int64
	corruptEntries atomic.Int64
	leaseLosses    atomic.Int64
	snapshotErrors atomic.Int64

	promReg prometheus.Registerer // nil without WithMetrics
	m       *metrics
}

// New returns the aggregator that registers as self; it does no I/O. now
// is the clock used for snapshot scheduling, raw-retention trimming and
// status times; event time comes from the log only.
func New(cfg Config, self Self, log Log, store SnapshotStore, cl Cluster, lg *slog.Logger, now func() time.Time, opts ...Option) *Aggregator {
	a := newAggregator(cfg, self, log, store, cl, lg, now)
	for _, o := range opts {
		o(a)
	}
	if a.promReg != nil {
		for _, c := range a.collectors() {
			if err := a.promReg.Register(c); err != nil {
				a.lg.Warn("register metrics", "err", err)
				break
			}
		}
	}
	return a
}

func newAggregator(cfg Config, self Self, log Log, store SnapshotStore, cl Cluster, lg *slog.Logger, now func() time.Time) *Aggregator {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Aggregator{
		cfg:       cfg,
		self:      self,
		opts:      cfg.tallyOptions(),
		log:       log,
		store:     store,
		cl:        cl,
		lg:        lg,
		now:       now,
		parts:     make(map[int]*partition),
		sketchCap: hotkey.DefaultSketchCapacity,
		m:         newMetrics(),
	}
}

// WithSketchCapacity sets the counters of each partition's heavy-hitter
// sketch (hotkey.Sketch) per 10s slot: the process's -hotkey.sketch-capacity,
// which every role shares. Without it, or with 0,
// hotkey.DefaultSketchCapacity.
func WithSketchCapacity(n int) Option {
	return func(a *Aggregator) { a.sketchCap = cmp.Or(n, hotkey.DefaultSketchCapacity) }
}

// Ready reports whether the aggregator is registered in etcd and watching
// its assignment. It says nothing about whether partitions are caught up:
// PartitionStatus does.
func (a *Aggregator) Ready() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.ready
}

// Stats returns the counters of exceptional events.
func (a *Aggregator) Stats() Stats {
	return Stats{
		FencedWrites:   a.fencedWrites.Load(),
		CorruptEntries: a.corruptEntries.Load(),
		LeaseLosses:    a.leaseLosses.Load(),
		SnapshotErrors: a.snapshotErrors.Load(),
	}
}

// Run registers the aggregator in etcd and owns its assigned partitions
// until ctx ends. Each registration is one incarnation:
//
//	register ─▶ watch assignment, consume, snapshot, serve
//	   ▲                     │
//	   └── lease lost: stop serving every partition at once, final
//	       snapshots (fenced, so harmless if the partitions moved),
//	       drop all state, register again as a new incarnation
//
// When ctx ends, Run shuts down in this order:
//  1. Ready turns false and the consumer stops (after its current XREAD,
//     at most -aggregator.read-block); queries keep being answered;
//  2. a final snapshot of every owned partition, bounded by a timeout;
//  3. every partition stops being served and its state is dropped;
//  4. the lease is revoked (Registration.Close), so the coordinator moves
//     the partitions at once instead of after the lease TTL.
//
// Every goroutine Run starts has ended when it returns. It returns nil when
// ctx ended, and an error only for a configuration that cannot work.
func (a *Aggregator) Run(ctx context.Context) error {
	if err := a.cfg.Validate(); err != nil {
		return err
	}
	if err := a.self.validate(); err != nil {
		return err
	}
	if a.sketchCap < 0 {
		return fmt.Errorf("-hotkey.sketch-capacity %d: must not be negative", a.sketchCap)
	}
	id := a.self.ID
	if id == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("aggregator id: %w", err)
		}
		id = host
	}
	a.mu.Lock()
	a.member = id
	a.mu.Unlock()
	lg := a.lg.With("member", id)

	for {
		reg, err := a.register(ctx, id, lg)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		inc := reg.Member().Incarnation
		lg.Info("registered", "incarnation", inc, "addr", a.self.Addr)
		a.mu.Lock()
		a.reg = reg
		a.mu.Unlock()
		end := a.session(ctx, reg, lg.With("incarnation", inc))
		a.mu.Lock()
		a.reg = nil
		a.mu.Unlock()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
		if err := reg.Close(rctx); err != nil {
			lg.Warn("revoke lease", "incarnation", inc, "err", err)
		}
		cancel()
		if end == endShutdown || ctx.Err() != nil {
			lg.Info("stopped")
			return nil
		}
		if end == endWatchFailed && retry.Sleep(ctx, watchFailedPause) != nil {
			return nil
		}
	}
}

// register registers the aggregator as a new incarnation, retrying with
// retryPause until it succeeds or ctx ends. Only an invalid member (a
// configuration that cannot work) is not retried.
func (a *Aggregator) register(ctx context.Context, id string, lg *slog.Logger) (*cluster.Registration, error) {
	var reg *cluster.Registration
	err := retry.Do(ctx, retryPause, func(_ int, err error, next time.Duration) {
		lg.Warn("register", "err", err, "retry_in", next)
	}, func() error {
		var err error
		reg, err = a.cl.Register(ctx, cluster.Member{ID: id, Role: cluster.RoleAggregator, Addr: a.self.Addr, Version: a.self.Version, HTTPAddr: a.self.HTTPAddr}, a.self.LeaseTTL)
		if errors.Is(err, cluster.ErrInvalid) {
			return retry.Permanent(fmt.Errorf("register aggregator %s: %w", id, err))
		}
		return err
	})
	return reg, err
}

// sessionEnd says why a session ended.
type sessionEnd int

const (
	endShutdown sessionEnd = iota
	endLeaseLost
	endWatchFailed
)

// session runs one incarnation until ctx ends, the lease is lost, or the
// assignment watch fails.
func (a *Aggregator) session(ctx context.Context, reg *cluster.Registration, lg *slog.Logger) sessionEnd {
	inc := reg.Member().Incarnation
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.mu.Lock()
	a.live = true
	a.mu.Unlock()
	box := newMailbox()
	sess := &sessionState{box: box, done: make(chan struct{})}
	a.mu.Lock()
	a.sess = sess
	a.mu.Unlock()
	watchErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		watchErr <- a.cl.WatchAssignment(sctx, func(asg cluster.Assignment) {
			box.put(asg)
			a.mu.Lock()
			a.ready = a.live
			a.mu.Unlock()
		})
	})
	c := &consumer{a: a, inc: inc, reg: reg, lg: lg, box: box, refused: make(map[int]uint64),
		takePause: retryPause.Backoff(), readPause: readPause.Backoff()}
	wg.Go(func() { c.run(sctx) })
	wg.Go(func() { a.runPartitionJobs(sctx, lg) })

	var end sessionEnd
	select {
	case <-ctx.Done():
		end = endShutdown
	case <-reg.Done():
		// Another process may own our partitions from now on: stop
		// answering before anything else.
		a.stopServing()
		a.leaseLosses.Add(1)
		lg.Warn("lease lost: stopped serving every partition")
		end = endLeaseLost
	case err := <-watchErr:
		if ctx.Err() != nil {
			end = endShutdown
			break
		}
		// Without the assignment we cannot tell whether our partitions
		// moved, so we must not answer for them.
		a.stopServing()
		lg.Warn("assignment watch ended: stopped serving every partition", "err", err)
		end = endWatchFailed
	}
	a.mu.Lock()
	a.ready = false
	a.live = false
	a.sess = nil
	a.wanted = nil
	a.unhealthy = false // the next incarnation's key starts without the flag
	a.mu.Unlock()
	cancel()
	wg.Wait()
	close(sess.done)

	// The consumer has ended, so this goroutine is now the only writer of
	// the partitions' state.
	sctx2, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), finalSnapshotTimeout)
	defer cancel2()
	for _, p := range a.owned() {
		if p.getState(a) == stateReleased {
			// Its final snapshot is written; its next owner may have
			// claimed it since, and would only refuse another.
			continue
		}
		if err := a.save(sctx2, p); err != nil {
			a.saveFailed(sctx2, p, err, lg, "final snapshot")
			continue
		}
		lg.Info("final snapshot", "partition", p.id, "epoch", p.epoch, "offset", p.tp.Offset())
	}
	a.mu.Lock()
	for _, p := range a.parts {
		p.state = stateStopped
	}
	clear(a.parts)
	a.mu.Unlock()
	return end
}

// stopServing makes every partition refuse queries at once; their state is
// kept for the final snapshots.
func (a *Aggregator) stopServing() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ready = false
	a.live = false
	for _, p := range a.parts {
		if p.state == stateRestoring || p.state == stateServing {
			p.state = stateStopped
		}
	}
}

// mailbox hands the latest assignment from the watch to the consumer; an
// assignment not yet taken is replaced by a newer one. It also carries
// Release requests, every one of which is answered.
type mailbox struct {
	mu   sync.Mutex
	asg  *cluster.Assignment
	reqs []*releaseReq
	ch   chan struct{}
}

func (m *mailbox) putRelease(r *releaseReq) {
	m.mu.Lock()
	m.reqs = append(m.reqs, r)
	m.mu.Unlock()
	m.wake()
}

func (m *mailbox) takeReleases() []*releaseReq {
	m.mu.Lock()
	defer m.mu.Unlock()
	reqs := m.reqs
	m.reqs = nil
	return reqs
}

func (m *mailbox) wake() {
	select {
	case m.ch <- struct{}{}:
	default:
	}
}

func newMailbox() *mailbox { return &mailbox{ch: make(chan struct{}, 1)} }

func (m *mailbox) put(asg cluster.Assignment) {
	m.mu.Lock()
	m.asg = &asg
	m.mu.Unlock()
	m.wake()
}

func (m *mailbox) take() (cluster.Assignment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.asg == nil {
		return cluster.Assignment{}, false
	}
	asg := *m.asg
	m.asg = nil
	return asg, true
}
