package aggregator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/persecond"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
)

// state is where an owned partition is in its life:
//
//	claim+load ─▶ restoring ──offset reaches the log end seen after load──▶ serving
//	                 │                                                       │
//	                 └──────────── entry does not decode ─▶ failed ◀──────────┘
//	restoring, serving, failed ──Release (final snapshot)──▶ released
//	released ──assignment moves it──▶ stopped (dropped, nothing written)
//	released ──no new assignment within -aggregator.release-timeout──▶ dropped, taken again
//	any ──assignment moved it, snapshot fenced, lease lost, shutdown──▶ stopped (dropped)
//
// Only serving partitions answer queries. Failed partitions are no longer
// read but still snapshotted (their state is a valid prefix of the log), so
// that an operator can inspect the corrupt entry after the last offset.
// Released partitions are neither read nor written again: their final
// snapshot is what the next owner loads, and a later write by this owner
// would only be refused by the next owner's fence.
type state int

const (
	stateRestoring state = iota
	stateServing
	stateFailed
	stateReleased
	stateStopped
)

func (s state) String() string {
	switch s {
	case stateRestoring:
		return "restoring"
	case stateServing:
		return "serving"
	case stateFailed:
		return "failed"
	case stateReleased:
		return "released"
	default:
		return "stopped"
	}
}

// partition is one owned partition.
type partition struct {
	id    int
	epoch uint64
	tp    *tally.Partition

	// Only the consumer (or, after it ended, the session) uses these.
	target   string    // the log's last entry ID seen right after the load
	nextSave time.Time // by the injected clock

	// rate counts the events applied, for the load report.
	rate *persecond.Counter
	// heavy finds the partition's heaviest ads for the load report, which
	// the coordinator splits hot ads by. It is fed only while the partition
	// serves (see consumer.apply) and goes with the partition.
	heavy *hotkey.Sketch

	// Guarded by Aggregator.mu.
	state        state
	lastSnapshot time.Time // when the store last accepted a snapshot
	servingSince time.Time // when it last became serving; zero before
	released     released  // set when state is stateReleased
}

// released is the outcome of a Release: where the partition stopped and
// when. A repeated Release (the coordinator retrying) gets the same answer.
type released struct {
	offset string
	at     time.Time // by the injected clock
	saved  bool      // the final snapshot was written
}

// errBadSnapshot marks a stored snapshot that cannot be restored: taking the
// partition again would fail the same way.
var errBadSnapshot = errors.New("snapshot cannot be restored")

// readPause paces the XREADs after one failed: about a second, jittered
// so that the aggregators of a Redis that fails do not retry it in step.
var readPause = retry.Policy{Min: time.Second, Max: time.Second}

// consumer is the one goroutine of an incarnation that writes partition
// state: it follows the assignment, takes and releases partitions, reads
// their logs, applies entries and writes snapshots.
type consumer struct {
	a   *Aggregator
	inc int64
	reg *cluster.Registration
	lg  *slog.Logger
	box *mailbox
	// trouble follows failing takes and reads (see checkHealth).
	trouble trouble

	want    map[int]uint64 // partition → epoch the assignment gives us
	handed  map[int]string // partition → offset its previous owner released it at
	refused map[int]uint64 // partition → epoch we must not try again
	retryAt time.Time      // wall clock: next attempt after a transient error
	// takePause paces the takes after a transient error, readPause the
	// reads after a failed one.
	takePause, readPause *retry.Backoff

	// pending is the XREAD in flight, issued before the previous one is
	// applied so that Redis and the network work while we apply; nil when
	// none is.
	pending *read
	// bufs hands each apply worker its buffer of an entry's ad_ids (for
	// the sketch), so that applying allocates nothing per entry.
	bufs chan *[]string
	// saves are the periodic snapshots being written in the background.
	saves saves
}

// read is one XREAD of several partitions' logs. It remembers which
// partition object it read for and the offset it read after: its entries
// are applied only if both still hold when it is applied. A partition
// dropped and taken again since (restored from the store at a new epoch),
// or whose apply stopped at a corrupt entry, is not the state these
// entries follow, and applying them would count a gap or a repeat.
type read struct {
	after map[int]string
	parts map[int]*partition
	done  chan struct{} // closed when res and err are set
	res   map[int][]partlog.Entry
	err   error
}

