package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/clickagg/clickagg/archive"
)

// Bucket is the object store as the reader reads it.
type Bucket interface {
	Get(ctx context.Context, key string) ([]byte, error)
	// OpenReaderAt opens an object for reads of its parts (rollups);
	// ErrNotFound wrapped if there is none.
	OpenReaderAt(ctx context.Context, key string) (archive.ReaderAt, error)
	ListObjects(ctx context.Context, prefix string) ([]archive.Object, error)
}

// Filter restricts the clicks summed: set fields must equal the click's.
// IP is in canonical form, as the routers store it.
type Filter struct {
	Country, IP, UserID string
}

// Reader answers sums over a partition's history.
type Reader struct {
	bucket  Bucket
	cache   *cache // nil without WithCache
	applied atomic.Pointer[Applied]
}

// ReaderOption configures a Reader.
type ReaderOption func(*Reader)

// WithCache keeps up to about bytes of decoded files in memory, the least
// recently used dropped first, so that repeated queries over the same
// minutes do not read and decode the same files again. The files a range
// needs are still listed on every call: a file that went missing is a
// hole even while its rows are cached.
func WithCache(bytes int64) ReaderOption {
	return func(r *Reader) {
		if bytes > 0 {
			r.cache = newCache(bytes)
		}
	}
}

// NewReader returns a Reader over bucket, with no revision applied; it
// does no I/O.
func NewReader(bucket Bucket, opts ...ReaderOption) *Reader {
	r := &Reader{bucket: bucket}
	r.applied.Store(&Applied{})
	for _, o := range opts {
		o(r)
	}
	return r
}

// SetApplied makes the reader serve the revisions applied in a, from its
// next View on.
func (r *Reader) SetApplied(a Applied) { r.applied.Store(&a) }

// View is the history as of one set of applied revisions: a query reads
// through one View, so it never mixes two revisions of a minute.
type View struct {
	r       *Reader
	Applied Applied
}

// View returns a View of the revisions applied now.
func (r *Reader) View() View { return View{r: r, Applied: *r.applied.Load()} }

// Sums is r.View().Sums.
func (r *Reader) Sums(ctx context.Context, p int, from, to int64, f Filter, ad string) (map[string]int64, error) {
	return r.View().Sums(ctx, p, from, to, f, ad)
}

