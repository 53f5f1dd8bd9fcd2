package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

const (
	// moveParallelism bounds the Release calls in flight: the moves of a
	// join or a drain proceed together instead of one after another.
	moveParallelism = 16
	// handoffHistory is how many handoff records etcd keeps.
	handoffHistory = 1000
	// trackPoll is how often the new owners of recent handoffs are asked
	// whether they serve yet; trackFor is how long they are asked.
	trackPoll = 200 * time.Millisecond
	trackFor  = 2 * time.Minute
)

// outcome is how one partition's old owner stopped.
type outcome struct {
	planned bool
	stopped time.Time
	offset  string // of the final snapshot, when planned
}

// execute carries out a plan: the live old owners of the moved partitions
// release them first (concurrently, each bounded by -coordinator.release-
// timeout), then next is written together with u in one leader
// transaction, then the handoffs are recorded and handed to the tracker.
//
// Before asking any aggregator to release anything, the leader checks that
// it still leads: one that was paused past its session and woke up must not
// stop partitions that nobody would then be assigned. Once the releases
// are under way, execute finishes even if the term's context ends: the
// released partitions are unserved until this write lands (or until their
// owners' release timeout), and if this coordinator is no longer the
// leader etcd refuses the write anyway. Both refusals are counted and
// logged: they are how a leader that was paused learns that it was
// deposed.
func (t *term) execute(ctx context.Context, next cluster.Assignment, moved []int, changed bool, u cluster.Update) error {
	c := t.c
	wctx := context.WithoutCancel(ctx)
	cctx, cancel := context.WithTimeout(wctx, commitTimeout)
	defer cancel()
	var outcomes map[int]outcome
	if changed {
		if err := t.l.Check(cctx); err != nil {
			return t.refused(err, next.Version)
		}
		t.track.settle(cctx, t.cur, moved)
		outcomes = t.releaseAll(wctx, moved)
		for p, o := range outcomes {
			if o.planned {
				// The new owner serves as soon as it has loaded this.
				next.Owners[p].Released = o.offset
			}
		}
		u.Assignment = &next
	}
	if u.Now.IsZero() {
		u.Now = time.Now()
	}
	if err := t.l.Commit(cctx, u); err != nil {
		return t.refused(err, next.Version)
	}
	if !changed {
		return nil
	}
	c.assignmentChanges.Add(1)
	addr := make(map[string]string, len(t.members))
	for _, m := range t.members {
		addr[m.ID] = m.Addr
	}
	var hs []cluster.Handoff
	for _, p := range moved {
		o, ok := outcomes[p]
		if !ok {
			continue // it had no owner: nothing was handed over
		}
		h := cluster.Handoff{
			Partition: p,
			From:      t.cur.Owners[p].Member,
			To:        next.Owners[p].Member,
			Epoch:     next.Owners[p].Epoch,
			Planned:   o.planned,
			Stopped:   o.stopped.UTC(),
		}
		if h.Planned {
			c.plannedHandoffs.Add(1)
		} else {
			c.unplannedHandoffs.Add(1)
		}
		c.log.Info("handoff", "partition", p, "from", h.From, "to", h.To, "epoch", h.Epoch, "planned", h.Planned)
		hs = append(hs, h)
	}
	if len(hs) == 0 {
		return nil
	}
	hs, drop := t.track.add(hs, addr)
	if err := t.l.RecordHandoffs(cctx, hs, drop, handoffHistory); err != nil {
		// The assignment is written; only the report is missing.
		c.log.Warn("record handoffs", "handoffs", len(hs), "err", err)
	}
	return nil
}

// refused handles a failed leader check or write of the assignment of
// version.
func (t *term) refused(err error, version uint64) error {
	c := t.c
	if errors.Is(err, cluster.ErrNotLeader) {
		c.refusedWrites.Add(1)
		c.log.Error("deposed: assignment change refused, this coordinator is not the leader any more", "member", c.self.ID, "version", version)
		return err
	}
	t.stale = true
	return fmt.Errorf("write assignment %d: %w (outcome unknown: it is read back before the next plan)", version, err)
}

