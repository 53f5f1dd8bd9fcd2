package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/snapshot"
)

// Archiver archives one partition's log while its owner holds it
// (archive.Archiver).
type Archiver interface {
	Run(ctx context.Context, p int, epoch uint64) error
}

// WithArchiver makes the aggregator archive the log of every partition it
// holds, and trim the log no lower than what is archived.
func WithArchiver(ar Archiver) Option {
	return func(a *Aggregator) { a.archiver = ar }
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

// archiveCheck is how often the archivers are matched to the partitions
// held: an archiver starts this long at most after its partition is taken.
const archiveCheck = time.Second

// runArchivers runs, until ctx ends, an archiver for every partition this
// incarnation holds (restoring or serving), at the epoch it holds it, and
// stops the archiver of a partition it no longer holds. An archiver that
// ended on its own (fenced, or a log entry it cannot decode) is not
// started again at the same epoch. The archived offset is fenced, so an
// archiver that outlives its partition briefly cannot move it.
func (a *Aggregator) runArchivers(ctx context.Context, lg *slog.Logger) {
	type running struct {
		epoch  uint64
		cancel context.CancelFunc
		done   chan struct{}
	}
	runs := map[int]*running{}
	var wg sync.WaitGroup
	defer func() {
		for _, r := range runs {
			r.cancel()
		}
		wg.Wait()
	}()
	t := time.NewTicker(archiveCheck)
	defer t.Stop()
	for {
		held := map[int]uint64{}
		a.mu.RLock()
		for id, p := range a.parts {
			if p.state == stateRestoring || p.state == stateServing {
				held[id] = p.epoch
			}
		}
		a.mu.RUnlock()
		for id, r := range runs {
			if e, ok := held[id]; !ok || e != r.epoch {
				r.cancel()
				delete(runs, id)
			}
		}
		for id, e := range held {
			if _, ok := runs[id]; ok {
				continue
			}
			rctx, cancel := context.WithCancel(ctx)
			r := &running{epoch: e, cancel: cancel, done: make(chan struct{})}
			runs[id] = r
			wg.Go(func() {
				defer close(r.done)
				err := a.archiver.Run(rctx, id, e)
				switch {
				case rctx.Err() != nil:
				case errors.Is(err, archive.ErrFenced):
					lg.Info("archiver fenced: a newer owner holds the partition", "partition", id, "epoch", e)
				default:
					lg.Error("archiver stopped", "partition", id, "epoch", e, "err", err)
				}
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
