package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/clickagg/clickagg/breakage"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
)

// snapshotDue snapshots every partition whose interval has passed. The
// snapshots are encoded here, between applies, since encoding reads what
// apply writes; they are written to Redis in the background, so that
// applying goes on while Redis and its fsync work.
func (c *consumer) snapshotDue(ctx context.Context) {
	a := c.a
	now := a.now()
	var due []*partition
	for _, p := range a.owned() {
		if s := p.getState(a); now.Before(p.nextSave) || s == stateStopped || s == stateReleased || c.saves.running(p.id) {
			continue
		}
		p.nextSave = now.Add(a.cfg.SnapshotInterval)
		due = append(due, p)
	}
	snaps := make([]encoded, len(due))
	var g errgroup.Group
	g.SetLimit(a.cfg.applyParallelism())
	for i, p := range due {
		g.Go(func() error {
			snaps[i] = a.encode(p)
			return nil
		})
	}
	_ = g.Wait() // encode cannot fail
	for i, p := range due {
		c.saves.start(p, func() error { return a.write(ctx, p, snaps[i]) })
	}
}

// finishSaves handles the background snapshot writes that have ended.
func (c *consumer) finishSaves(ctx context.Context) {
	for _, s := range c.saves.ended() {
		if s.err != nil {
			c.a.saveFailed(ctx, s.p, s.err, c.lg, "snapshot")
		}
	}
}

// saves are the background snapshot writes of a consumer: at most one per
// partition at a time, so that a partition's snapshots reach the store in
// the order they were taken. The store fences epochs, not offsets: an
// older snapshot stored after a newer one would take the partition back in
// time, and its incremental minutes would no longer match the meta.
//
// At most SaveParallelism writes run at once; the others wait their turn
// in their goroutines, so the consumer never does.
type saves struct {
	mu    sync.Mutex
	busy  map[int]chan struct{} // partition → closed when its write ends
	done  []savedResult
	group sync.WaitGroup
	slots chan struct{}
}

// SaveParallelism is how many snapshot writes an aggregator runs at once.
// Redis runs them one at a time on its thread; a few at once share its
// fsyncs, and encoding the next meanwhile uses the other cores.
func SaveParallelism() int { return 2 * runtime.GOMAXPROCS(0) }

type savedResult struct {
	p   *partition
	err error
}

// start runs write for p in the background; p must have no write running.
func (s *saves) start(p *partition, write func() error) {
	ch := make(chan struct{})
	s.mu.Lock()
	if s.busy == nil {
		s.busy = make(map[int]chan struct{})
		s.slots = make(chan struct{}, SaveParallelism())
	}
	s.busy[p.id] = ch
	slots := s.slots
	s.mu.Unlock()
	s.group.Go(func() {
		slots <- struct{}{}
		err := write()
		<-slots
		s.mu.Lock()
		delete(s.busy, p.id)
		s.done = append(s.done, savedResult{p: p, err: err})
		s.mu.Unlock()
		close(ch)
	})
}

func (s *saves) running(id int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.busy[id]
	return ok
}

// waitFor waits until partition id has no write running. Every write of a
// partition outside snapshotDue (a release, a final snapshot) waits for
// it first.
func (s *saves) waitFor(id int) {
	s.mu.Lock()
	ch := s.busy[id]
	s.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// wait waits until no write is running.
func (s *saves) wait() { s.group.Wait() }

// ended returns the writes that ended since the last call.
func (s *saves) ended() []savedResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := s.done
	s.done = nil
	return done
}

// encoded is a snapshot of a partition, ready for the store.
type encoded struct {
	snap tally.Snap
	w    snapshot.Write
	size int
}

