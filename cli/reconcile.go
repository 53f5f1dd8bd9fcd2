package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/reconcile"
	"github.com/clickagg/clickagg/recount"
)

const reconcileSynopsis = `clickagg reconcile recounts a range of minutes from the raw archive, with the
aggregators' counting rules, and compares every row (partition, minute, ad_id,
country) with the history the cluster serves: the counts, and the clicks'
user_id and ip hashes. It prints a report, writes it as JSON with -report,
and records its totals in etcd, which the coordinator exports as
clickagg_reconcile_* metrics.

Usage:
  clickagg reconcile -from=2026-12-01 -to=2026-12-02 -archive.bucket=URL [flags]
  clickagg reconcile -previous-day -archive.bucket=URL [flags]

Exit status:
  0  every row matched and nothing was left unchecked
  1  the run was refused or failed (reversed or future range, minutes not
     final in the archive, a store unreachable): nothing was written
  2  rows differ, or served history files are missing or corrupt
  3  everything compared matched, but holes in the archive left minutes
     unchecked`

// Exit codes of clickagg reconcile besides 0 and 1.
const (
	exitMismatch   = 2
	exitIncomplete = 3
)

// exitError is an error that ends the process with code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the process exit code for err.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

// reconcileOptions are reconcile's flags beyond the recount's.
type reconcileOptions struct {
	rf          recountFlags
	previousDay bool
	report      string
	record      bool
}

func (o *reconcileOptions) register(fs *flag.FlagSet) {
	o.rf.register(fs)
	fs.BoolVar(&o.previousDay, "previous-day", false, "check the previous UTC day, instead of -from and -to (what the daily CronJob runs)")
	fs.StringVar(&o.report, "report", "", "also write the report as JSON to this file")
	fs.BoolVar(&o.record, "record", true, "record the run's totals in etcd, for the coordinator's clickagg_reconcile_* metrics")
}

// runReconcile runs clickagg reconcile at now, writing the text report to
// stdout.
func runReconcile(ctx context.Context, args []string, stdout io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("clickagg reconcile", flag.ContinueOnError)
	setUsage(fs, reconcileSynopsis)
	var o reconcileOptions
	o.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.previousDay {
		if o.rf.from != "" || o.rf.to != "" {
			return errors.New("-previous-day: -from and -to must not be given with it")
		}
		o.rf.from, o.rf.to = previousDay(now)
	}
	job, err := o.rf.resolve(ctx, now)
	if err != nil {
		return err
	}
	defer job.close()
	// The recount's clock is the run's: the archive cannot hold entries
	// after it.
	job.cfg.Now = func() time.Time { return now }
	rep, err := reconcile.Run(ctx, reconcile.Input{
		Archive: job.bucket, History: job.view, Partitions: job.partitions,
		From: job.from, To: job.to, Recount: job.cfg, Parallel: o.rf.parallel,
	})
	if errors.Is(err, recount.ErrNotFinal) {
		return fmt.Errorf("%w (the minutes become final a dedup horizon, -aggregator.dedup-horizon, after they end, once the archive holds them; run again later)", err)
	}
	if err != nil {
		return err
	}
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if o.report != "" {
		if err := writeJSON(o.report, rep); err != nil {
			return err
		}
	}
	if o.record {
		err := job.cl.PutReconcileRun(ctx, cluster.ReconcileRun{
			Started: now.UTC(), From: rep.From, To: rep.To, Partitions: len(rep.Partitions),
			RowsCompared: rep.Rows, MismatchedRows: len(rep.Mismatches),
			UnreadableFiles: len(rep.MissingFiles) + len(rep.CorruptFiles),
			Holes:           len(rep.Holes), UncheckedMinutes: rep.UncheckedMinutes,
		})
		if err != nil {
			return err
		}
	}
	switch {
	case !rep.Matched():
		return &exitError{exitMismatch, fmt.Errorf("reconcile: %d rows differ, %d history files missing, %d corrupt",
			len(rep.Mismatches), len(rep.MissingFiles), len(rep.CorruptFiles))}
	case !rep.OK():
		return &exitError{exitIncomplete, fmt.Errorf("reconcile: %d archive holes left %d partition-minutes unchecked",
			len(rep.Holes), rep.UncheckedMinutes)}
	}
	return nil
}

// previousDay returns the -from and -to of the UTC day before now's.
func previousDay(now time.Time) (from, to string) {
	u := now.UTC()
	today := time.Date(u.Year(), u.Month(), u.Day(), 0, 0, 0, 0, time.UTC)
	return today.AddDate(0, 0, -1).Format(time.DateOnly), today.Format(time.DateOnly)
}

// writeJSON writes v to path as indented JSON, whole or not at all.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	return nil
}
