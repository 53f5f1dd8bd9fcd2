package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/recount"
	"github.com/clickagg/clickagg/tally"
)

const recalcSynopsis = `clickagg recalc recounts a range of minutes from the raw archive.

Usage:
  clickagg recalc -from=2026-12-01 -to=2026-12-02 -archive.bucket=... -etcd.endpoints=... [-apply]

It replays each partition's raw archive through the aggregators' counting
code (dedup and event-time rules included) in this process, writes the
result to the history as a new revision of every period of the range, and
prints how it differs from what queries answer now. With -apply, the new
revision becomes the one every query answers from, atomically; the old
files stay for audit. A range that is reversed, in the future, not final
in the archive, or crosses a hole in the archive is refused; nothing is
applied then.`

func runRecalc(ctx context.Context, args []string) error {
	return recalc(ctx, args, os.Stdout)
}

// recalcDiff is one row that differs, of one partition.
type recalcDiff struct {
	p int
	recount.Mismatch
}

// recalcResult sums up a recalc.
type recalcResult struct {
	mu                sync.Mutex
	files             int
	served, recounted int64
	rows              int
	missing, corrupt  []string // served history files
	diffs             []recalcDiff
}

func recalc(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("clickagg recalc", flag.ContinueOnError)
	setUsage(fs, recalcSynopsis)
	var f recountFlags
	f.register(fs)
	apply := fs.Bool("apply", false, "make the new revision the one every query answers from; without it the revision is written and reported, and queries keep their answers")
	maxRows := fs.Int("diff.max-rows", 100, "most differing rows printed; the totals count them all")
	if err := parse(fs, args); err != nil {
		return err
	}
	job, err := f.resolve(ctx, time.Now())
	if err != nil {
		return err
	}
	defer job.close()
	rev, err := job.cl.NextRevision(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "recalc: revision %d of partitions %s, minutes %s to %s (UTC), served now: revision %d\n",
		rev, partitionList(job.partitions), minuteString(job.from), minuteString(job.to), job.view.Applied.Version())
	var res recalcResult
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.parallel)
	for _, p := range job.partitions {
		g.Go(func() error { return recalcPartition(gctx, job, p, rev, &res) })
	}
	if err := g.Wait(); err != nil {
		var hole *recount.Hole
		switch {
		case errors.As(err, &hole):
			return fmt.Errorf("refused: %w; nothing applied (recount with the file back, or reconcile to see what it leaves unchecked)", err)
		case errors.Is(err, recount.ErrNotFinal):
			return fmt.Errorf("refused: %w; nothing applied", err)
		}
		return fmt.Errorf("recalc revision %d: %w; nothing applied", rev, err)
	}
	res.print(out, *maxRows)
	if !*apply {
		fmt.Fprintf(out, "revision %d written, not applied: queries answer as before. Run again with -apply to apply a recount.\n", rev)
		return nil
	}
	r := history.Revision{Revision: rev, From: job.from, To: job.to, Partitions: job.partitions, Applied: time.Now().UTC()}
	if err := applyRevision(ctx, job.cl, r); err != nil {
		return err
	}
	fmt.Fprintf(out, "revision %d applied: every query over these minutes answers from it now\n", rev)
	return nil
}

// recalcPartition recounts partition p, writes its files at revision rev
// and diffs them with the served ones.
func recalcPartition(ctx context.Context, job *recountJob, p, rev int, res *recalcResult) error {
	return recount.Partition(ctx, job.bucket, p, job.from, job.to, job.cfg, recount.Handlers{
		Period: func(s recount.Span, rows []tally.FinalRow) error {
			n := history.Name{Partition: p, From: s.From, To: s.To, Revision: rev}
			data, err := history.Encode(n, rows)
			if err != nil {
				return err
			}
			if err := job.bucket.Put(ctx, history.Key(p, s.From, s.To, rev), data); err != nil {
				return err
			}
			var served []history.Row
			var missing, corrupt string
			files, err := job.view.Files(ctx, p, s.From, s.To)
			switch {
			case errors.Is(err, history.ErrHole):
				missing = err.Error()
			case errors.Is(err, history.ErrCorrupt):
				corrupt = err.Error()
			case err != nil:
				return err
			}
			for _, f := range files {
				served = append(served, f.Rows...)
			}
			diffs := recount.Compare(served, rows)
			res.mu.Lock()
			defer res.mu.Unlock()
			res.files++
			res.rows += len(rows)
			for _, r := range rows {
				res.recounted += r.Clicks
			}
			for _, r := range served {
				res.served += r.Clicks
			}
			if missing != "" {
				res.missing = append(res.missing, missing)
			}
			if corrupt != "" {
				res.corrupt = append(res.corrupt, corrupt)
			}
			for _, d := range diffs {
				res.diffs = append(res.diffs, recalcDiff{p: p, Mismatch: d})
			}
			return nil
		},
	})
}

func (res *recalcResult) print(out io.Writer, maxRows int) {
	fmt.Fprintf(out, "  files written: %d, rows: %d\n", res.files, res.rows)
	fmt.Fprintf(out, "  clicks: served %d, recounted %d (%+d)\n", res.served, res.recounted, res.recounted-res.served)
	fmt.Fprintf(out, "  rows that differ: %d; served history files missing: %d, corrupt: %d\n", len(res.diffs), len(res.missing), len(res.corrupt))
	for _, m := range append(slices.Clone(res.missing), res.corrupt...) {
		fmt.Fprintf(out, "    %s\n", m)
	}
	if len(res.diffs) == 0 {
		return
	}
	slices.SortFunc(res.diffs, func(a, b recalcDiff) int {
		return cmp.Or(cmp.Compare(a.p, b.p), cmp.Compare(a.Minute, b.Minute), cmp.Compare(a.AdID, b.AdID), cmp.Compare(a.Country, b.Country))
	})
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  partition\tminute\tad_id\tcountry\tserved\trecounted\t")
	for i, d := range res.diffs {
		if i == maxRows {
			fmt.Fprintf(tw, "  ... %d more\t\t\t\t\t\t\n", len(res.diffs)-maxRows)
			break
		}
		note := ""
		if !d.Clicks {
			note = "same count, other clicks"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\t%s\n", d.p, minuteString(d.Minute), d.AdID, d.Country, d.Served, d.Recounted, note)
	}
	tw.Flush()
}

// applyRevision adds r to the applied revisions in etcd, atomically.
func applyRevision(ctx context.Context, cl *cluster.Client, r history.Revision) error {
	for {
		data, mod, err := cl.AppliedRevisions(ctx)
		if err != nil {
			return err
		}
		applied, err := history.DecodeApplied(data)
		if err != nil {
			return err
		}
		next, err := applied.With(r)
		if err != nil {
			return fmt.Errorf("%w: run recalc again to recount after it", err)
		}
		enc, err := next.Encode()
		if err != nil {
			return err
		}
		err = cl.PutAppliedRevisions(ctx, enc, mod)
		if errors.Is(err, cluster.ErrConflict) {
			continue
		}
		return err
	}
}

// partitionList formats partitions compactly: 0-63, or 1,5,7.
func partitionList(ps []int) string {
	if len(ps) > 1 && ps[len(ps)-1]-ps[0] == len(ps)-1 && slices.IsSorted(ps) {
		return fmt.Sprintf("%d-%d", ps[0], ps[len(ps)-1])
	}
	return fmt.Sprint(ps)
}
