package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/parquet-go/parquet-go"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/topn"
)

// A rollup sums a partition's clicks per ad over one UTC day, from the
// day's period files, so that a count over many days reads one small file
// per day and a popular-ads query one column pair per day instead of every
// (minute, ad, country) row with its click hashes. It is only an
// accelerator: the period files stay the history, a query uses a rollup
// only where it would read exactly the files the rollup was built from,
// and a missing or stale rollup means reading those files.
//
//	history-rollup/date=2026-12-07/partition=017/ads.parquet
//
// Rollups live beside history/, not in it, so that whoever lists the
// history (the billing export, reconcile) finds period files only.

// RollupRow is a rollup's row: an ad's clicks in the day.
type RollupRow struct {
	AdID   string `parquet:"ad_id"`
	Clicks int64  `parquet:"clicks"`
}

const (
	rollupPrefix = "history-rollup/"
	metaDay      = "clickagg.day"
	metaPeriods  = "clickagg.periods"
	// RollupRowGroup is the rows of one row group: a count of one ad reads
	// the one row group whose ad_id bounds hold it, a few tens of KB.
	RollupRowGroup = 2048
	dayMinutes     = 24 * 60
)

// RollupKey is the key of partition p's rollup of the UTC day that starts
// at Unix minute day*1440.
func RollupKey(p int, day int64) string {
	t := time.Unix(day*dayMinutes*60, 0).UTC()
	return fmt.Sprintf("%sdate=%s/partition=%03d/ads.parquet", rollupPrefix, t.Format(time.DateOnly), p)
}

// rollupRows is sums as rollup rows, sorted by ad_id.
func rollupRows(sums map[string]int64) []RollupRow {
	rows := make([]RollupRow, 0, len(sums))
	for ad, n := range sums {
		rows = append(rows, RollupRow{AdID: ad, Clicks: n})
	}
	slices.SortFunc(rows, func(a, b RollupRow) int { return strings.Compare(a.AdID, b.AdID) })
	return rows
}