// releaseAll asks the live old owner of every moved partition to release
// it, and returns how each old owner stopped. An owner that is gone (or
// that fails to release) makes an unplanned handoff: its stop time is when
// its loss was noticed (or when the release was given up).
func (t *term) releaseAll(ctx context.Context, moved []int) map[int]outcome {
	live := make(map[ownerKey]cluster.Member, len(t.members))
	for _, m := range t.members {
		live[ownerKey{m.ID, m.Incarnation}] = m
	}
	now := time.Now()
	out := make(map[int]outcome, len(moved))
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(moveParallelism)
	for _, p := range moved {
		if p >= len(t.cur.Owners) || t.cur.Owners[p].Member == "" {
			continue
		}
		old := t.cur.Owners[p]
		k := ownerKey{old.Member, old.Incarnation}
		m, ok := live[k]
		if !ok {
			stopped := now
			if at, ok := t.gone[k]; ok {
				stopped = at
			}
			out[p] = outcome{stopped: stopped}
			continue
		}
		g.Go(func() error {
			o := t.release(ctx, m, p, old.Epoch)
			mu.Lock()
			out[p] = o
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait() // failures become unplanned outcomes
	return out
}

// release asks m to release p at epoch.
func (t *term) release(ctx context.Context, m cluster.Member, p int, epoch uint64) outcome {
	c := t.c
	cl, err := c.aggregator(m.Addr)
	if err == nil {
		rctx, cancel := context.WithTimeout(ctx, c.cfg.ReleaseTimeout)
		var resp *clickaggv1.ReleaseResponse
		resp, err = cl.Release(rctx, &clickaggv1.ReleaseRequest{Partition: int32(p), Epoch: epoch})
		cancel()
		if err == nil {
			return outcome{planned: true, stopped: resp.GetStopped().AsTime(), offset: resp.GetOffset()}
		}
	}
	c.failedReleases.Add(1)
	c.log.Warn("release failed; moving the partition unplanned", "partition", p, "member", m.ID, "epoch", epoch, "err", err)
	return outcome{stopped: time.Now()}
}

// tracked is a handoff whose new owner has not reported serving yet.
type tracked struct {
	h     cluster.Handoff
	addr  string    // the new owner's address
	since time.Time // when tracking started
}

// tracker completes the handoff records with the time each new owner
// started serving (its serving_since), asking the new owners until they
// report it or trackFor has passed.
//
// A handoff is from the last owner that served the partition to the next
// one that serves it. When a partition moves again before its new owner
// served it (it was still restoring, or had not even claimed it), that
// owner was never more than a step: its record is dropped and the next
// record carries its From and Stopped (and is planned only if both moves
// were), so that the pause covers the whole time the partition had no
// serving owner.
type tracker struct {
	c *Coordinator
	l *cluster.Leadership

	mu      sync.Mutex
	pending map[int]tracked // by partition: only the latest move counts
}

func newTracker(c *Coordinator, l *cluster.Leadership) *tracker {
	return &tracker{c: c, l: l, pending: map[int]tracked{}}
}

// add starts tracking hs (new owners' addresses in addr) and returns the
// records to store, merged with the moves they supersede, and the
// superseded records to drop.
func (tr *tracker) add(hs []cluster.Handoff, addr map[string]string) (put, drop []cluster.Handoff) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	now := time.Now()
	for _, h := range hs {
		if old, ok := tr.pending[h.Partition]; ok && old.h.Epoch < h.Epoch {
			h.From, h.Planned = old.h.From, old.h.Planned && h.Planned
			if old.h.Stopped.Before(h.Stopped) {
				h.Stopped = old.h.Stopped
			}
			drop = append(drop, old.h)
		}
		tr.pending[h.Partition] = tracked{h: h, addr: addr[h.To], since: now}
		put = append(put, h)
	}
	return put, drop
}

// settle asks the current owners of the partitions about to move whether
// they served them, for the moves still tracked: an owner that served only
// briefly between two polls is recorded as having served.
func (tr *tracker) settle(ctx context.Context, cur cluster.Assignment, moved []int) {
	tr.mu.Lock()
	byAddr := map[string]bool{}
	for _, p := range moved {
		if x, ok := tr.pending[p]; ok && p < len(cur.Owners) && x.h.Epoch == cur.Owners[p].Epoch && x.addr != "" {
			byAddr[x.addr] = true
		}
	}
	tr.mu.Unlock()
	if len(byAddr) > 0 {
		tr.complete(ctx, byAddr)
	}
}

func (tr *tracker) run(ctx context.Context) error {
	tr.resume(ctx)
	tick := time.NewTicker(trackPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			tr.poll(ctx)
		}
	}
}

// resume picks up the recent records a previous leader left incomplete.
func (tr *tracker) resume(ctx context.Context) {
	hs, err := tr.c.cl.Handoffs(ctx)
	if err != nil {
		tr.c.log.Warn("read handoffs", "err", err)
		return
	}
	ms, err := tr.c.cl.Members(ctx, cluster.RoleAggregator)
	if err != nil {
		tr.c.log.Warn("read members", "err", err)
		return
	}
	addr := map[string]string{}
	for _, m := range ms {
		addr[m.ID] = m.Addr
	}
	now := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, h := range hs { // oldest first: the latest of a partition wins
		if old, ok := tr.pending[h.Partition]; ok && old.h.Epoch > h.Epoch {
			continue
		}
		delete(tr.pending, h.Partition)
		if h.Serving.IsZero() && h.To != "" && now.Sub(h.Stopped) < trackFor {
			tr.pending[h.Partition] = tracked{h: h, addr: addr[h.To], since: now}
		}
	}
}

// poll forgets the moves tracked for too long and asks the new owners of
// the others.
func (tr *tracker) poll(ctx context.Context) {
	now := time.Now()
	byAddr := map[string]bool{}
	tr.mu.Lock()
	for p, x := range tr.pending {
		if now.Sub(x.since) > trackFor || x.h.To == "" || x.addr == "" {
			delete(tr.pending, p)
			continue
		}
		byAddr[x.addr] = true
	}
	tr.mu.Unlock()
	if len(byAddr) > 0 {
		tr.complete(ctx, byAddr)
	}
}

// complete asks the aggregators at addrs for their status, and records the
// tracked moves to them that they serve.
func (tr *tracker) complete(ctx context.Context, addrs map[string]bool) {
	c := tr.c
	var (
		mu      sync.Mutex
		answers = map[string]*clickaggv1.PartitionStatusResponse{}
		g       errgroup.Group
	)
	g.SetLimit(statusParallelism)
	for addr := range addrs {
		g.Go(func() error {
			resp, err := c.partitionStatus(ctx, addr)
			if err != nil {
				return nil // asked again at the next poll
			}
			mu.Lock()
			answers[addr] = resp
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	var done []cluster.Handoff
	tr.mu.Lock()
	for addr, resp := range answers {
		for _, ps := range resp.GetPartitions() {
			p := int(ps.GetPartition())
			x, ok := tr.pending[p]
			if !ok || x.addr != addr || resp.GetMember() != x.h.To || ps.GetEpoch() != x.h.Epoch || ps.GetServingSince() == nil {
				continue
			}
			x.h.Serving = ps.GetServingSince().AsTime().UTC()
			done = append(done, x.h)
			delete(tr.pending, p)
			c.m.handoffPause.Observe(x.h.Pause().Seconds())
			c.log.Info("handoff complete", "partition", p, "from", x.h.From, "to", x.h.To, "epoch", x.h.Epoch, "planned", x.h.Planned, "pause", x.h.Pause())
		}
	}
	tr.mu.Unlock()
	if len(done) == 0 {
		return
	}
	if err := tr.l.RecordHandoffs(ctx, done, nil, handoffHistory); err != nil {
		c.log.Warn("record handoffs", "handoffs", len(done), "err", err)
	}
}
