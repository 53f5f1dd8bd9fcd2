package archive

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/retry"
)

// Log is the partition log as the archiver reads it.
type Log interface {
	// Range returns up to count entries of partition p after the ID
	// after ("": from the start), in order.
	Range(ctx context.Context, p int, after string, count int64) ([]partlog.Entry, error)
	// Untrimmed reports whether partition p's log still holds every entry
	// ever appended.
	Untrimmed(ctx context.Context, p int) (bool, error)
}

// Offsets records how far each partition is archived.
type Offsets interface {
	// Archived is the ID of partition p's last archived entry, "" if none.
	Archived(ctx context.Context, p int) (string, error)
	// SaveArchived records offset as partition p's archived offset if epoch
	// is not older than the partition's fence, and fails with an error
	// wrapping ErrFenced otherwise. It never moves the offset back.
	SaveArchived(ctx context.Context, p int, epoch uint64, offset string) error
}

// Store is the object store the files go to.
type Store interface {
	Put(ctx context.Context, key string, data []byte) error
}

// ErrFenced is what Offsets.SaveArchived's error wraps when a newer owner
// holds the partition; Run then stops archiving it.
var ErrFenced = errors.New("archive: partition fenced by a newer owner")

// Config is the archiver's configuration.
type Config struct {
	Chunking
	// ReadCount is how many entries one read of the log asks for.
	ReadCount int64
	// Poll is how long the archiver waits when the log has no new entry.
	Poll time.Duration
	// RetryMin and RetryMax bound the pause after a failed write, doubled
	// after each failure and jittered.
	RetryMin, RetryMax time.Duration
}

// Validate checks c.
func (c Config) Validate() error {
	if err := c.Chunking.Validate(); err != nil {
		return err
	}
	switch {
	case c.ReadCount < 1:
		return fmt.Errorf("archive: read count %d is below 1", c.ReadCount)
	case c.Poll <= 0:
		return fmt.Errorf("archive: poll interval %v is not positive", c.Poll)
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("archive: retry pauses %v to %v", c.RetryMin, c.RetryMax)
	}
	return nil
}

// Archiver writes partitions' logs to the store, one Run per partition.
type Archiver struct {
	cfg     Config
	log     Log
	offsets Offsets
	store   Store
	m       *metrics
	logger  *slog.Logger
}

// New returns an Archiver; it does no I/O. reg may be nil.
func New(cfg Config, log Log, offsets Offsets, store Store, reg prometheus.Registerer, logger *slog.Logger) (*Archiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Archiver{cfg: cfg, log: log, offsets: offsets, store: store, m: newMetrics(reg), logger: logger}, nil
}

// Run archives partition p as its owner at epoch: every closed chunk after
// the archived offset is written, then the offset moves past it. It
// returns ctx's error when ctx ends, or an error wrapping ErrFenced once a
// newer owner holds the partition. Failures of the log, the store or the
// offsets are retried: the archive then falls behind and catches up.
func (a *Archiver) Run(ctx context.Context, p int, epoch uint64) error {
	logger := a.logger.With("partition", p, "epoch", epoch)
	var after string
	if err := a.retry(ctx, logger, "read offset", func() (err error) {
		after, err = a.offsets.Archived(ctx, p)
		return err
	}); err != nil {
		return err
	}
	a.m.archived.WithLabelValues(partitionLabel(p)).Set(float64(idMillis(after)) / 1000)
	if after == "" {
		// The first chunk of the archive: it says whether it starts the
		// log (nothing trimmed before archiving began), so that a recount
		// from before it knows whether there was anything to miss. The
		// log is trimmed only below the archived offset, so a writer of
		// this chunk after a crash sees the same.
		var whole bool
		if err := a.retry(ctx, logger, "read log info", func() (err error) {
			whole, err = a.log.Untrimmed(ctx, p)
			return err
		}); err != nil {
			return err
		}
		if whole {
			after = LogStart
		}
	}
	var q pending
	var enc encoder
	readFrom := after
	if readFrom == LogStart {
		readFrom = ""
	}
	for {
		n, closed := a.cfg.Cut(q.ids, q.events)
		if closed {
			if err := a.write(ctx, logger, &enc, p, epoch, after, q.entries[:n], q.events[:n]); err != nil {
				return err
			}
			after = q.ids[n-1]
			q.drop(n)
			continue
		}
		var got []partlog.Entry
		if err := a.retry(ctx, logger, "read log", func() (err error) {
			got, err = a.log.Range(ctx, p, readFrom, a.cfg.ReadCount)
			return err
		}); err != nil {
			return err
		}
		if len(got) == 0 {
			if err := retry.Sleep(ctx, a.cfg.Poll); err != nil {
				return err
			}
			continue
		}
		for _, e := range got {
			events, err := enc.count(p, e)
			if err != nil {
				// The aggregator stops the partition on the same entry;
				// archiving past it would leave a hole.
				a.m.errors.WithLabelValues("decode").Inc()
				return fmt.Errorf("archive partition %d: %w", p, err)
			}
			q.add(e, events)
		}
		readFrom = got[len(got)-1].ID
	}
}

