package history

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clickagg/clickagg/retry"
	"github.com/clickagg/clickagg/tally"
)

// Source is a partition's state as the writer reads it
// (tally.Partition).
type Source interface {
	// Final returns the rows of minutes [from, to), or tally.ErrNotFinal,
	// or tally.ErrGone.
	Final(from, to int64) ([]tally.FinalRow, error)
	// FirstMinute is the first minute in memory, false if none.
	FirstMinute() (int64, bool)
}

// Marks records, per partition, the minute up to which (exclusive) the
// history holds it.
type Marks interface {
	History(ctx context.Context, p int) (int64, bool, error)
	// SaveHistory fails with an error wrapping ErrFenced when a newer
	// owner holds the partition.
	// start is the first minute of a new history, -1 once it has one.
	SaveHistory(ctx context.Context, p int, epoch uint64, start, end int64) error
}

// Store is the object store the files go to; the writer reads a day's
// files back from it to build the day's rollup.
type Store interface {
	Put(ctx context.Context, key string, data []byte) error
	Bucket
}

// ErrFenced is what Marks.SaveHistory's error wraps when a newer owner
// holds the partition; Run then stops.
var ErrFenced = errors.New("history: partition fenced by a newer owner")

// Config is the writer's configuration.
type Config struct {
	// Period is the span of one file; it divides an hour.
	Period time.Duration
	// Poll is how often the writer looks for a newly final hour.
	Poll time.Duration
	// RetryMin and RetryMax bound the pause after a failed write.
	RetryMin, RetryMax time.Duration
	// CacheBytes bounds the decoded files an aggregator's Reader keeps
	// (WithCache); 0 keeps none.
	CacheBytes int64
}

// Defaults of RegisterFlags.
const (
	DefaultPeriod   = time.Hour
	DefaultPoll     = 5 * time.Second
	DefaultRetryMin = 200 * time.Millisecond
	DefaultRetryMax = 30 * time.Second
	// DefaultCacheBytes holds about a day of the files of a partition of
	// 20 clicks a second: decoded rows take 16 bytes per click and about
	// 130 per (minute, ad, country).
	DefaultCacheBytes = 256 << 20
)

// RegisterFlags registers the writer's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Period, "history.period", DefaultPeriod,
		"Minutes of one partition per history file; divides an hour. Shorter periods reach the history sooner, in more files.")
	fs.DurationVar(&c.Poll, "history.poll", DefaultPoll,
		"How often an aggregator looks for an hour of a partition whose minutes can no longer change, to write it to the history in -archive.bucket.")
	fs.Int64Var(&c.CacheBytes, "history.cache-bytes", DefaultCacheBytes,
		"Bytes of decoded history files an aggregator keeps in memory for queries past -aggregator.retention, least recently used out; 0 keeps none.")
	c.RetryMin, c.RetryMax = DefaultRetryMin, DefaultRetryMax
}

// Validate checks c.
func (c Config) Validate() error {
	if c.Period < time.Minute || c.Period%time.Minute != 0 || time.Hour%c.Period != 0 {
		return fmt.Errorf("-history.period %v: must be whole minutes that divide an hour", c.Period)
	}
	if c.Poll <= 0 {
		return fmt.Errorf("-history.poll %v: must be positive", c.Poll)
	}
	if c.CacheBytes < 0 {
		return fmt.Errorf("-history.cache-bytes %d: must not be negative", c.CacheBytes)
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("history: retry pauses %v to %v", c.RetryMin, c.RetryMax)
	}
	return nil
}

// Writer writes partitions' final hours to the store, one Run per
// partition held.
type Writer struct {
	cfg    Config
	marks  Marks
	store  Store
	m      *metrics
	logger *slog.Logger
}

// New returns a Writer; it does no I/O. reg may be nil.
func New(cfg Config, marks Marks, store Store, reg prometheus.Registerer, logger *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Writer{cfg: cfg, marks: marks, store: store, m: newMetrics(reg), logger: logger}, nil
}

