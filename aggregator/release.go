package aggregator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/snapshot"
)

// ErrWrongEpoch: a Release named an epoch other than the one this
// aggregator holds the partition at; the caller's view of the assignment
// is not this aggregator's.
var ErrWrongEpoch = errors.New("aggregator: partition held at another epoch")

// leavePoll is how often Leave looks whether every partition has moved.
const leavePoll = 20 * time.Millisecond

// Released is the outcome of Release: the final snapshot's offset, and
// when the partition stopped being served.
type Released struct {
	Offset  string
	Stopped time.Time
}

// releaseReq asks the consumer to release a partition; only the consumer
// writes partition state.
type releaseReq struct {
	p     int
	epoch uint64
	reply chan releaseResult // buffered: the consumer never waits
}

type releaseResult struct {
	r   released
	err error
}

// sessionState is what Release needs of the current incarnation.
type sessionState struct {
	box  *mailbox
	done chan struct{} // closed once the consumer has ended
}

// Release is the first half of a planned handoff: the partition stops
// being served at once, its consumer stops applying it, and a final
// snapshot is written under epoch; the returned offset is where the next
// owner's replay starts. Release at the epoch of an already released
// partition answers the same again (the coordinator may retry).
//
// A released partition is never served again by this incarnation at that
// epoch, unless no new assignment arrives within
// -aggregator.release-timeout (the coordinator died between Release and
// its assignment write): then the partition is taken back, through the
// same claim-load-replay as any other take.
//
// Errors: ErrNotServing when the partition is not served here (not held,
// still restoring, failed, or the lease is not certainly alive: only what
// was served can be handed over live), ErrWrongEpoch for another epoch,
// snapshot.ErrStaleEpoch when a newer owner has already claimed it (the
// partition is dropped), other errors when the final snapshot could not
// be written (the partition stays released: the next owner replays from
// the previous snapshot).
func (a *Aggregator) Release(ctx context.Context, p int, epoch uint64) (Released, error) {
	if p < 0 {
		return Released{}, fmt.Errorf("%w: partition %d is negative", ErrInvalid, p)
	}
	if err := a.checkLease(); err != nil {
		return Released{}, err
	}
	a.mu.RLock()
	s := a.sess
	a.mu.RUnlock()
	if s == nil {
		return Released{}, fmt.Errorf("%w: partition %d: no live incarnation", ErrNotServing, p)
	}
	req := &releaseReq{p: p, epoch: epoch, reply: make(chan releaseResult, 1)}
	s.box.putRelease(req)
	select {
	case res := <-req.reply:
		return Released{Offset: res.r.offset, Stopped: res.r.at}, res.err
	case <-s.done:
		return Released{}, fmt.Errorf("%w: partition %d: the incarnation ended", ErrNotServing, p)
	case <-ctx.Done():
		return Released{}, ctx.Err()
	}
}

// checkLease refuses to act for any partition once the lease is not
// certainly alive: after a pause longer than the lease TTL, another owner
// may already serve our partitions, and the keepalive goroutine may not
// have run yet to say so.
func (a *Aggregator) checkLease() error {
	a.mu.RLock()
	reg, member := a.reg, a.member
	a.mu.RUnlock()
	if reg == nil {
		return fmt.Errorf("%w: member %s is not registered", ErrNotServing, member)
	}
	if until := reg.ValidUntil(); !time.Now().Before(until) {
		return fmt.Errorf("%w: the lease of member %s may have expired (it was certainly valid only until %s)", ErrNotServing, member, until.Format(time.RFC3339Nano))
	}
	return nil
}

// serveReleases answers the pending Release requests.
func (c *consumer) serveReleases(ctx context.Context) {
	for _, req := range c.box.takeReleases() {
		r, err := c.releaseOne(ctx, req.p, req.epoch)
		req.reply <- releaseResult{r: r, err: err}
	}
}

