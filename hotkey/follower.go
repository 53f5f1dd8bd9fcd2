package hotkey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/retry"
)

// ErrStale is returned by Follower.Table when the copy of the table was not
// confirmed current recently enough to route or answer with it.
var ErrStale = errors.New("hotkey: split table copy may be stale")

// Acker names the router whose acknowledgements a Follower writes.
type Acker struct {
	// ID is the router's member ID.
	ID string
	// Lease is the router's membership lease (cluster.Member.Incarnation):
	// the ack goes away with the member, and the coordinator accepts it
	// only from the incarnation that is registered. Zero: SetAckLease sets
	// it before Run.
	Lease clientv3.LeaseID
}

// Follower keeps a process's copy of the split table: a router's, which
// routes with it and acknowledges each version it holds, or a queryd's,
// which answers with it.
//
// The copy is a Get and then a watch from that revision, so changes arrive
// at once, and it is confirmed every ConfirmInterval with a linearizable
// Get: a confirmation sent at time s proves that no version newer than the
// copy existed at s. Table returns the copy only while its last
// confirmation is at most MaxStaleness old; otherwise (etcd unreachable, a
// partitioned member, a stuck watch) it fails with ErrStale, and the caller
// refuses to work rather than route or answer with a table that may miss a
// change (see the package documentation for why that bound makes changes
// safe).
type Follower struct {
	cfg   Config
	store *Store
	acker *Acker
	lg    *slog.Logger
	now   func() time.Time

	cur     atomic.Pointer[view]
	seen    atomic.Int64  // store revision of the newest confirmation
	changed chan struct{} // a new version or lease arrived; wakes the acker
	ready   chan struct{} // closed at the first confirmation
	once    sync.Once
	// lease is the router's current membership lease, which SetAckLease
	// changes when the router registers again.
	lease atomic.Int64
}

// view is one state of the copy. Versions only move forward: a table is
// replaced only by one read at a higher mod revision.
type view struct {
	table *Table
	rev   int64 // mod revision of the table key (0: absent)
	// confirmed is the send time, by the injected clock, of the newest Get
	// that returned this table or an older one.
	confirmed time.Time
}

// NewFollower returns a follower of store's table. acker nil means no
// acknowledgements (queryd). now is the clock staleness is measured with
// (nil: time.Now); lg nil discards logs. It does no I/O.
func NewFollower(cfg Config, store *Store, acker *Acker, lg *slog.Logger, now func() time.Time) *Follower {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	f := &Follower{
		cfg:     cfg,
		store:   store,
		acker:   acker,
		lg:      lg,
		now:     now,
		changed: make(chan struct{}, 1),
		ready:   make(chan struct{}),
	}
	if acker != nil {
		f.lease.Store(int64(acker.Lease))
	}
	return f
}

// SetAckLease makes the follower acknowledge on lease, the membership lease
// of the router's current incarnation. After the router registered again,
// it writes the version held again at once: the coordinator waits for the
// acknowledgements of the registered incarnation, so until then it would
// wait for this router in vain.
func (f *Follower) SetAckLease(lease clientv3.LeaseID) {
	f.lease.Store(int64(lease))
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Ready is closed once the table was loaded and confirmed for the first
// time.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Table returns the current copy of the table, or ErrStale if it was not
// confirmed current within MaxStaleness (or not loaded yet). Callers read
// their clock before calling Table, so that the table is at least as new as
// the moment their request is judged at.
func (f *Follower) Table() (*Table, error) {
	v := f.cur.Load()
	if v == nil || v.confirmed.IsZero() {
		return nil, fmt.Errorf("%w: not loaded from etcd yet", ErrStale)
	}
	if age := f.now().Sub(v.confirmed); age > f.cfg.MaxStaleness {
		return nil, fmt.Errorf("%w: version %d was last confirmed with etcd %v ago, over -hotkey.max-staleness=%v", ErrStale, v.table.Version(), age.Round(time.Millisecond), f.cfg.MaxStaleness)
	}
	return v.table, nil
}

// Run follows the table until ctx ends and returns nil then. etcd being
// unreachable or a malformed table is logged and retried: meanwhile Table
// fails with ErrStale once the copy is too old.
func (f *Follower) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { f.confirmLoop(gctx); return nil })
	g.Go(func() error { f.watchLoop(gctx); return nil })
	if f.acker != nil {
		g.Go(func() error { f.ackLoop(gctx); return nil })
	}
	return g.Wait()
}

