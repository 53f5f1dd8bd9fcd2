package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/recount"
	"github.com/clickagg/clickagg/tally"
)

// Input is what a reconciliation compares.
type Input struct {
	// Archive is the raw archive the recount reads.
	Archive recount.Bucket
	// History is the history as served: the files of the revisions
	// applied when the run started.
	History history.View
	// Partitions to check.
	Partitions []int
	// From and To are the Unix minutes [From, To), whole periods of
	// Recount.Period.
	From, To int64
	Recount  recount.Config
	// Parallel is how many partitions are recounted at once.
	Parallel int
}

// Run recounts in's partitions and compares them with the history served.
// It fails, returning no report, when a recount cannot run to the end of
// the range: the archive does not hold the minutes as final yet (an error
// wrapping recount.ErrNotFinal), or the archive or history store fails.
// Differences, missing or corrupt history files and archive holes are not
// errors: they are in the report.
func Run(ctx context.Context, in Input) (*Report, error) {
	if len(in.Partitions) == 0 {
		return nil, errors.New("reconcile: no partitions")
	}
	if in.Parallel < 1 {
		return nil, fmt.Errorf("reconcile: parallel %d: must be at least 1", in.Parallel)
	}
	if err := in.Recount.Validate(); err != nil {
		return nil, err
	}
	started := in.Recount.Now()
	parts := make([]*Report, len(in.Partitions))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(in.Parallel)
	for i, p := range in.Partitions {
		g.Go(func() error {
			r, err := partition(gctx, in, p)
			if err != nil {
				return fmt.Errorf("reconcile partition %d: %w", p, err)
			}
			parts[i] = r
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	rep := &Report{
		Started: started.UTC(),
		From:    minuteTime(in.From), To: minuteTime(in.To),
		PeriodMinutes: in.Recount.Period,
		Partitions:    slices.Sorted(slices.Values(in.Partitions)),
	}
	for _, r := range parts {
		rep.add(r)
	}
	rep.sort()
	return rep, nil
}

// partition reconciles one partition.
func partition(ctx context.Context, in Input, p int) (*Report, error) {
	r := &Report{}
	err := recount.Partition(ctx, in.Archive, p, in.From, in.To, in.Recount, recount.Handlers{
		Period: func(s recount.Span, rows []tally.FinalRow) error {
			files, err := in.History.Files(ctx, p, s.From, s.To)
			var kind *[]FileProblem
			switch {
			case errors.Is(err, history.ErrHole):
				kind = &r.MissingFiles
			case errors.Is(err, history.ErrCorrupt):
				kind = &r.CorruptFiles
			case err != nil:
				return err
			}
			if kind != nil {
				fp := FileProblem{
					Partition: p, From: minuteTime(s.From), To: minuteTime(s.To),
					Key:   history.Key(p, s.From, s.To, in.History.Applied.For(p, s.From, s.To)),
					Error: err.Error(), UncheckedRows: len(rows),
				}
				for _, row := range rows {
					fp.UncheckedClicks += row.Clicks
				}
				*kind = append(*kind, fp)
				r.UncheckedMinutes += s.To - s.From
				return nil
			}
			var served []history.Row
			for _, f := range files {
				for _, row := range f.Rows {
					if m := row.Minute / 60_000; m >= s.From && m < s.To {
						served = append(served, row)
					}
				}
			}
			r.Periods++
			r.Rows += int64(len(rows))
			for _, row := range rows {
				r.Clicks += row.Clicks
			}
			for _, m := range recount.Compare(served, rows) {
				d := DiffersCount
				if !m.Clicks {
					d = DiffersClicks
				}
				r.Mismatches = append(r.Mismatches, Mismatch{
					Partition: p, Minute: minuteTime(m.Minute), AdID: m.AdID, Country: m.Country,
					Served: m.Served, Recounted: m.Recounted, Differs: d,
				})
			}
			return nil
		},
		Hole: func(h *recount.Hole, s recount.Span) error {
			r.Holes = append(r.Holes, Hole{
				Partition: p, After: h.After, Before: h.Before, Want: h.Want, Have: h.Have,
				UncheckedFrom: minuteTime(s.From), UncheckedTo: minuteTime(s.To), Error: h.Error(),
			})
			r.UncheckedMinutes += s.To - s.From
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func minuteTime(m int64) time.Time { return time.Unix(m*60, 0).UTC() }
