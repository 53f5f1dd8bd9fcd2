package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/reconcile/reconciletest"
	"github.com/clickagg/clickagg/recount"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
)

func TestMain(m *testing.M) { os.Exit(testserver.Run(m)) }

const (
	base   = int64(1_800_000_000_000) // 2027-01-15T08:00:00Z
	hours  = 3
	period = 15
)

var opts = tally.Options{AllowedLateness: 5 * time.Second, DedupHorizon: 5 * time.Minute, Retention: 1000 * time.Hour}

// fixture is two partitions' archive and the history their aggregators
// wrote, in one directory bucket, as in a cluster.
type fixture struct {
	b     *archive.Bucket
	dir   string
	truth map[int]*tally.Partition
}

var parts = []int{3, 7}

func newFixture(t *testing.T) *fixture {
	ctx := context.Background()
	f := &fixture{dir: t.TempDir(), truth: map[int]*tally.Partition{}}
	var err error
	if f.b, err = archive.OpenBucket(ctx, f.dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.b.Close() })
	first := base / 60_000
	for i, p := range parts {
		entries := reconciletest.Log(uint64(i+1), base, hours)
		reconciletest.Archive(t, f.b, p, entries)
		f.truth[p] = reconciletest.Truth(t, p, entries, opts)
		reconciletest.History(t, f.b, p, f.truth[p], first, first+165, period)
	}
	return f
}

func (f *fixture) input(from, to int64) Input {
	return Input{
		Archive: f.b, History: history.NewReader(f.b).View(), Partitions: parts, From: from, To: to,
		Recount: recount.Config{Options: opts, Margin: recount.DefaultMargin, Period: period,
			Now: func() time.Time { return time.UnixMilli(base + hours*3_600_000) }},
		Parallel: 2,
	}
}

// rows returns partition p's final rows of the period at minute m, cloned
// so that a test can change them.
func (f *fixture) rows(t *testing.T, p int, m int64) []tally.FinalRow {
	rows, err := f.truth[p].Final(m, m+period)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]tally.FinalRow, len(rows))
	for i, r := range rows {
		r.UserHashes, r.IPHashes = slices.Clone(r.UserHashes), slices.Clone(r.IPHashes)
		out[i] = r
	}
	return out
}