// startRead issues an XREAD in its own goroutine.
func (c *consumer) startRead(ctx context.Context, after map[int]string, parts map[int]*partition) *read {
	r := &read{after: after, parts: parts, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.res, r.err = c.a.log.Read(ctx, after, c.a.cfg.ReadCount, c.a.cfg.ReadBlock)
	}()
	return r
}

// follows reports whether r's entries of partition id follow pt's state.
func (r *read) follows(id int, pt *partition) bool {
	return pt != nil && r.parts[id] == pt && r.after[id] == cmp.Or(pt.tp.Offset(), "0")
}

// next returns the offsets of the read that follows r: for each partition
// being consumed, the last entry r read of it when r's entries follow its
// state (they are about to be applied), and its own offset otherwise.
func (c *consumer) next(r *read) (map[int]string, map[int]*partition) {
	after, parts := c.a.readOffsets()
	for id, pt := range parts {
		if !r.follows(id, pt) {
			continue
		}
		if es := r.res[id]; len(es) > 0 {
			after[id] = es[len(es)-1].ID
		}
	}
	return after, parts
}

func (c *consumer) run(ctx context.Context) {
	a := c.a
	c.bufs = make(chan *[]string, a.cfg.applyParallelism())
	for range cap(c.bufs) {
		c.bufs <- new([]string)
	}
	defer func() {
		// Nothing may outlive the consumer: the session's final snapshots
		// must be the last writes of each partition, and the read would
		// only be thrown away.
		if c.pending != nil {
			<-c.pending.done
		}
		c.saves.wait()
		c.finishSaves(ctx)
	}()
	for ctx.Err() == nil {
		if asg, ok := c.box.take(); ok {
			c.reconcile(ctx, asg)
		}
		c.finishSaves(ctx)
		c.serveReleases(ctx)
		c.reclaimStale()
		c.takeMissing(ctx)
		c.checkHealth(ctx)
		if c.pending == nil {
			after, parts := a.readOffsets()
			if len(after) == 0 {
				c.trouble.readFailing = time.Time{} // nothing to read
				// Nothing to read: wake up for a new assignment, a retry
				// or a snapshot of a failed partition.
				t := time.NewTimer(a.cfg.ReadBlock)
				select {
				case <-ctx.Done():
				case <-c.box.ch:
				case <-t.C:
				}
				t.Stop()
				if ctx.Err() == nil {
					c.snapshotDue(ctx)
				}
				continue
			}
			c.pending = c.startRead(ctx, after, parts)
		}
		r := c.pending
		c.pending = nil
		<-r.done
		if r.err != nil {
			if ctx.Err() != nil {
				return
			}
			c.lg.Warn("read partition logs", "partitions", len(r.after), "err", r.err)
			c.trouble.readFailing = since(c.trouble.readFailing, time.Now())
			_ = retry.Sleep(ctx, c.readPause.Next()) // the loop checks ctx
			continue
		}
		c.trouble.readFailing = time.Time{}
		c.readPause.Reset()
		if len(r.res) > 0 && ctx.Err() == nil {
			// The next read goes out before this one is applied. An empty
			// read does not start one: the control steps above run first,
			// so a partition just taken is in the very next read.
			after, parts := c.next(r)
			c.pending = c.startRead(ctx, after, parts)
		}
		c.applyRead(ctx, r)
		c.promote()
		if ctx.Err() == nil {
			c.snapshotDue(ctx)
		}
	}
}

// applyChunk is how many partitions are applied between two looks at the
// pending Release requests. One read can hold a lot to apply (a replay of
// many partitions); a live handoff, whose partition has no serving owner
// until it is answered, does not wait for all of it.
const applyChunk = 8

