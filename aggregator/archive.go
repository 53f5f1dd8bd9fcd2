package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
)

// Archiver archives one partition's log while its owner holds it
// (archive.Archiver).
type Archiver interface {
	Run(ctx context.Context, p int, epoch uint64) error
}

// HistoryWriter writes one partition's final hours while its owner holds
// it (history.Writer).
type HistoryWriter interface {
	Run(ctx context.Context, p int, epoch uint64, src history.Source) error
}

// WithArchiver makes the aggregator archive the log of every partition it
// holds, and trim the log no lower than what is archived.
func WithArchiver(ar Archiver) Option {
	return func(a *Aggregator) { a.archiver = ar }
}

// WithHistory makes the aggregator write the final hours of every
// partition it holds to the history.
func WithHistory(w HistoryWriter) Option {
	return func(a *Aggregator) { a.history = w }
}

// HistoryReader reads the history (history.Reader) through a View of the
// applied revisions, taken once per query so that it never mixes two.
type HistoryReader interface {
	View() history.View
}

// WithHistoryReader makes the aggregator answer the minutes of a window
// that have left memory from the history, through r and the partitions'
// history marks.
func WithHistoryReader(r HistoryReader, marks HistoryMarks) Option {
	return func(a *Aggregator) { a.histReader, a.marks = r, marks }
}

// HistoryMarks adapts the snapshot store to history.Marks: the history
// mark is fenced by the same epoch as the snapshots.
type HistoryMarks struct{ Store *snapshot.Store }

// History returns the minute before which partition p's history holds it.
func (m HistoryMarks) History(ctx context.Context, p int) (int64, bool, error) {
	return m.Store.History(ctx, p)
}

// HistoryStart returns the first minute of partition p's history.
func (m HistoryMarks) HistoryStart(ctx context.Context, p int) (int64, bool, error) {
	return m.Store.HistoryStart(ctx, p)
}

// SaveHistory records end as partition p's history mark at epoch.
func (m HistoryMarks) SaveHistory(ctx context.Context, p int, epoch uint64, start, end int64) error {
	err := m.Store.SaveHistory(ctx, p, epoch, start, end)
	if errors.Is(err, snapshot.ErrStaleEpoch) {
		return fmt.Errorf("%w: %w", history.ErrFenced, err)
	}
	return err
}

// ArchiveOffsets adapts the snapshot store to archive.Offsets: the archived
// offset is fenced by the same epoch as the snapshots.
type ArchiveOffsets struct{ Store *snapshot.Store }

// Archived returns partition p's archived offset.
func (o ArchiveOffsets) Archived(ctx context.Context, p int) (string, error) {
	return o.Store.Archived(ctx, p)
}

// SaveArchived records partition p's archived offset at epoch.
func (o ArchiveOffsets) SaveArchived(ctx context.Context, p int, epoch uint64, offset string) error {
	err := o.Store.SaveArchived(ctx, p, epoch, offset)
	if errors.Is(err, snapshot.ErrStaleEpoch) {
		return fmt.Errorf("%w: %w", archive.ErrFenced, err)
	}
	return err
}

// jobCheck is how often the per-partition jobs are matched to the
// partitions held: a job starts this long at most after its partition is
// taken.
const jobCheck = time.Second

// partitionJob is work that runs for as long as a partition is held at one
// epoch: archiving its log, writing its history.
type partitionJob struct {
	name string
	run  func(ctx context.Context, p int, epoch uint64, tp *tally.Partition) error
	// fenced is the error its run returns once a newer owner holds p.
	fenced error
}

func (a *Aggregator) partitionJobs() []partitionJob {
	var jobs []partitionJob
	if a.archiver != nil {
		jobs = append(jobs, partitionJob{name: "archiver", fenced: archive.ErrFenced,
			run: func(ctx context.Context, p int, e uint64, _ *tally.Partition) error { return a.archiver.Run(ctx, p, e) }})
	}
	if a.history != nil {
		jobs = append(jobs, partitionJob{name: "history writer", fenced: history.ErrFenced,
			run: func(ctx context.Context, p int, e uint64, tp *tally.Partition) error {
				return a.history.Run(ctx, p, e, tp)
			}})
	}
	return jobs
}

// runPartitionJobs runs, until ctx ends, every job for every partition
// this incarnation holds (restoring or serving), at the epoch it holds it,
// and stops a partition's jobs once it no longer holds it. A job that
// ended on its own (fenced, or an error it cannot get past) is not started
// again at the same epoch. What the jobs record is fenced, so one that
// outlives its partition briefly cannot move anything.
func (a *Aggregator) runPartitionJobs(ctx context.Context, lg *slog.Logger) {
	jobs := a.partitionJobs()
	if len(jobs) == 0 {
		return
	}
	type held struct {
		epoch uint64
		tp    *tally.Partition
	}
	type running struct {
		held
		cancel context.CancelFunc
	}
	runs := map[int]*running{}
	var wg sync.WaitGroup
	defer func() {
		for _, r := range runs {
			r.cancel()
		}
		wg.Wait()
	}()
	t := time.NewTicker(jobCheck)
	defer t.Stop()
	for {
		now := map[int]held{}
		a.mu.RLock()
		for id, p := range a.parts {
			if p.state == stateRestoring || p.state == stateServing {
				now[id] = held{p.epoch, p.tp}
			}
		}
		a.mu.RUnlock()
		for id, r := range runs {
			// A partition taken again at the same epoch has a new state.
			if h, ok := now[id]; !ok || h != r.held {
				r.cancel()
				delete(runs, id)
			}
		}
		for id, h := range now {
			if _, ok := runs[id]; ok {
				continue
			}
			rctx, cancel := context.WithCancel(ctx)
			runs[id] = &running{held: h, cancel: cancel}
			for _, j := range jobs {
				wg.Go(func() {
					err := j.run(rctx, id, h.epoch, h.tp)
					switch {
					case rctx.Err() != nil:
					case errors.Is(err, j.fenced):
						lg.Info(j.name+" fenced: a newer owner holds the partition", "partition", id, "epoch", h.epoch)
					default:
						lg.Error(j.name+" stopped", "partition", id, "epoch", h.epoch, "err", err)
					}
				})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