// Files returns the files served for partition p's minutes [from, to), in
// minute order, checked like Sums checks them.
func (v View) Files(ctx context.Context, p int, from, to int64) ([]File, error) {
	objs, err := v.files(ctx, p, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]File, 0, len(objs))
	for _, obj := range objs {
		f, err := v.r.read(ctx, p, obj)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// read returns the file of obj, checked, from the cache if it holds it.
func (r *Reader) read(ctx context.Context, p int, obj archive.Object) (File, error) {
	if r.cache != nil {
		if f, ok := r.cache.get(obj); ok {
			return f, nil
		}
	}
	key := obj.Key
	data, err := r.bucket.Get(ctx, key)
	if errors.Is(err, archive.ErrNotFound) {
		// Deleted after it was listed.
		return File{}, fmt.Errorf("%w: partition %d: %s is gone: %w", ErrHole, p, key, err)
	}
	if err != nil {
		return File{}, fmt.Errorf("history of partition %d: %w", p, err)
	}
	f, err := Read(key, data)
	if err != nil {
		return File{}, err
	}
	if r.cache != nil {
		r.cache.put(f, obj)
	}
	return f, nil
}

// ErrHole is wrapped by the errors of a range the history does not cover
// with files: a missing file is a hole, never zero clicks.
var ErrHole = fmt.Errorf("history: hole")

// Sums returns, per ad, the clicks of partition p in the minutes [from,
// to) that match f, from the files of v's revision of each period.
// The files must tile the range: a missing one fails the call with an
// error wrapping ErrHole and naming where the file should be, and a file
// that does not read back as written with one wrapping ErrCorrupt and
// naming it. ad, when not empty, keeps only that ad.
//
// Without a filter, the whole UTC days of the range are read from their
// rollups where one was built from the very files v serves for the day
// (rollupSums); the other minutes from the period files.
func (v View) Sums(ctx context.Context, p int, from, to int64, f Filter, ad string) (map[string]int64, error) {
	sums := map[string]int64{}
	at := from // the first minute not summed
	if f == (Filter{}) {
		for day := floorDiv(from+dayMinutes-1, dayMinutes); (day+1)*dayMinutes <= to; day++ {
			err := v.rollupSums(ctx, p, day, ad, sums)
			if errors.Is(err, errNoRollup) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if start := day * dayMinutes; at < start {
				if err := v.periodSums(ctx, p, at, start, f, ad, sums); err != nil {
					return nil, err
				}
			}
			at = (day + 1) * dayMinutes
		}
	}
	if at < to {
		if err := v.periodSums(ctx, p, at, to, f, ad, sums); err != nil {
			return nil, err
		}
	}
	return sums, nil
}

// periodSums adds to sums what Sums returns, from the period files alone.
func (v View) periodSums(ctx context.Context, p int, from, to int64, f Filter, ad string, sums map[string]int64) error {
	files, err := v.files(ctx, p, from, to)
	if err != nil {
		return err
	}
	var user, ip uint64
	if f.UserID != "" {
		user = xxhash.Sum64String(f.UserID)
	}
	if f.IP != "" {
		ip = xxhash.Sum64String(f.IP)
	}
	for _, obj := range files {
		file, err := v.r.read(ctx, p, obj)
		if err != nil {
			return err
		}
		rows := file.Rows
		if ad != "" {
			// Rows are sorted by ad_id.
			i, _ := slices.BinarySearchFunc(rows, ad, func(r Row, ad string) int { return strings.Compare(r.AdID, ad) })
			j := i
			for j < len(rows) && rows[j].AdID == ad {
				j++
			}
			rows = rows[i:j]
		}
		for _, row := range rows {
			if m := row.Minute / 60_000; m < from || m >= to || f.Country != "" && row.Country != f.Country {
				continue
			}
			n := row.Clicks
			if f.UserID != "" || f.IP != "" {
				n = 0
				for i := range row.UserIDHashes {
					if (f.UserID == "" || row.UserIDHashes[i] == user) && (f.IP == "" || row.IPHashes[i] == ip) {
						n++
					}
				}
			}
			if n > 0 {
				sums[row.AdID] += n
			}
		}
	}
	return nil
}

// files returns the files of partition p that hold the minutes [from,
// to), of v's revision for each period, checking that they tile the
// range. A period whose revision's file is missing is a hole, even if a
// file of another revision is there.
func (v View) files(ctx context.Context, p int, from, to int64) ([]archive.Object, error) {
	spans := map[[2]int64]map[int]bool{}
	objs := map[string]archive.Object{}
	for h := floorDiv(from, 60); h*60 < to; h++ {
		listed, err := v.r.bucket.ListObjects(ctx, HourPrefix(p, h*60))
		if err != nil {
			return nil, fmt.Errorf("history of partition %d: %w", p, err)
		}
		for _, o := range listed {
			k := o.Key
			objs[k] = o
			n, err := ParseKey(k)
			if err != nil {
				return nil, err
			}
			if n.To <= from || n.From >= to {
				continue
			}
			span := [2]int64{n.From, n.To}
			if spans[span] == nil {
				spans[span] = map[int]bool{}
			}
			spans[span][n.Revision] = true
		}
	}
	var names []Name
	for span, revs := range spans {
		rev := v.Applied.For(p, span[0], span[1])
		if !revs[rev] {
			if rev == 0 {
				// Only files of revisions not applied (or applied over
				// other spans): the aggregators never wrote this period.
				continue
			}
			return nil, fmt.Errorf("%w: partition %d: revision %d is applied to minutes %d to %d, but its file %s is missing",
				ErrHole, p, rev, span[0], span[1], Key(p, span[0], span[1], rev))
		}
		names = append(names, Name{Partition: p, From: span[0], To: span[1], Revision: rev})
	}
	slices.SortFunc(names, func(a, b Name) int { return int(a.From - b.From) })
	at := from
	out := make([]archive.Object, 0, len(names))
	for _, n := range names {
		if n.From > at {
			break
		}
		if n.From < at && len(out) > 0 {
			return nil, fmt.Errorf("%w: partition %d: history files overlap at minute %d (%s)", ErrCorrupt, p, at, Key(p, n.From, n.To, n.Revision))
		}
		out = append(out, objs[Key(p, n.From, n.To, n.Revision)])
		at = n.To
	}
	if at < to {
		return nil, fmt.Errorf("%w: partition %d has no history file for minute %d (from %d to %d asked), under %s",
			ErrHole, p, at, from, to, HourPrefix(p, at))
	}
	return out, nil
}