// encode takes a snapshot of p. Only the goroutine that applies entries to
// p may call it, and not while it applies.
func (a *Aggregator) encode(p *partition) encoded {
	s := p.tp.Snapshot(p.epoch)
	w := snapshot.Write{
		Epoch:         p.epoch,
		Meta:          s.Meta,
		Minutes:       s.Minutes,
		Late:          s.Late,
		Drop:          s.Drop,
		TrimLogBefore: a.trimBefore(s.Offset),
		// With an archive, what it has not taken yet stays in the log.
		KeepUnarchived: a.archiver != nil,
	}
	size := len(w.Meta)
	for _, b := range w.Minutes {
		size += len(b)
	}
	for _, b := range w.Late {
		size += len(b)
	}
	return encoded{snap: s, w: w, size: size}
}

// write stores a snapshot of p that encode took. It may run while p is
// being applied: MarkSaved cleans only the minutes that have not changed
// since the snapshot was taken.
func (a *Aggregator) write(ctx context.Context, p *partition, e encoded) error {
	start := time.Now()
	err := a.store.Save(ctx, p.id, e.w)
	a.m.snapshotDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("save snapshot %d at epoch %d: %w", p.id, p.epoch, err)
	}
	if breakage.On(breakage.OffsetApart) {
		// Broken on purpose: a snapshot is a consistent cut, its state
		// and its offset written in one script (docs/architecture.md,
		// invariant 4). Here a later write moves the stored offset to
		// where the partition has got to since the snapshot was taken,
		// so a restore replays from past what the state holds.
		var m clickaggv1.SnapshotMeta
		if err := proto.Unmarshal(e.w.Meta, &m); err == nil {
			m.Offset = p.tp.Offset()
			meta, _ := proto.Marshal(&m)
			if err := a.store.Save(ctx, p.id, snapshot.Write{Epoch: p.epoch, Meta: meta}); err != nil {
				return fmt.Errorf("save snapshot offset %d at epoch %d: %w", p.id, p.epoch, err)
			}
		}
	}
	a.m.snapshotBytes.Observe(float64(e.size))
	p.tp.MarkSaved(e.snap)
	a.mu.Lock()
	p.lastSnapshot = a.now()
	a.mu.Unlock()
	return nil
}

// firstSave is how long after it is taken a partition is first
// snapshotted: a random part of the interval, so that the partitions taken
// together (at start, after a join) are not all snapshotted together ever
// after. Saved all at once, an aggregator's 64 partitions kept Redis's one
// thread busy with multi-MB fenced scripts for a stretch every interval,
// and reads, appends and so freshness waited behind them.
func firstSave(interval time.Duration) time.Duration {
	return interval - rand.N(interval)
}

// save writes a snapshot of p now. Only the goroutine that applies entries
// to p may call it, and only when no background write of p is running.
func (a *Aggregator) save(ctx context.Context, p *partition) error {
	return a.write(ctx, p, a.encode(p))
}

// trimBefore returns the ID below which the log may go once the snapshot
// at offset is stored: the smaller of offset (a replay starts after it) and
// the first ID of the raw-retention window.
func (a *Aggregator) trimBefore(offset string) string {
	if partlog.CompareIDs(offset, "0") == 0 {
		return ""
	}
	ms := a.now().Add(-a.cfg.RawRetention).UnixMilli()
	if ms <= 0 {
		return ""
	}
	keep := strconv.FormatInt(ms, 10) + "-0"
	if partlog.CompareIDs(keep, offset) < 0 {
		return keep
	}
	return offset
}

// saveFailed handles a refused or failed snapshot of p. A refusal means a
// newer owner has claimed p: p stops being served and its state goes at
// once, since everything it would answer may be stale.
func (a *Aggregator) saveFailed(ctx context.Context, p *partition, err error, lg *slog.Logger, what string) {
	if errors.Is(err, snapshot.ErrStaleEpoch) {
		a.fencedWrites.Add(1)
		a.drop(p)
		lg.Warn(what+" fenced: a newer owner claimed the partition; dropped it", "partition", p.id, "epoch", p.epoch, "err", err)
		return
	}
	if ctx.Err() != nil {
		// Shutdown or a lost lease interrupted it; the final snapshot
		// follows.
		return
	}
	a.snapshotErrors.Add(1)
	lg.Warn(what, "partition", p.id, "epoch", p.epoch, "err", err)
}