// pending holds the entries read and not yet archived, in log order, with
// what Chunking.Cut needs of them. It holds the entries as the log client
// returned them, not decoded: a minute of rows would be live on the heap,
// scanned by every collection, for as long as its chunk stays open.
type pending struct {
	entries []partlog.Entry
	ids     []string
	events  []int
}

func (q *pending) add(e partlog.Entry, events int) {
	q.entries = append(q.entries, e)
	q.ids = append(q.ids, e.ID)
	q.events = append(q.events, events)
}

// drop forgets the first n entries, written.
func (q *pending) drop(n int) {
	// Cleared, the slots keep no written entry's data from being
	// collected until append moves the rest to a new array.
	clear(q.entries[:n])
	clear(q.ids[:n])
	q.entries, q.ids, q.events = q.entries[n:], q.ids[n:], q.events[n:]
}

// write writes one chunk, whose entries have events[i] events each, and
// moves the archived offset past it.
func (a *Archiver) write(ctx context.Context, logger *slog.Logger, enc *encoder, p int, epoch uint64, prev string, chunk []partlog.Entry, events []int) error {
	first, last := chunk[0].ID, chunk[len(chunk)-1].ID
	key := Key(p, first, last)
	total := 0
	for _, n := range events {
		total += n
	}
	data, err := enc.encode(p, prev, chunk, total)
	if err != nil {
		return err
	}
	if err := a.retry(ctx, logger, "write "+key, func() error { return a.store.Put(ctx, key, data) }); err != nil {
		return err
	}
	err = a.retry(ctx, logger, "save offset", func() error {
		err := a.offsets.SaveArchived(ctx, p, epoch, last)
		if errors.Is(err, ErrFenced) {
			return retry.Permanent(err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("archive partition %d: %w", p, err)
	}
	a.m.files.Inc()
	a.m.events.Add(float64(total))
	a.m.bytes.Add(float64(len(data)))
	a.m.archived.WithLabelValues(partitionLabel(p)).Set(float64(idMillis(last)) / 1000)
	logger.Debug("archived chunk", "key", key, "entries", len(chunk), "events", total, "bytes", len(data))
	return nil
}

// retry runs f until it succeeds, returns a retry.Permanent error, or
// ctx ends, counting and logging the failures.
func (a *Archiver) retry(ctx context.Context, logger *slog.Logger, what string, f func() error) error {
	return retry.Do(ctx, retry.Policy{Min: a.cfg.RetryMin, Max: a.cfg.RetryMax}, func(failures int, err error, _ time.Duration) {
		a.m.errors.WithLabelValues(opLabel(what)).Inc()
		if failures == 1 || failures%10 == 0 {
			logger.Warn("archive step failed, retrying", "step", what, "failures", failures, "err", err)
		}
	}, f)
}

func opLabel(what string) string {
	switch {
	case what == "read offset" || what == "save offset":
		return "offset"
	case what == "read log":
		return "log"
	default:
		return "store"
	}
}

// Defaults of RegisterFlags.
const (
	DefaultInterval  = time.Minute
	DefaultMaxEvents = 250_000
	DefaultReadCount = 1000
	DefaultPoll      = time.Second
	DefaultRetryMin  = 200 * time.Millisecond
	DefaultRetryMax  = 30 * time.Second
)

// RegisterFlags registers the archiver's flags on fs, with their defaults;
// bucket receives -archive.bucket, which says whether to archive at all.
func (c *Config) RegisterFlags(fs *flag.FlagSet, bucket *string) {
	fs.StringVar(bucket, "archive.bucket", "",
		"Object store of the raw archive and the history: a directory, file:///dir, or s3://bucket?region=R (README, The raw archive); empty: neither.")
	fs.DurationVar(&c.Interval, "archive.interval", DefaultInterval,
		"A file holds one partition's log entries of one interval of this length (by append time); divides an hour.")
	fs.IntVar(&c.MaxEvents, "archive.max-events", DefaultMaxEvents,
		"Most events in one file; a busier interval is split into several files. Bounds the archiver's memory per partition.")
	c.ReadCount = DefaultReadCount
	c.Poll = DefaultPoll
	c.RetryMin, c.RetryMax = DefaultRetryMin, DefaultRetryMax
}