// Run writes partition p's final periods from src, as its owner at epoch,
// until ctx ends (its error) or a newer owner fences it (an error wrapping
// ErrFenced).
func (w *Writer) Run(ctx context.Context, p int, epoch uint64, src Source) error {
	logger := w.logger.With("partition", p, "epoch", epoch)
	period := int64(w.cfg.Period / time.Minute)
	var next int64 // the first minute not written
	var started bool
	if err := w.retry(ctx, logger, "read mark", func() (err error) {
		next, started, err = w.marks.History(ctx, p)
		return err
	}); err != nil {
		return err
	}
	for {
		if !started {
			// The history of this partition starts with the first period
			// whose minutes are all in memory.
			first, ok := src.FirstMinute()
			if !ok {
				if err := retry.Sleep(ctx, w.cfg.Poll); err != nil {
					return err
				}
				continue
			}
			next = floorDiv(first, period) * period
		}
		// A period ends at its boundary, also after a -history.period
		// change.
		end := (floorDiv(next, period) + 1) * period
		name := Name{Partition: p, From: next, To: end}
		rows, err := src.Final(next, end)
		switch {
		case errors.Is(err, tally.ErrNotFinal):
			if err := retry.Sleep(ctx, w.cfg.Poll); err != nil {
				return err
			}
			continue
		case errors.Is(err, tally.ErrGone) && !started:
			// Its first minutes left before anyone wrote it: begin with
			// the next period.
			next, started = end, true
			continue
		case errors.Is(err, tally.ErrGone):
			w.m.gaps.Inc()
			logger.Error("history hole: the minutes left memory before they were written; recount them from the raw archive", "key", Key(p, next, end, 0))
		case err != nil:
			return fmt.Errorf("history of partition %d minutes %d to %d: %w", p, next, end, err)
		default:
			if err := w.write(ctx, logger, name, rows); err != nil {
				return err
			}
			// The rollup before the mark: a crash in between writes the
			// period and its day's rollup again, the same bytes.
			if end%dayMinutes == 0 {
				if err := w.writeRollup(ctx, logger, p, end/dayMinutes-1); err != nil {
					return err
				}
			}
		}
		// The first mark of a partition's history also records where it
		// begins: minutes before it were never written, which queries must
		// tell from a hole.
		start := int64(-1)
		if !started {
			start = next
		}
		err = w.retry(ctx, logger, "save mark", func() error {
			err := w.marks.SaveHistory(ctx, p, epoch, start, end)
			if errors.Is(err, ErrFenced) {
				return retry.Permanent(err)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("history of partition %d: %w", p, err)
		}
		w.m.end.WithLabelValues(fmt.Sprint(p)).Set(float64(end * 60))
		next, started = end, true
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func (w *Writer) write(ctx context.Context, logger *slog.Logger, n Name, rows []tally.FinalRow) error {
	key := Key(n.Partition, n.From, n.To, n.Revision)
	data, err := Encode(n, rows)
	if err != nil {
		return err
	}
	if err := w.retry(ctx, logger, "write "+key, func() error { return w.store.Put(ctx, key, data) }); err != nil {
		return err
	}
	w.m.files.Inc()
	w.m.rows.Add(float64(len(rows)))
	w.m.bytes.Add(float64(len(data)))
	logger.Debug("wrote history", "key", key, "rows", len(rows), "bytes", len(data))
	return nil
}

// writeRollup writes partition p's rollup of day from the day's period
// files of revision 0, read back one at a time. A day the files do not
// tile (the history began during it, or a period is a hole) gets no
// rollup: queries read its period files and report the hole.
func (w *Writer) writeRollup(ctx context.Context, logger *slog.Logger, p int, day int64) error {
	view := NewReader(w.store).View()
	var names []Name
	var rows []RollupRow
	err := w.retry(ctx, logger, "rollup of day "+RollupKey(p, day), func() error {
		objs, err := view.files(ctx, p, day*dayMinutes, (day+1)*dayMinutes)
		if err != nil {
			return permanentIfBad(err)
		}
		names = names[:0]
		sums := map[string]int64{}
		for _, obj := range objs {
			f, err := view.r.read(ctx, p, obj)
			if err != nil {
				return permanentIfBad(err)
			}
			names = append(names, f.Name)
			for _, r := range f.Rows {
				sums[r.AdID] += r.Clicks
			}
		}
		rows = rollupRows(sums)
		return nil
	})
	if errors.Is(err, ErrHole) || errors.Is(err, ErrCorrupt) {
		logger.Debug("no rollup of the day", "key", RollupKey(p, day), "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	key := RollupKey(p, day)
	data, err := EncodeRollup(p, day, names, rows)
	if err != nil {
		return err
	}
	if err := w.retry(ctx, logger, "write "+key, func() error { return w.store.Put(ctx, key, data) }); err != nil {
		return err
	}
	w.m.rollups.Inc()
	logger.Debug("wrote rollup", "key", key, "ads", len(rows), "bytes", len(data))
	return nil
}

// permanentIfBad marks holes and corrupt files, which no retry mends.
func permanentIfBad(err error) error {
	if errors.Is(err, ErrHole) || errors.Is(err, ErrCorrupt) {
		return retry.Permanent(err)
	}
	return err
}

// retry runs f until it succeeds, returns a retry.Permanent error, or
// ctx ends, counting and logging the failures.
func (w *Writer) retry(ctx context.Context, logger *slog.Logger, what string, f func() error) error {
	return retry.Do(ctx, retry.Policy{Min: w.cfg.RetryMin, Max: w.cfg.RetryMax}, func(failures int, err error, _ time.Duration) {
		w.m.errors.Inc()
		if failures == 1 || failures%10 == 0 {
			logger.Warn("history step failed, retrying", "step", what, "failures", failures, "err", err)
		}
	}, f)
}

type metrics struct {
	files, rows, bytes, errors, gaps, rollups prometheus.Counter
	end                                       *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		files:   prometheus.NewCounter(prometheus.CounterOpts{Name: "clickagg_history_files_total", Help: "Hour files written to the history (one written again after a crash counts again)."}),
		rows:    prometheus.NewCounter(prometheus.CounterOpts{Name: "clickagg_history_rows_total", Help: "Rows (minute, ad, country) written to the history."}),
		bytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "clickagg_history_bytes_total", Help: "Bytes of Parquet written to the history."}),
		errors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "clickagg_history_errors_total", Help: "Failed history steps (object store or Redis), each retried."}),
		gaps:    prometheus.NewCounter(prometheus.CounterOpts{Name: "clickagg_history_gaps_total", Help: "Hours whose minutes left memory before they were written: holes a recount from the raw archive must fill."}),
		rollups: prometheus.NewCounter(prometheus.CounterOpts{Name: "clickagg_history_rollups_total", Help: "Daily rollups (clicks per ad of a partition's UTC day) written beside the history, which queries over whole days read instead of the day's files."}),
		end:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "clickagg_history_end_time_seconds", Help: "End (Unix seconds) of the minutes the history holds, by partition; now minus this, less the dedup horizon, is the history's lag."}, []string{"partition"}),
	}
	if reg != nil {
		reg.MustRegister(m.files, m.rows, m.bytes, m.errors, m.gaps, m.rollups, m.end)
	}
	return m
}
