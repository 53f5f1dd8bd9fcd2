package recount

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/tally"
)

// Bucket is the archive as a recount reads it (archive.Bucket).
type Bucket interface {
	Get(ctx context.Context, key string) ([]byte, error)
	List(ctx context.Context, prefix string) ([]string, error)
}

// Config is a recount's configuration.
type Config struct {
	// Options are the event-time rules of the aggregators whose counts are
	// recounted: their allowed lateness and dedup horizon. Retention is
	// not used; a recount keeps what it needs.
	Options tally.Options
	// Margin is how long before the first minute the replay starts (see
	// the package documentation).
	Margin time.Duration
	// Period is the span, in minutes, of the rows handed over at once; it
	// divides an hour, like the history's files.
	Period int64
	// Now is the clock; the archive cannot hold entries after it.
	Now func() time.Time
}

// DefaultMargin is Config.Margin's default.
const DefaultMargin = 10 * time.Minute

// Validate checks c.
func (c Config) Validate() error {
	o := c.Options
	o.Retention = o.DedupHorizon
	if err := o.Validate(); err != nil {
		return fmt.Errorf("recount: %w", err)
	}
	switch {
	case c.Margin < time.Minute:
		return fmt.Errorf("recount: margin %v is below a minute", c.Margin)
	case c.Period < 1 || 60%c.Period != 0:
		return fmt.Errorf("recount: period of %d minutes does not divide an hour", c.Period)
	case c.Now == nil:
		return errors.New("recount: no clock")
	}
	return nil
}

// Span is the Unix minutes [From, To).
type Span struct{ From, To int64 }

// Covering returns the whole periods that cover [from, to): from rounded
// down and to rounded up (to whole seconds) to a multiple of c.Period
// minutes.
func (c Config) Covering(from, to time.Time) Span {
	first, end := floorDiv(from.Unix(), 60), floorDiv(to.Unix()+59, 60)
	return Span{
		From: floorDiv(first, c.Period) * c.Period,
		To:   -floorDiv(-end, c.Period) * c.Period,
	}
}

// Hole is a break in the chain of a partition's archive files: a file
// names as the entry before it one that no file ends with, so the files
// between are missing (or were never written).
type Hole struct {
	Partition int
	// After is the key of the last file before the hole ("" when the hole
	// is at the replay's start), Before the key of the first file after
	// it.
	After, Before string
	// Want is the entry the file after the hole says precedes it; Have is
	// the last entry of the file before.
	Want, Have string
}

func (h *Hole) Error() string {
	if h.After == "" {
		return fmt.Sprintf("archive of partition %d has a hole: %s follows entry %s, but no file ends with it; the file before it is missing",
			h.Partition, h.Before, h.Want)
	}
	return fmt.Sprintf("archive of partition %d has a hole: %s follows entry %s, but the file before it, %s, ends at entry %s; the files of the entries between are missing",
		h.Partition, h.Before, h.Want, h.After, h.Have)
}

// ErrNotFinal is wrapped by the error of a recount whose minutes the
// archive does not hold as final (yet).
var ErrNotFinal = errors.New("recount: minutes not final in the archive")

// ErrBeforeArchive is wrapped by the error of a recount whose minutes
// begin before the partition's archive does: the log was trimmed before
// archiving began, so those entries were never archived.
var ErrBeforeArchive = errors.New("recount: minutes older than the archive")

// Handlers receive what a recount finds.
type Handlers struct {
	// Period is called with the rows of each period of the range, in
	// order (tally.Partition.Final's rows and order).
	Period func(s Span, rows []tally.FinalRow) error
	// Hole, if set, is told of each hole, with the minutes of the range it
	// leaves unchecked; the recount then goes on after the hole. If nil,
	// the recount fails with the *Hole.
	Hole func(h *Hole, unchecked Span) error
}

// Partition recounts partition p's minutes [from, to) from the archive in
// b; from and to must be multiples of cfg.Period.
func Partition(ctx context.Context, b Bucket, p int, from, to int64, cfg Config, h Handlers) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if from >= to || from%cfg.Period != 0 || to%cfg.Period != 0 {
		return fmt.Errorf("recount: minutes [%d, %d) are not whole periods of %d minutes", from, to, cfg.Period)
	}
	start := from*60_000 - cfg.Margin.Milliseconds()
	r := &replay{b: b, p: p, cfg: cfg, h: h, next: from, to: to, start: start}
	r.reset()
	const hourMs = 3_600_000
	last := floorDiv(cfg.Now().UnixMilli(), hourMs)
	for hour := floorDiv(start, hourMs); hour <= last; hour++ {
		keys, err := r.keys(ctx, hour*hourMs)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if _, _, l, _ := archive.ParseKey(k); r.have == "" && idMillisOf(l) < start {
				continue // wholly before the replay's start
			}
			done, err := r.file(ctx, k)
			if err != nil || done {
				return err
			}
		}
	}
	return fmt.Errorf("%w: partition %d: the archive ends at entry %s (file %s), watermark %s; minutes from %d on are not final in it",
		ErrNotFinal, p, cmp.Or(r.have, "none"), cmp.Or(r.haveKey, "none"), time.UnixMilli(r.tp.Watermark()).UTC().Format(time.RFC3339), r.next)
}

