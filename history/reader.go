package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/clickagg/clickagg/archive"
)

// Bucket is the object store as the reader reads it.
type Bucket interface {
	Get(ctx context.Context, key string) ([]byte, error)
	List(ctx context.Context, prefix string) ([]string, error)
}

// Filter restricts the clicks summed: set fields must equal the click's.
// IP is in canonical form, as the routers store it.
type Filter struct {
	Country, IP, UserID string
}

// Reader answers sums over a partition's history.
type Reader struct {
	bucket Bucket
	cache  *cache // nil without WithCache
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

// NewReader returns a Reader over bucket; it does no I/O.
func NewReader(bucket Bucket, opts ...ReaderOption) *Reader {
	r := &Reader{bucket: bucket}
	for _, o := range opts {
		o(r)
	}
	return r
}

// ErrHole is wrapped by the errors of a range the history does not cover
// with files: a missing file is a hole, never zero clicks.
var ErrHole = fmt.Errorf("history: hole")

// Sums returns, per ad, the clicks of partition p in the minutes [from,
// to) that match f, from the files of the latest revision of each period.
// The files must tile the range: a missing one fails the call with an
// error wrapping ErrHole and naming where the file should be, and a file
// that does not read back as written with one wrapping ErrCorrupt and
// naming it. ad, when not empty, keeps only that ad.
func (r *Reader) Sums(ctx context.Context, p int, from, to int64, f Filter, ad string) (map[string]int64, error) {
	files, err := r.files(ctx, p, from, to)
	if err != nil {
		return nil, err
	}
	var user, ip uint64
	if f.UserID != "" {
		user = xxhash.Sum64String(f.UserID)
	}
	if f.IP != "" {
		ip = xxhash.Sum64String(f.IP)
	}
	sums := map[string]int64{}
	for _, key := range files {
		file, err := r.read(ctx, p, key)
		if err != nil {
			return nil, err
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
	return sums, nil
}

// read returns the file under key, from the cache if it holds it.
func (r *Reader) read(ctx context.Context, p int, key string) (File, error) {
	if r.cache != nil {
		if f, ok := r.cache.get(key); ok {
			return f, nil
		}
	}
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
		r.cache.put(f)
	}
	return f, nil
}

// files returns the keys of the files of partition p that hold the minutes
// [from, to), the latest revision of each period, checking that they tile
// the range.
func (r *Reader) files(ctx context.Context, p int, from, to int64) ([]string, error) {
	best := map[[2]int64]Name{}
	for h := floorDiv(from, 60); h*60 < to; h++ {
		keys, err := r.bucket.List(ctx, HourPrefix(p, h*60))
		if err != nil {
			return nil, fmt.Errorf("history of partition %d: %w", p, err)
		}
		for _, k := range keys {
			n, err := ParseKey(k)
			if err != nil {
				return nil, err
			}
			if n.To <= from || n.From >= to {
				continue
			}
			span := [2]int64{n.From, n.To}
			if b, ok := best[span]; !ok || n.Revision > b.Revision {
				best[span] = n
			}
		}
	}
	names := make([]Name, 0, len(best))
	for _, n := range best {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b Name) int { return int(a.From - b.From) })
	at := from
	keys := make([]string, 0, len(names))
	for _, n := range names {
		if n.From > at {
			break
		}
		if n.From < at && len(keys) > 0 {
			return nil, fmt.Errorf("%w: partition %d: history files overlap at minute %d (%s)", ErrCorrupt, p, at, Key(p, n.From, n.To, n.Revision))
		}
		keys = append(keys, Key(p, n.From, n.To, n.Revision))
		at = n.To
	}
	if at < to {
		return nil, fmt.Errorf("%w: partition %d has no history file for minute %d (from %d to %d asked), under %s",
			ErrHole, p, at, from, to, HourPrefix(p, at))
	}
	return keys, nil
}