// applyRead applies r's entries, partitions in parallel: each partition's
// state is written by one goroutine at a time, and no two partitions share
// any state that apply writes.
func (c *consumer) applyRead(ctx context.Context, r *read) {
	ids := slices.Sorted(maps.Keys(r.res))
	for len(ids) > 0 {
		chunk := ids[:min(applyChunk, len(ids))]
		ids = ids[len(chunk):]
		var wg sync.WaitGroup
		for _, id := range chunk {
			buf := <-c.bufs
			wg.Go(func() {
				defer func() { c.bufs <- buf }()
				c.apply(r, id, buf)
			})
		}
		wg.Wait()
		c.serveReleases(ctx)
	}
}

// reconcile releases the partitions the assignment no longer gives this
// incarnation, or gives at another epoch; takeMissing takes the others.
func (c *consumer) reconcile(ctx context.Context, asg cluster.Assignment) {
	a := c.a
	want := make(map[int]uint64)
	handed := make(map[int]string)
	for p, o := range asg.Owners {
		if o.Member == a.memberID() && o.Incarnation == c.inc {
			want[p] = o.Epoch
			if o.Released != "" {
				handed[p] = o.Released
			}
		}
	}
	c.want, c.handed = want, handed
	a.setWanted(want)
	maps.DeleteFunc(c.refused, func(p int, e uint64) bool {
		we, ok := want[p]
		return !ok || we != e
	})
	for _, p := range a.owned() {
		if e, ok := want[p.id]; !ok || e != p.epoch {
			// A new epoch for us means the partition may have had another
			// owner in between, who may have trimmed the log past our
			// offset: start again from the store.
			c.release(ctx, p, asg.Version)
		}
	}
	c.retryAt = time.Time{}
}

// release stops serving p, tries a final snapshot (refused if the new
// owner already claimed the partition, which is fine) and drops p. A
// partition released by Release was written for the last time then.
func (c *consumer) release(ctx context.Context, p *partition, version uint64) {
	a := c.a
	if p.getState(a) == stateReleased {
		a.drop(p)
		c.lg.Info("handed partition over", "partition", p.id, "epoch", p.epoch, "offset", p.released.offset, "assignment", version)
		return
	}
	a.drop(p)
	c.saves.waitFor(p.id)
	// Not cut short by shutdown: the session's final snapshots no longer
	// see p.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalSnapshotTimeout)
	defer cancel()
	err := a.save(sctx, p)
	switch {
	case err == nil:
		c.lg.Info("released partition", "partition", p.id, "epoch", p.epoch, "offset", p.tp.Offset(), "assignment", version)
	case errors.Is(err, snapshot.ErrStaleEpoch):
		a.fencedWrites.Add(1)
		// Logged as fenced like every other refused write, so that one
		// search finds every write a deposed owner attempted.
		c.lg.Info("released partition; final snapshot fenced: its new owner had already claimed it", "partition", p.id, "epoch", p.epoch, "assignment", version)
	default:
		a.snapshotErrors.Add(1)
		c.lg.Warn("released partition without a final snapshot", "partition", p.id, "epoch", p.epoch, "assignment", version, "err", err)
	}
}

// takeParallelism bounds the partitions taken at once: a join takes a
// share of every partition, and each take waits for Redis (claim, load,
// lag) more than it computes.
const takeParallelism = 8