// EncodeRollup encodes partition p's rollup of day, built from the period
// files periods (which tile the day, in order), with rows sorted by ad_id.
// The bytes depend on its arguments alone, so writing a rollup again
// gives the same object.
func EncodeRollup(p int, day int64, periods []Name, rows []RollupRow) ([]byte, error) {
	if err := tilesDay(day, periods); err != nil {
		return nil, fmt.Errorf("encode rollup of partition %d: %w", p, err)
	}
	var clicks int64
	for i, r := range rows {
		if i > 0 && rows[i-1].AdID >= r.AdID {
			return nil, fmt.Errorf("encode rollup of partition %d day %d: rows not sorted by ad_id at %d", p, day, i)
		}
		clicks += r.Clicks
	}
	buf := bytes.NewBuffer(make([]byte, 0, 4096+8*len(rows)))
	w := parquet.NewGenericWriter[RollupRow](buf,
		parquet.Compression(archive.Compression),
		parquet.MaxRowsPerRowGroup(RollupRowGroup),
		parquet.CreatedBy("clickagg", "history-"+formatVersion, ""),
		parquet.KeyValueMetadata(metaFormat, formatVersion),
		parquet.KeyValueMetadata(metaPartition, strconv.Itoa(p)),
		parquet.KeyValueMetadata(metaDay, strconv.FormatInt(day, 10)),
		parquet.KeyValueMetadata(metaPeriods, periodsString(periods)),
		parquet.KeyValueMetadata(metaClicks, strconv.FormatInt(clicks, 10)),
	)
	// Written a row group at a time: the writer then flushes each at the
	// same rows whatever its buffers, which keeps the bytes a function of
	// the rows.
	for i := 0; i < len(rows); i += RollupRowGroup {
		if _, err := w.Write(rows[i:min(i+RollupRowGroup, len(rows))]); err != nil {
			return nil, fmt.Errorf("encode rollup of partition %d day %d: %w", p, day, err)
		}
		if err := w.Flush(); err != nil {
			return nil, fmt.Errorf("encode rollup of partition %d day %d: %w", p, day, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encode rollup of partition %d day %d: %w", p, day, err)
	}
	return buf.Bytes(), nil
}

// periodsString is "from-to_rN" of each period, comma-separated.
func periodsString(periods []Name) string {
	parts := make([]string, len(periods))
	for i, n := range periods {
		parts[i] = fmt.Sprintf("%d-%d_r%d", n.From, n.To, n.Revision)
	}
	return strings.Join(parts, ",")
}

func parsePeriods(p int, s string) ([]Name, error) {
	var out []Name
	for part := range strings.SplitSeq(s, ",") {
		n := Name{Partition: p}
		if _, err := fmt.Sscanf(part, "%d-%d_r%d", &n.From, &n.To, &n.Revision); err != nil {
			return nil, fmt.Errorf("period %q", part)
		}
		out = append(out, n)
	}
	return out, nil
}

// tilesDay checks that periods cover day's minutes in order, without gap
// or overlap.
func tilesDay(day int64, periods []Name) error {
	at := day * dayMinutes
	for _, n := range periods {
		if n.From != at || n.To <= n.From {
			return fmt.Errorf("periods %s do not tile day %d at minute %d", periodsString(periods), day, at)
		}
		at = n.To
	}
	if at != (day+1)*dayMinutes {
		return fmt.Errorf("periods %s do not tile day %d at minute %d", periodsString(periods), day, at)
	}
	return nil
}

// errNoRollup is a rollup that cannot serve a query: missing, or built
// from other files than the ones served now. The query reads the period
// files instead.
var errNoRollup = errors.New("history: no usable rollup")

// rollup is an open rollup file.
type rollup struct {
	key    string
	f      *parquet.File
	clicks int64 // what its metadata says its rows add up to
	close  func() error
}

func (r *rollup) fail(format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, r.key, fmt.Sprintf(format, args...))
}

// openRollup opens partition p's rollup of day, if it was built from the
// period files v serves for the day; else errNoRollup. A rollup that does
// not read back as written is ErrCorrupt.
func (v View) openRollup(ctx context.Context, p int, day int64) (*rollup, error) {
	key := RollupKey(p, day)
	ra, err := v.r.bucket.OpenReaderAt(ctx, key)
	if errors.Is(err, archive.ErrNotFound) {
		return nil, errNoRollup
	}
	if err != nil {
		return nil, fmt.Errorf("history of partition %d: %w", p, err)
	}
	r := &rollup{key: key, close: ra.Close}
	fail := func(format string, args ...any) (*rollup, error) {
		ra.Close()
		return nil, r.fail(format, args...)
	}
	f, err := parquet.OpenFile(ra, ra.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return fail("%v", err)
	}
	meta := func(k string) string { v, _ := f.Lookup(k); return v }
	if m := meta(metaFormat); m != formatVersion {
		return fail("format %q, this build reads %q", m, formatVersion)
	}
	if meta(metaPartition) != strconv.Itoa(p) || meta(metaDay) != strconv.FormatInt(day, 10) {
		return fail("metadata names partition %s, day %s", meta(metaPartition), meta(metaDay))
	}
	periods, err := parsePeriods(p, meta(metaPeriods))
	if err == nil {
		err = tilesDay(day, periods)
	}
	if err != nil {
		return fail("%v", err)
	}
	// The rollup is of the files v serves only if each period's revision
	// is the one applied: a revision applied over part of the day since
	// makes it stale.
	for _, n := range periods {
		if v.Applied.For(p, n.From, n.To) != n.Revision {
			ra.Close()
			return nil, errNoRollup
		}
	}
	clicks, err := strconv.ParseInt(meta(metaClicks), 10, 64)
	if err != nil {
		return fail("clicks %q", meta(metaClicks))
	}
	r.f, r.clicks = f, clicks
	return r, nil
}

// rollupSums adds to sums the clicks per ad (only ad's, if not empty) of
// partition p's day from its rollup, if the rollup was built from the
// period files v serves for the day; else errNoRollup, and sums is
// unchanged. A rollup that does not read back as written is ErrCorrupt.
func (v View) rollupSums(ctx context.Context, p int, day int64, ad string, sums map[string]int64) error {
	if ad == "" {
		l, err := v.rollupList(ctx, p, day)
		if err != nil {
			return err
		}
		for _, ac := range l {
			sums[ac.AdID] += ac.Count
		}
		return nil
	}
	r, err := v.openRollup(ctx, p, day)
	if err != nil {
		return err
	}
	defer r.close()
	f, fail := r.f, r.fail
	groups := f.RowGroups()
	// Rows are sorted by ad_id: the row groups that can hold ad are
	// those whose ad_id bounds do.
	mds := f.Metadata().RowGroups
	var got int64
	for i, rg := range groups {
		st := mds[i].Columns[0].MetaData.Statistics
		if st.MinValue == nil || st.MaxValue == nil {
			return fail("row group %d has no ad_id bounds", i)
		}
		if ad < string(st.MinValue) || ad > string(st.MaxValue) {
			continue
		}
		g, err := readRollupGroup(rg)
		if err != nil {
			return fail("row group %d: %v", i, err)
		}
		j, ok := sort.Find(len(g.clicks), func(k int) int { return strings.Compare(ad, g.ad(k)) })
		if ok {
			got += g.clicks[j]
		}
	}
	if got > 0 {
		sums[ad] += got
	}
	return nil
}

// rollupList returns the clicks per ad of partition p's day from its
// rollup, sorted by ad_id, under the conditions of rollupSums.
func (v View) rollupList(ctx context.Context, p int, day int64) (AdSums, error) {
	r, err := v.openRollup(ctx, p, day)
	if err != nil {
		return nil, err
	}
	defer r.close()
	fail := func(format string, args ...any) (AdSums, error) { return nil, r.fail(format, args...) }
	groups := r.f.RowGroups()
	// A whole rollup is checked like a period file: sorted, positive, and
	// adding up to its metadata.
	gs := make([]rollupGroup, len(groups))
	rows := 0
	var sum int64
	prev := ""
	for i, rg := range groups {
		g, err := readRollupGroup(rg)
		if err != nil {
			return fail("row group %d: %v", i, err)
		}
		for k, n := range g.clicks {
			a := g.ad(k)
			if n <= 0 || (i > 0 || k > 0) && a <= prev {
				return fail("row group %d row %d: ad %q with %d clicks, out of order or not positive", i, k, a, n)
			}
			prev = a
			sum += n
		}
		rows += len(g.clicks)
		gs[i] = g
	}
	if sum != r.clicks {
		return fail("rows add up to %d clicks, metadata says %d", sum, r.clicks)
	}
	out := make(AdSums, 0, rows)
	for _, g := range gs {
		for k, n := range g.clicks {
			// The ad_ids alias the group's bytes, which live as long as
			// the list.
			out = append(out, topn.AdCount{AdID: g.ad(k), Count: n})
		}
	}
	return out, nil
}

// rollupGroup is a row group of a rollup, as its two columns.
type rollupGroup struct {
	data    []byte   // the ad_ids, end to end
	offsets []uint32 // ad k is data[offsets[k]:offsets[k+1]]
	clicks  []int64
}

// ad returns ad k, aliasing g's bytes.
func (g *rollupGroup) ad(k int) string {
	return unsafe.String(unsafe.SliceData(g.data[g.offsets[k]:]), int(g.offsets[k+1]-g.offsets[k]))
}

// readRollupGroup reads a row group's columns page by page, without
// building rows: a count reads one such group a day.
func readRollupGroup(rg parquet.RowGroup) (rollupGroup, error) {
	var g rollupGroup
	n := int(rg.NumRows())
	cols := rg.ColumnChunks()
	if len(cols) != 2 {
		return g, fmt.Errorf("%d columns, want ad_id and clicks", len(cols))
	}
	g.offsets = make([]uint32, 1, n+1)
	g.clicks = make([]int64, 0, n)
	for c, cc := range cols {
		pages := cc.Pages()
		for {
			page, err := pages.ReadPage()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				pages.Close()
				return g, err
			}
			vals := page.Data()
			switch c {
			case 0:
				data, offs := vals.ByteArray()
				if len(offs) != int(page.NumValues())+1 {
					pages.Close()
					return g, fmt.Errorf("ad_id page of %d values has %d offsets", page.NumValues(), len(offs))
				}
				base := uint32(len(g.data)) - offs[0]
				g.data = append(g.data, data[offs[0]:offs[len(offs)-1]]...)
				for _, o := range offs[1:] {
					g.offsets = append(g.offsets, base+o)
				}
			case 1:
				g.clicks = append(g.clicks, vals.Int64()...)
			}
			parquet.Release(page)
		}
		pages.Close()
	}
	if len(g.offsets) != n+1 || len(g.clicks) != n {
		return g, fmt.Errorf("%d rows, %d ad_ids and %d clicks", n, len(g.offsets)-1, len(g.clicks))
	}
	return g, nil
}
