package recount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/reconcile/reconciletest"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
)

func TestMain(m *testing.M) { os.Exit(testserver.Run(m)) }

const (
	base  = int64(1_800_000_000_000) // 2027-01-15T08:00:00Z
	hours = 3
)

var opts = tally.Options{AllowedLateness: 5 * time.Second, DedupHorizon: 5 * time.Minute, Retention: 1000 * time.Hour}

// archived writes entries to partition p's log in a real Redis, runs the
// archiver over it until every closed chunk is in a directory bucket, and
// returns the bucket.
func archived(t *testing.T, p int, entries []partlog.Entry) (*archive.Bucket, string) {
	return archivedAfterTrim(t, p, entries, 0)
}

// archivedAfterTrim is archived, with the first trim entries trimmed from
// the log before archiving begins.
func archivedAfterTrim(t *testing.T, p int, entries []partlog.Entry, trim int) (*archive.Bucket, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := archive.OpenBucket(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	reconciletest.ArchiveAfterTrim(t, b, p, entries, trim)
	return b, dir
}

func config() Config {
	return Config{Options: opts, Margin: DefaultMargin, Period: 15, Now: func() time.Time { return time.UnixMilli(base + hours*3_600_000) }}
}

// TestPartitionEqualsAggregator recounts ranges of a three-hour log from
// its archive: every period's rows, revisions and per-click hashes equal
// the state of the aggregator that applied the whole log. Clicks appended
// before their minute began (clock skew), duplicates sent minutes apart
// and clicks that expired are all in the log, so a replay that started
// at the range, or with a watermark of its own, would differ.
func TestPartitionEqualsAggregator(t *testing.T) {
	const p = 5
	entries := reconciletest.Log(1, base, hours)
	b, _ := archived(t, p, entries)
	want := reconciletest.Truth(t, p, entries, opts)
	ctx := context.Background()
	first := base / 60_000
	for _, r := range []Span{{first + 15, first + 30}, {first + 30, first + 120}, {first + 90, first + 105}, {first, first + 165}} {
		var spans []Span
		err := Partition(ctx, b, p, r.From, r.To, config(), Handlers{Period: func(s Span, rows []tally.FinalRow) error {
			spans = append(spans, s)
			exp, err := want.Final(s.From, s.To)
			if err != nil {
				return err
			}
			if len(rows) == 0 || !reflect.DeepEqual(rows, exp) {
				return fmt.Errorf("minutes %v: %d rows differ from the aggregator's %d", s, len(rows), len(exp))
			}
			return nil
		}})
		if err != nil {
			t.Fatalf("recount %v: %v", r, err)
		}
		if int64(len(spans)) != (r.To-r.From)/15 || spans[0].From != r.From || spans[len(spans)-1].To != r.To {
			t.Fatalf("recount %v handed over %v", r, spans)
		}
	}

	// The last minutes are not final in the archive.
	err := Partition(ctx, b, p, first+165, first+180, config(), Handlers{Period: func(Span, []tally.FinalRow) error { return nil }})
	if !errors.Is(err, ErrNotFinal) {
		t.Fatalf("recount of the last minutes = %v, want ErrNotFinal", err)
	}
	if err := Partition(ctx, b, p, first+1, first+15, config(), Handlers{}); err == nil {
		t.Fatal("a range that is not whole periods was recounted")
	}
}

// TestPartitionHole deletes one archive file: a recount across it fails
// naming the files on both sides; with a Hole handler it reports the hole
// and the minutes it could not check, and the periods after them still
// equal the aggregator's.
func TestPartitionHole(t *testing.T) {
	const p = 9
	entries := reconciletest.Log(2, base, hours)
	b, dir := archived(t, p, entries)
	want := reconciletest.Truth(t, p, entries, opts)
	ctx := context.Background()
	first := base / 60_000
	// The file with the entries of minute 60.
	at := time.UnixMilli(base + 3_600_000)
	keys, err := b.List(ctx, archive.PartitionPrefix(p, at))
	if err != nil || len(keys) == 0 {
		t.Fatal(keys, err)
	}
	var gone string
	for _, k := range keys {
		if _, f, _, _ := archive.ParseKey(k); idMillisOf(f) >= base+3_600_000 {
			gone = k
			break
		}
	}
	if err := os.Remove(filepath.Join(dir, gone)); err != nil {
		t.Fatal(err)
	}
	var hole *Hole
	err = Partition(ctx, b, p, first+30, first+120, config(), Handlers{Period: func(Span, []tally.FinalRow) error { return nil }})
	if !errors.As(err, &hole) || hole.Partition != p || hole.Want == hole.Have {
		t.Fatalf("recount across a deleted file = %v, want a Hole", err)
	}
	if _, f, _, _ := archive.ParseKey(hole.Before); idMillisOf(f) <= idMillisOf(hole.Have) {
		t.Fatalf("hole %+v: the file after it does not follow the one before", hole)
	}

	// A replay that would begin inside the deleted file.
	cfg := config()
	cfg.Period, cfg.Margin = 5, 9*time.Minute+30*time.Second
	err = Partition(ctx, b, p, first+70, first+75, cfg, Handlers{Period: func(Span, []tally.FinalRow) error { return nil }})
	if !errors.As(err, &hole) || hole.After != "" || hole.Want == "" {
		t.Fatalf("recount starting in a deleted file = %v, want a Hole", err)
	}

	var unchecked []Span
	var checked []Span
	err = Partition(ctx, b, p, first+30, first+120, config(), Handlers{
		Period: func(s Span, rows []tally.FinalRow) error {
			checked = append(checked, s)
			exp, err := want.Final(s.From, s.To)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(rows, exp) {
				return fmt.Errorf("minutes %v differ from the aggregator's", s)
			}
			return nil
		},
		Hole: func(h *Hole, s Span) error {
			unchecked = append(unchecked, s)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The deleted file's entries begin in minute 60 and may hold late
	// clicks of the minutes before it: the periods not final when the hole
	// was found are not checked, nor those before the next file plus the
	// margin, rounded up to a period.
	if len(unchecked) != 1 || unchecked[0].From != first+45 || unchecked[0].To != first+75 {
		t.Fatalf("unchecked minutes %v, want [%d, %d)", unchecked, first+45, first+75)
	}
	if len(checked) != 4 || checked[0].To != first+45 || checked[1].From != first+75 {
		t.Fatalf("checked %v", checked)
	}
}

// TestCompare checks each kind of difference between a history file's
// rows and a recount: a row only on one side, other counts, and equal
// counts of other clicks; equal rows in another order are no difference.
func TestCompare(t *testing.T) {
	rec := []tally.FinalRow{
		{Minute: 10, AdID: "a", Country: "DE", Clicks: 2, UserHashes: []uint64{1, 2}, IPHashes: []uint64{5, 6}},
		{Minute: 10, AdID: "b", Country: "DE", Clicks: 1, UserHashes: []uint64{3}, IPHashes: []uint64{7}},
		{Minute: 11, AdID: "b", Country: "US", Clicks: 1, UserHashes: []uint64{3}, IPHashes: []uint64{7}},
		{Minute: 12, AdID: "c", Country: "US", Clicks: 2, UserHashes: []uint64{1, 1}, IPHashes: []uint64{5, 6}},
	}
	row := func(r tally.FinalRow) history.Row {
		return history.Row{Minute: r.Minute * 60_000, AdID: r.AdID, Country: r.Country, Clicks: r.Clicks, UserIDHashes: r.UserHashes, IPHashes: r.IPHashes}
	}
	same := []history.Row{row(rec[3]), row(rec[2]), row(rec[1]), row(rec[0])}
	same[3].UserIDHashes, same[3].IPHashes = []uint64{2, 1}, []uint64{6, 5}
	if got := Compare(same, rec); len(got) != 0 {
		t.Fatalf("equal rows: %+v", got)
	}
	changed := []history.Row{row(rec[0]), row(rec[1]), row(rec[3]), {Minute: 13 * 60_000, AdID: "d", Country: "FR", Clicks: 1, UserIDHashes: []uint64{1}, IPHashes: []uint64{1}}}
	changed[0].Clicks, changed[0].UserIDHashes, changed[0].IPHashes = 3, []uint64{1, 2, 2}, []uint64{5, 6, 6}
	changed[2].UserIDHashes = []uint64{1, 2}
	want := []Mismatch{
		{Minute: 10, AdID: "a", Country: "DE", Served: 3, Recounted: 2, Clicks: true},
		{Minute: 11, AdID: "b", Country: "US", Recounted: 1, Clicks: true},
		{Minute: 12, AdID: "c", Country: "US", Served: 2, Recounted: 2},
		{Minute: 13, AdID: "d", Country: "FR", Served: 1, Clicks: true},
	}
	if got := Compare(changed, rec); !reflect.DeepEqual(got, want) {
		t.Fatalf("Compare = %+v\nwant %+v", got, want)
	}
}

// TestPartitionBeforeArchive recounts minutes that lie before the first
// archive file of a log whose first hour was trimmed before archiving
// began: a clear refusal, not an empty recount. A log archived from its
// first entry recounts the minutes before that entry as empty.
func TestPartitionBeforeArchive(t *testing.T) {
	const p = 2
	ctx := context.Background()
	entries := reconciletest.Log(3, base, hours)
	first := base / 60_000
	none := Handlers{Period: func(Span, []tally.FinalRow) error { return nil }}
	b, _ := archivedAfterTrim(t, p, entries, 1800)
	for _, r := range []Span{{first, first + 15}, {first + 45, first + 75}} {
		if err := Partition(ctx, b, p, r.From, r.To, config(), none); !errors.Is(err, ErrBeforeArchive) {
			t.Fatalf("recount of %v before the archive = %v, want ErrBeforeArchive", r, err)
		}
	}
	if err := Partition(ctx, b, p, first+75, first+90, config(), none); err != nil {
		t.Fatalf("recount of minutes in the archive: %v", err)
	}
	b, _ = archived(t, p+1, entries[1800:])
	var rows int
	err := Partition(ctx, b, p+1, first, first+15, config(), Handlers{Period: func(_ Span, r []tally.FinalRow) error { rows += len(r); return nil }})
	if err != nil || rows != 0 {
		t.Fatalf("recount before a log's first entry: %d rows, %v", rows, err)
	}
}