// replay is one partition's recount.
type replay struct {
	b        Bucket
	p        int
	cfg      Config
	h        Handlers
	tp       *tally.Partition
	next, to int64  // the minutes not handed over yet
	have     string // the last entry applied, and its file
	haveKey  string
	start    int64 // Unix ms at which the replay starts
}

func (r *replay) reset() {
	o := r.cfg.Options
	// A period is handed over as soon as it is final, so minutes need to
	// stay only a little past the dedup horizon.
	o.Retention = o.DedupHorizon + time.Duration(r.cfg.Period)*time.Minute + time.Hour
	r.tp = tally.NewPartition(r.p, o)
}

// keys lists the partition's files of the hour starting at ms in log order.
func (r *replay) keys(ctx context.Context, ms int64) ([]string, error) {
	keys, err := r.b.List(ctx, archive.PartitionPrefix(r.p, time.UnixMilli(ms)))
	if err != nil {
		return nil, fmt.Errorf("recount partition %d: %w", r.p, err)
	}
	firsts := make(map[string]string, len(keys))
	for _, k := range keys {
		_, first, _, err := archive.ParseKey(k)
		if err != nil {
			return nil, err
		}
		firsts[k] = first
	}
	slices.SortFunc(keys, func(a, b string) int { return partlog.CompareIDs(firsts[a], firsts[b]) })
	return keys, nil
}

// file applies one archive file and hands over the periods it makes
// final; done once the range is.
func (r *replay) file(ctx context.Context, key string) (done bool, err error) {
	data, err := r.b.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("recount partition %d: %w", r.p, err)
	}
	c, err := archive.ReadChunk(key, data)
	if err != nil {
		return false, err
	}
	switch {
	case r.have == "" && c.Previous == "" && idMillisOf(c.First) > r.start:
		// The archive's first file, and the log was trimmed before it
		// without being archived: its clicks may be missing.
		return false, fmt.Errorf("%w: partition %d: the archive begins with %s, after the replay's start at %s; the log before it was never archived",
			ErrBeforeArchive, r.p, key, time.UnixMilli(r.start).UTC().Format(time.RFC3339))
	case r.have == "" && c.Previous != "" && c.Previous != archive.LogStart && idMillisOf(c.Previous) >= r.start:
		// The file before this one is not wholly before the replay's
		// start, so it would have been read first: it is missing.
		if err := r.hole(&Hole{Partition: r.p, Before: key, Want: c.Previous}, c); err != nil {
			return false, err
		}
	case r.have == "":
		// The first file: what came before the replay is not its business.
	case partlog.CompareIDs(c.First, r.have) <= 0:
		return false, fmt.Errorf("%w: %s starts at entry %s, which %s holds already", archive.ErrCorrupt, key, c.First, r.haveKey)
	case c.Previous != r.have:
		if err := r.hole(&Hole{Partition: r.p, After: r.haveKey, Before: key, Want: c.Previous, Have: r.have}, c); err != nil {
			return false, err
		}
	}
	for id, e := range c.Decoded() {
		r.tp.Apply(id, e)
	}
	r.have, r.haveKey = c.Last, key
	for r.next < r.to {
		end := min((floorDiv(r.next, r.cfg.Period)+1)*r.cfg.Period, r.to)
		rows, err := r.tp.Final(r.next, end)
		if errors.Is(err, tally.ErrNotFinal) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("recount partition %d at %s: %w", r.p, key, err)
		}
		if err := r.h.Period(Span{From: r.next, To: end}, rows); err != nil {
			return false, err
		}
		r.next = end
	}
	return true, nil
}

// hole reports h, found before file c, to the Hole handler, or returns it
// without one; after it, the replay starts again at c.
func (r *replay) hole(h *Hole, c archive.Chunk) error {
	if r.h.Hole == nil {
		return h
	}
	// Start again as if the replay began here: minutes that may have
	// clicks from before the next file's first entry Margin on are not
	// checked.
	resume := floorDiv(floorDiv(idMillisOf(c.First)+r.cfg.Margin.Milliseconds(), 60_000)+r.cfg.Period-1, r.cfg.Period) * r.cfg.Period
	resume = min(max(resume, r.next), r.to)
	if err := r.h.Hole(h, Span{From: r.next, To: resume}); err != nil {
		return err
	}
	r.next = resume
	r.reset()
	return nil
}

// idMillisOf is the time part of a stream ID.
func idMillisOf(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	v, _ := strconv.ParseInt(ms, 10, 64)
	return v
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