func (c *consumer) releaseOne(ctx context.Context, id int, epoch uint64) (released, error) {
	a := c.a
	p := a.partition(id)
	if p == nil {
		return released{}, fmt.Errorf("%w: partition %d is not held by member %s", ErrNotServing, id, a.memberID())
	}
	if p.epoch != epoch {
		return released{}, fmt.Errorf("%w: partition %d is held at epoch %d, release asked for %d", ErrWrongEpoch, id, p.epoch, epoch)
	}
	a.mu.Lock()
	switch p.state {
	case stateRestoring, stateFailed, stateStopped:
		// Only what was served can be handed over live: the next owner of
		// a released partition serves as soon as it has loaded it.
		st := p.state
		a.mu.Unlock()
		return released{}, fmt.Errorf("%w: partition %d is %s on member %s", ErrNotServing, id, st, a.memberID())
	case stateReleased:
		if p.released.saved {
			r := p.released
			a.mu.Unlock()
			return r, nil
		}
	default:
		// Queries are refused from here on; the consumer (us) no longer
		// reads or applies the partition.
		p.state = stateReleased
		p.released = released{offset: p.tp.Offset(), at: a.now()}
	}
	a.mu.Unlock()

	c.saves.waitFor(id)
	// Not cut short by shutdown: a released partition without its final
	// snapshot costs its next owner a longer replay.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalSnapshotTimeout)
	defer cancel()
	if err := a.save(sctx, p); err != nil {
		if errors.Is(err, snapshot.ErrStaleEpoch) {
			a.fencedWrites.Add(1)
			a.drop(p)
			c.lg.Warn("release fenced: a newer owner claimed the partition; dropped it", "partition", id, "epoch", epoch, "err", err)
			return released{}, err
		}
		a.snapshotErrors.Add(1)
		c.lg.Warn("release: final snapshot failed; the partition stays released", "partition", id, "epoch", epoch, "err", err)
		return released{}, err
	}
	a.mu.Lock()
	p.released.saved = true
	r := p.released
	a.mu.Unlock()
	a.m.releases.Inc()
	c.lg.Info("released partition for a handoff", "partition", id, "epoch", epoch, "offset", r.offset)
	return r, nil
}

// reclaimStale drops the partitions released longer than
// -aggregator.release-timeout ago whose assignment has not changed: the
// coordinator that asked for the release is gone, so takeMissing takes
// them again (Claim at an equal epoch is allowed) rather than leave them
// unserved.
func (c *consumer) reclaimStale() {
	a := c.a
	now := a.now()
	for _, p := range a.owned() {
		a.mu.RLock()
		st, r := p.state, p.released
		a.mu.RUnlock()
		if st != stateReleased || now.Sub(r.at) < a.cfg.ReleaseTimeout {
			continue
		}
		a.drop(p)
		c.lg.Warn("released partition was not reassigned in time; taking it back", "partition", p.id, "epoch", p.epoch, "released_at", r.at, "release_timeout", a.cfg.ReleaseTimeout)
	}
}

// Leave is the first step of a graceful shutdown: it marks this aggregator
// as leaving in etcd, so that the coordinator hands every partition over
// live (Release, then a new owner), and waits until none is held, at most
// -aggregator.leave-timeout or until ctx ends. Queries keep being answered
// for the partitions not moved yet. It returns at once when nobody could
// take the partitions: no other aggregator that is not leaving, or no
// coordinator leading. Run then stops as usual (final snapshots of what is
// left, lease revoked).
func (a *Aggregator) Leave(ctx context.Context) error {
	if a.cfg.LeaveTimeout <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.LeaveTimeout)
	defer cancel()
	a.mu.RLock()
	reg, member := a.reg, a.member
	a.mu.RUnlock()
	if reg == nil || len(a.owned()) == 0 {
		return nil
	}
	ms, err := a.cl.Members(ctx, cluster.RoleAggregator)
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	others := 0
	for _, m := range ms {
		if m.ID != member && !m.Leaving {
			others++
		}
	}
	leader, err := a.cl.Leader(ctx)
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if others == 0 || leader == "" {
		a.lg.Info("leaving without handing partitions over: nobody could take them", "member", member, "other_aggregators", others, "leader", leader)
		return nil
	}
	if err := reg.SetLeaving(ctx); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	a.lg.Info("leaving: waiting for the partitions to be handed over", "member", member, "partitions", len(a.owned()))
	t := time.NewTicker(leavePoll)
	defer t.Stop()
	for {
		if len(a.owned()) == 0 {
			a.lg.Info("left: every partition was handed over", "member", member)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("leave: %d partitions still held: %w", len(a.owned()), ctx.Err())
		case <-reg.Done():
			return nil
		case <-t.C:
		}
	}
}