func (f *Follower) confirmLoop(ctx context.Context) {
	t := time.NewTicker(f.cfg.ConfirmInterval)
	defer t.Stop()
	failing := false
	for {
		err := f.confirm(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			f.lg.Warn("confirm split table", "err", err)
		case err == nil && failing:
			failing = false
			f.lg.Info("split table confirmed again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// confirm reads the table and applies it as confirmed at the send time.
func (f *Follower) confirm(ctx context.Context) error {
	sent := f.now()
	cctx, cancel := context.WithTimeout(ctx, f.cfg.MaxStaleness)
	defer cancel()
	t, rev, storeRev, err := f.store.load(cctx)
	if err != nil {
		return err
	}
	f.apply(t, rev, sent)
	if storeRev > f.seen.Load() {
		f.seen.Store(storeRev)
	}
	return nil
}

// watchLoop applies changes as they happen, between confirmations.
func (f *Follower) watchLoop(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-f.ready:
	}
	for ctx.Err() == nil {
		// The copy reflects the store at least as of both revisions; the
		// larger one keeps a compaction from ending every new watch.
		from := max(f.cur.Load().rev, f.seen.Load()) + 1
		// WithRequireLeader: a watch on a member cut off from the raft
		// leader is ended instead of going silent.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range f.store.cli.Watch(wctx, f.store.tableKey(), clientv3.WithRev(from)) {
			if wr.Err() != nil || wr.Canceled {
				break
			}
			for _, ev := range wr.Events {
				var kvs []*mvccpb.KeyValue
				if ev.Type == mvccpb.PUT {
					kvs = []*mvccpb.KeyValue{ev.Kv}
				}
				t, _, err := f.store.fromKVs(kvs)
				if err != nil {
					f.lg.Error("split table change not applied", "revision", ev.Kv.ModRevision, "err", err)
					continue
				}
				f.apply(t, ev.Kv.ModRevision, time.Time{})
			}
		}
		cancel()
		// The watch ended (compaction, lost leader, etcd gone): the
		// confirmations keep the copy current; watch again after a pause,
		// from what they have read by then.
		_ = retry.Sleep(ctx, f.cfg.ConfirmInterval) // the loop checks ctx
	}
}

// apply installs t (read at mod revision rev) unless the copy is already at
// least that new, and raises the confirmation time to confirmed (zero for
// a watch event, which proves nothing about the present).
func (f *Follower) apply(t *Table, rev int64, confirmed time.Time) {
	var old, nv *view
	for {
		old = f.cur.Load()
		nv = &view{table: t, rev: rev, confirmed: confirmed}
		if old != nil {
			if rev <= old.rev {
				nv.table, nv.rev = old.table, old.rev
			}
			if old.confirmed.After(confirmed) {
				nv.confirmed = old.confirmed
			}
		}
		if f.cur.CompareAndSwap(old, nv) {
			break
		}
	}
	if old == nil || nv.rev != old.rev {
		f.lg.Info("split table loaded", "version", nv.table.Version(), "splits", len(nv.table.splits))
		select {
		case f.changed <- struct{}{}:
		default:
		}
	}
	if !nv.confirmed.IsZero() {
		f.once.Do(func() { close(f.ready) })
	}
}

// ackLoop writes the version held whenever it or the lease changes, and
// retries every ConfirmInterval until the write succeeds.
func (f *Follower) ackLoop(ctx context.Context) {
	t := time.NewTicker(f.cfg.ConfirmInterval)
	defer t.Stop()
	var acked uint64
	var ackedLease clientv3.LeaseID
	done, failing := false, false
	for {
		lease := clientv3.LeaseID(f.lease.Load())
		if v := f.cur.Load(); v != nil && (!done || v.table.Version() != acked || lease != ackedLease) {
			version := v.table.Version()
			cctx, cancel := context.WithTimeout(ctx, f.cfg.MaxStaleness)
			err := f.store.WriteAck(cctx, f.acker.ID, version, lease)
			cancel()
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				if !failing {
					f.lg.Warn("acknowledge split table", "version", version, "router", f.acker.ID, "err", err)
				}
				failing = true
			default:
				acked, ackedLease, done, failing = version, lease, true, false
				f.lg.Debug("acknowledged split table", "version", version, "router", f.acker.ID)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-f.changed:
		case <-t.C:
		}
	}
}