// takeMissing takes every partition the assignment gives us that we do not
// hold yet, several at a time.
func (c *consumer) takeMissing(ctx context.Context) {
	if time.Now().Before(c.retryAt) {
		return
	}
	a := c.a
	var todo []int
	for _, p := range slices.Sorted(maps.Keys(c.want)) {
		if re, ok := c.refused[p]; a.holds(p) || ok && re == c.want[p] {
			continue
		}
		todo = append(todo, p)
	}
	if len(todo) == 0 {
		c.trouble.takeFailing = time.Time{}
	}
	errs := make([]error, len(todo))
	var g errgroup.Group
	g.SetLimit(takeParallelism)
	for i, p := range todo {
		g.Go(func() error {
			errs[i] = a.take(ctx, p, c.want[p], c.handed[p], c.lg)
			return nil
		})
	}
	_ = g.Wait() // the takes report through errs
	again := false
	for i, p := range todo {
		e, err := c.want[p], errs[i]
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return
		case errors.Is(err, snapshot.ErrStaleEpoch):
			// A newer owner has claimed it; a newer assignment will come.
			c.refused[p] = e
			c.lg.Warn("claim refused: partition has a newer owner", "partition", p, "epoch", e, "err", err)
		case errors.Is(err, errBadSnapshot):
			c.refused[p] = e
			c.lg.Error("cannot take partition: its snapshot does not restore", "partition", p, "epoch", e, "err", err)
		default:
			again = true
			c.lg.Warn("take partition", "partition", p, "epoch", e, "err", err)
		}
	}
	if again {
		c.trouble.takeFailing = since(c.trouble.takeFailing, time.Now())
		d := c.takePause.Next()
		c.retryAt = time.Now().Add(d)
		c.lg.Warn("retrying the partitions not taken", "retry_in", d)
		return
	}
	c.trouble.takeFailing = time.Time{}
	c.takePause.Reset()
}

// apply applies r's entries of partition p in order, if they follow its
// state. ads is the caller's buffer.
func (c *consumer) apply(r *read, p int, ads *[]string) {
	a := c.a
	pt := a.partition(p)
	if !r.follows(p, pt) {
		return
	}
	entries := r.res[p]
	s := pt.getState(a)
	if s != stateRestoring && s != stateServing {
		return
	}
	// The sketch measures how fast clicks of an ad arrive now, in processing
	// time. A restoring partition replays a backlog (up to a snapshot
	// interval after a crash, all of its log on a first start) as fast as
	// it can, which would report its ads many times hotter than they are
	// and make every handoff look like a hot key; so replay is not fed. A
	// serving partition that lags (a burst, or the short catch-up after a
	// live handoff) is fed as it applies: that backlog is bounded by its
	// lag, and it is load this aggregator does carry.
	serving := s == stateServing
	now := a.now()
	var events int64
	before := pt.tp.Stats()
	defer func() {
		pt.rate.Add(a.now(), events)
		a.m.countApplied(before, pt.tp.Stats())
	}()
	for _, e := range entries {
		var err error
		*ads, err = pt.tp.ApplyEncoded(e.ID, e.Data, (*ads)[:0])
		if err != nil {
			// Skipping the entry would silently lose its clicks; stopping
			// keeps the state a true prefix of the log.
			a.corruptEntries.Add(1)
			a.setState(pt, stateFailed)
			c.lg.Error("corrupt log entry: partition no longer served", "partition", p, "epoch", pt.epoch, "offset", e.ID, "after", pt.tp.Offset(), "err", err)
			return
		}
		if serving {
			pt.heavy.AddAds(now, *ads)
			if ms, ok := idMillis(e.ID); ok {
				a.m.freshness.Observe(max(0, now.Sub(time.UnixMilli(ms)).Seconds()))
			}
		}
		events += int64(len(*ads))
	}
	clear(*ads) // they alias the entries' bytes
}

// promote moves restoring partitions that have replayed up to the log end
// seen after their load to serving.
func (c *consumer) promote() {
	a := c.a
	for _, p := range a.owned() {
		if p.getState(a) != stateRestoring || partlog.CompareIDs(p.tp.Offset(), p.target) < 0 {
			continue
		}
		if a.casState(p, stateRestoring, stateServing) {
			a.mu.Lock()
			p.servingSince = a.now()
			a.mu.Unlock()
			c.lg.Info("partition serving", "partition", p.id, "epoch", p.epoch, "offset", p.tp.Offset())
		}
	}
}