// replace stores data under key until the test ends, then puts the
// original back.
func (f *fixture) replace(t *testing.T, key string, data []byte) {
	path := filepath.Join(f.dir, key)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if data == nil {
		err = os.Remove(path)
	} else {
		err = os.WriteFile(path, data, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func encode(t *testing.T, p int, m int64, rows []tally.FinalRow) []byte {
	data, err := history.Encode(history.Name{Partition: p, From: m, To: m + period}, rows)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestReconcile recounts two partitions' archive and compares them with
// the history written from the same logs, then with one thing changed at
// a time: each change, and nothing else, is in the report.
func TestReconcile(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	first := base / 60_000
	from, to := first+15, first+120
	periods := int64(len(parts)) * (120 - 15) / period
	var rows, clicks int64
	for _, p := range parts {
		for m := from; m < to; m += period {
			for _, r := range f.rows(t, p, m) {
				rows++
				clicks += r.Clicks
			}
		}
	}
	run := func(t *testing.T) *Report {
		t.Helper()
		rep, err := Run(ctx, f.input(from, to))
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}

	t.Run("equal", func(t *testing.T) {
		rep := run(t)
		if !rep.OK() || rep.Result() != "OK" || len(rep.Mismatches) != 0 || rep.UncheckedMinutes != 0 {
			t.Fatalf("report of equal history: %+v", rep)
		}
		if int64(rep.Periods) != periods || rep.Rows != rows || rep.Clicks != clicks || rows == 0 {
			t.Fatalf("compared %d periods, %d rows, %d clicks; want %d, %d, %d", rep.Periods, rep.Rows, rep.Clicks, periods, rows, clicks)
		}
	})

	// The period of partition 3 at minute 30 of the log.
	const p = 3
	m := first + 30
	key := history.Key(p, m, m+period, 0)

	t.Run("count differs", func(t *testing.T) {
		rs := f.rows(t, p, m)
		r := &rs[len(rs)/2]
		want := Mismatch{Partition: p, Minute: time.Unix(r.Minute*60, 0).UTC(), AdID: r.AdID, Country: r.Country,
			Served: r.Clicks + 1, Recounted: r.Clicks, Differs: DiffersCount}
		r.Clicks++
		r.UserHashes, r.IPHashes = append(r.UserHashes, 1), append(r.IPHashes, 2)
		f.replace(t, key, encode(t, p, m, rs))
		rep := run(t)
		if len(rep.Mismatches) != 1 || rep.Mismatches[0] != want {
			t.Fatalf("mismatches %+v, want only %+v", rep.Mismatches, want)
		}
		if rep.OK() || rep.Result() != "MISMATCH" || int64(rep.Periods) != periods {
			t.Fatalf("report %+v", rep)
		}
	})

	t.Run("clicks differ", func(t *testing.T) {
		rs := f.rows(t, p, m)
		r := &rs[0]
		// The same number of clicks, one by another user.
		r.UserHashes[0] ^= 1
		f.replace(t, key, encode(t, p, m, rs))
		rep := run(t)
		want := Mismatch{Partition: p, Minute: time.Unix(r.Minute*60, 0).UTC(), AdID: r.AdID, Country: r.Country,
			Served: r.Clicks, Recounted: r.Clicks, Differs: DiffersClicks}
		if len(rep.Mismatches) != 1 || rep.Mismatches[0] != want {
			t.Fatalf("mismatches %+v, want only %+v", rep.Mismatches, want)
		}
		var text strings.Builder
		if err := rep.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text.String(), "clicks only") || !strings.Contains(text.String(), r.AdID) {
			t.Fatalf("text report does not say the clicks differ:\n%s", text.String())
		}
	})

	t.Run("history file missing", func(t *testing.T) {
		f.replace(t, key, nil)
		rep := run(t)
		rs := f.rows(t, p, m)
		var c int64
		for _, r := range rs {
			c += r.Clicks
		}
		if len(rep.Mismatches) != 0 || len(rep.CorruptFiles) != 0 || len(rep.MissingFiles) != 1 {
			t.Fatalf("report %+v, want one missing file and no mismatch", rep)
		}
		mf := rep.MissingFiles[0]
		if mf.Partition != p || mf.Key != key || mf.UncheckedRows != len(rs) || mf.UncheckedClicks != c || len(rs) == 0 {
			t.Fatalf("missing file %+v, want %s with %d rows, %d clicks unchecked", mf, key, len(rs), c)
		}
		if rep.UncheckedMinutes != period || int64(rep.Periods) != periods-1 || rep.Result() != "MISMATCH" {
			t.Fatalf("report %+v", rep)
		}
	})

	t.Run("history file corrupt", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(f.dir, key))
		if err != nil {
			t.Fatal(err)
		}
		f.replace(t, key, data[:len(data)/2])
		rep := run(t)
		if len(rep.Mismatches) != 0 || len(rep.MissingFiles) != 0 || len(rep.CorruptFiles) != 1 || rep.CorruptFiles[0].Key != key {
			t.Fatalf("report %+v, want %s corrupt and no mismatch", rep, key)
		}
	})

	t.Run("archive file missing", func(t *testing.T) {
		// The first file of partition 7 with entries of minute 60.
		const p = 7
		keys, err := f.b.List(ctx, archive.PartitionPrefix(p, time.UnixMilli(base+3_600_000)))
		if err != nil || len(keys) < 2 {
			t.Fatal(keys, err)
		}
		f.replace(t, keys[1], nil)
		rep := run(t)
		if len(rep.Holes) != 1 || len(rep.Mismatches) != 0 || len(rep.MissingFiles) != 0 {
			t.Fatalf("report %+v, want one hole and no mismatch", rep)
		}
		h := rep.Holes[0]
		n := int64(h.UncheckedTo.Sub(h.UncheckedFrom) / time.Minute)
		if h.Partition != p || h.Before != keys[2] || h.After != keys[0] || n <= 0 || n%period != 0 ||
			h.UncheckedFrom.Before(time.UnixMilli(base)) || h.UncheckedTo.After(time.UnixMilli(base+2*3_600_000)) {
			t.Fatalf("hole %+v, want partition %d between %s and %s with whole periods unchecked", h, p, keys[0], keys[2])
		}
		if rep.UncheckedMinutes != n || int64(rep.Periods) != periods-n/period || rep.OK() || rep.Result() != "INCOMPLETE" {
			t.Fatalf("report %+v", rep)
		}
	})

	t.Run("json", func(t *testing.T) {
		f.replace(t, key, nil)
		data, err := json.Marshal(run(t))
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if got["result"] != "MISMATCH" || got["mismatched_rows"] != 0.0 || !bytes.Contains(data, []byte(`"mismatches":[]`)) ||
			!bytes.Contains(data, []byte(key)) || got["unchecked_minutes"] != float64(period) {
			t.Fatalf("json report %s", data)
		}
	})

	t.Run("not final", func(t *testing.T) {
		_, err := Run(ctx, f.input(first+150, first+180))
		if !errors.Is(err, recount.ErrNotFinal) {
			t.Fatalf("Run over minutes not final = %v, want ErrNotFinal", err)
		}
	})
}