// take claims partition p at epoch e, loads its snapshot and adds it as
// restoring, or serving when the log holds nothing after the snapshot. The
// claim comes first: once it is done, every older owner's writes are
// refused, so the snapshot loaded next cannot be overwritten by one.
//
// handed is the offset the previous owner released p at in a live handoff
// ("" if it did not). When the loaded snapshot is exactly that one, p
// serves at once: it holds what the previous owner served until the moment
// it stopped, so answers neither go back in time nor miss anything the
// previous owner counted, and the replay of what came after only makes them
// fresher. Any other snapshot may be older than what was served (the owner
// died between snapshots), so the replay must reach the log end first.
// take may run for several partitions at once.
func (a *Aggregator) take(ctx context.Context, p int, e uint64, handed string, lg *slog.Logger) error {
	if err := a.store.Claim(ctx, p, e); err != nil {
		return fmt.Errorf("claim partition %d at epoch %d: %w", p, e, err)
	}
	var tp *tally.Partition
	ld, err := a.store.Load(ctx, p)
	switch {
	case errors.Is(err, snapshot.ErrNotFound):
		tp = tally.NewPartition(p, a.opts)
	case err != nil:
		return fmt.Errorf("load snapshot %d: %w", p, err)
	case ld.Epoch > e:
		return fmt.Errorf("load snapshot %d: fenced at epoch %d, ours is %d: %w", p, ld.Epoch, e, snapshot.ErrStaleEpoch)
	default:
		tp, err = tally.Restore(p, a.opts, ld.Meta, ld.Minutes, ld.Late)
		if err != nil {
			return fmt.Errorf("restore partition %d: %w: %w", p, errBadSnapshot, err)
		}
	}
	n, last, err := a.log.Lag(ctx, p, tp.Offset())
	if err != nil {
		return fmt.Errorf("take partition %d: %w", p, err)
	}
	now := a.now()
	pt := &partition{
		id:       p,
		epoch:    e,
		tp:       tp,
		target:   last,
		nextSave: now.Add(firstSave(a.cfg.SnapshotInterval)),
		rate:     persecond.New(now),
		heavy:    hotkey.NewSketch(a.sketchCap),
		state:    stateRestoring,
	}
	handedOver := handed != "" && tp.Offset() == handed
	if n == 0 || handedOver {
		pt.state = stateServing
		pt.servingSince = now
	}
	if ld.Meta != nil {
		var meta clickaggv1.SnapshotMeta
		if proto.Unmarshal(ld.Meta, &meta) == nil && meta.GetWrittenUnixMs() > 0 {
			pt.lastSnapshot = time.UnixMilli(meta.GetWrittenUnixMs())
		}
	}
	a.mu.Lock()
	if !a.live {
		pt.state = stateStopped
	}
	a.parts[p] = pt
	a.mu.Unlock()
	lg.Info("took partition", "partition", p, "epoch", e, "offset", tp.Offset(), "lag", n, "state", pt.getState(a).String(), "handed_over", handedOver)
	return nil
}

// readOffsets returns the offsets to read after of the partitions being
// consumed, and those partitions.
func (a *Aggregator) readOffsets() (map[int]string, map[int]*partition) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	after := make(map[int]string, len(a.parts))
	parts := make(map[int]*partition, len(a.parts))
	for id, p := range a.parts {
		if p.state == stateRestoring || p.state == stateServing {
			after[id] = cmp.Or(p.tp.Offset(), "0")
			parts[id] = p
		}
	}
	return after, parts
}

// owned returns the held partitions ordered by ID.
func (a *Aggregator) owned() []*partition {
	a.mu.RLock()
	defer a.mu.RUnlock()
	ps := slices.Collect(maps.Values(a.parts))
	slices.SortFunc(ps, func(x, y *partition) int { return cmp.Compare(x.id, y.id) })
	return ps
}

func (a *Aggregator) partition(id int) *partition {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.parts[id]
}

func (a *Aggregator) holds(id int) bool { return a.partition(id) != nil }

func (a *Aggregator) memberID() string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.member
}

// drop stops serving p and forgets it.
func (a *Aggregator) drop(p *partition) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p.state = stateStopped
	if a.parts[p.id] == p {
		delete(a.parts, p.id)
	}
}

func (a *Aggregator) setState(p *partition, s state) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p.state = s
}

// casState sets p's state to to if it is from.
func (a *Aggregator) casState(p *partition, from, to state) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.state != from {
		return false
	}
	p.state = to
	return true
}

func (p *partition) getState(a *Aggregator) state {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return p.state
}
