package history

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
)

// rowsSource is a partition whose final rows are given: every minute
// before end is final.
type rowsSource struct {
	first, end int64
	rows       map[int64][]tally.FinalRow // by minute
}

func (s *rowsSource) FirstMinute() (int64, bool) { return s.first, true }

func (s *rowsSource) Final(from, to int64) ([]tally.FinalRow, error) {
	if to > s.end {
		return nil, tally.ErrNotFinal
	}
	var out []tally.FinalRow
	for m := from; m < to; m++ {
		out = append(out, s.rows[m]...)
	}
	slices.SortFunc(out, func(a, b tally.FinalRow) int {
		return cmp.Or(strings.Compare(a.AdID, b.AdID), cmp.Compare(a.Minute, b.Minute), strings.Compare(a.Country, b.Country))
	})
	return out, nil
}

// randomRows returns rows of minutes [from, to), n per hour, of 5000 ads
// (more than a rollup row group holds in a day) and three countries, and
// adds their clicks to truth.
func randomRows(r *rand.Rand, from, to int64, n int, truth map[cell]int64) map[int64][]tally.FinalRow {
	cells := map[cell]int64{}
	for m := from; m < to; m += 60 {
		for range n {
			c := cell{m + r.Int64N(60), fmt.Sprintf("ad-%04d", r.IntN(5000)), []string{"US", "DE", "FR"}[r.IntN(3)]}
			cells[c] += 1 + r.Int64N(3)
		}
	}
	out := map[int64][]tally.FinalRow{}
	for c, k := range cells {
		truth[c] += k
		out[c.minute] = append(out[c.minute], tally.FinalRow{Minute: c.minute, AdID: c.ad, Country: c.country, Clicks: k,
			UserHashes: make([]uint64, k), IPHashes: make([]uint64, k)})
	}
	return out
}

// getCounter is a real bucket that counts the period files read whole.
type getCounter struct {
	*archive.Bucket
	mu   sync.Mutex
	gets int
}

func (b *getCounter) Get(ctx context.Context, key string) ([]byte, error) {
	b.mu.Lock()
	b.gets++
	b.mu.Unlock()
	return b.Bucket.Get(ctx, key)
}

// TestRollups runs the writer over two and a half UTC days of a partition
// whose history starts an hour before the first midnight, then checks
// that:
//   - the two whole days get a rollup, the byte-identical file that their
//     files' sums encode to, and the day the history began in gets none;
//   - counts and sums over whole days, parts of days and both, by ad and
//     for all ads, equal the ground truth, and a whole day without a
//     filter reads no period file;
//   - a revision applied over an hour of a rolled-up day makes its rollup
//     stale: the sums then are the revision's, read from the files;
//   - a missing rollup means reading the day's files, and a hole there is
//     still ErrHole; a corrupt rollup is ErrCorrupt, naming it.
func TestRollups(t *testing.T) {
	ctx := context.Background()
	const p = 3
	day0 := int64(20_400) // 2025-11-09
	start := day0*dayMinutes - 60
	end := (day0+2)*dayMinutes + 300
	r := rand.New(rand.NewPCG(3, 4))
	truth := map[cell]int64{}
	src := &rowsSource{first: start, end: end, rows: randomRows(r, start, end, 300, truth)}

	dir := t.TempDir()
	ab, err := archive.OpenBucket(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ab.Close()
	st := snapshot.New(testserver.RedisClient(t), "rolluptest")
	if err := st.Claim(ctx, p, 1); err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Period: time.Hour, Poll: 10 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond},
		marks{st}, ab, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx, p, 1, src) }()
	testserver.Eventually(t, 30*time.Second, func() error {
		if e, ok, err := st.History(ctx, p); err != nil || !ok || e < end-end%60 {
			return fmt.Errorf("history mark %d %v %v", e, ok, err)
		}
		return nil
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}

	if _, err := ab.Get(ctx, RollupKey(p, day0-1)); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("rollup of the day the history began in: %v, want none", err)
	}
	for day := day0; day < day0+2; day++ {
		got, err := ab.Get(ctx, RollupKey(p, day))
		if err != nil {
			t.Fatal(err)
		}
		var names []Name
		for h := day * 24; h < day*24+24; h++ {
			names = append(names, Name{Partition: p, From: h * 60, To: h*60 + 60})
		}
		sums := map[string]int64{}
		for c, n := range truth {
			if c.minute/dayMinutes == day {
				sums[c.ad] += n
			}
		}
		want, err := EncodeRollup(p, day, names, rollupRows(sums))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("rollup of day %d: %d bytes, not the %d its files' sums encode to", day, len(got), len(want))
		}
	}

	b := &getCounter{Bucket: ab}
	reader := NewReader(b)
	lo, mid := day0*dayMinutes, (day0+1)*dayMinutes
	hi := mid + dayMinutes
	windows := [][2]int64{{lo, hi}, {lo, mid}, {mid, hi}, {start, end - end%60}, {lo - 30, mid + 90}, {lo + 1, hi}, {lo + 600, lo + 700}}
	ads := []string{"", "ad-0000", "ad-2047", "ad-2500", "ad-4999", "ad-none"}
	check := func(t *testing.T, truth map[cell]int64) {
		t.Helper()
		for _, win := range windows {
			for _, f := range []Filter{{}, {Country: "DE"}} {
				want := map[string]int64{}
				for c, n := range truth {
					if c.minute >= win[0] && c.minute < win[1] && (f.Country == "" || c.country == f.Country) {
						want[c.ad] += n
					}
				}
				for _, ad := range ads {
					got, err := reader.Sums(ctx, p, win[0], win[1], f, ad)
					if err != nil {
						t.Fatalf("Sums(%v, %+v, %q): %v", win, f, ad, err)
					}
					w := want
					if ad != "" {
						w = map[string]int64{}
						if want[ad] > 0 {
							w[ad] = want[ad]
						}
					}
					if !maps.Equal(got, w) {
						t.Fatalf("Sums(%v, %+v, %q): %d ads, want %d; %q: %d, want %d", win, f, ad, len(got), len(w), ad, got[ad], w[ad])
					}
				}
				list, err := reader.View().AdSums(ctx, p, win[0], win[1], f)
				if err != nil {
					t.Fatalf("AdSums(%v, %+v): %v", win, f, err)
				}
				got := map[string]int64{}
				for i, ac := range list {
					if i > 0 && list[i-1].AdID >= ac.AdID {
						t.Fatalf("AdSums(%v, %+v): %q after %q", win, f, ac.AdID, list[i-1].AdID)
					}
					got[ac.AdID] = ac.Count
					if list.Get(ac.AdID) != ac.Count {
						t.Fatalf("AdSums(%v, %+v).Get(%q) = %d, want %d", win, f, ac.AdID, list.Get(ac.AdID), ac.Count)
					}
				}
				if !maps.Equal(got, want) || list.Get("ad-none") != 0 {
					t.Fatalf("AdSums(%v, %+v): %d ads, want %d", win, f, len(got), len(want))
				}
			}
		}
	}
	check(t, truth)
	b.gets = 0
	if _, err := reader.Sums(ctx, p, lo, hi, Filter{}, ""); err != nil || b.gets != 0 {
		t.Fatalf("two whole days: %v, %d period files read, want the rollups only", err, b.gets)
	}

	// A recount of one hour of day0, applied: day0's rollup is stale.
	h := lo + 5*60
	revTruth := maps.Clone(truth)
	maps.DeleteFunc(revTruth, func(c cell, _ int64) bool { return c.minute >= h && c.minute < h+60 })
	revRows := randomRows(r, h, h+60, 50, revTruth)
	data, err := Encode(Name{Partition: p, From: h, To: h + 60, Revision: 7}, (&rowsSource{end: h + 60, rows: revRows}).mustFinal(t, h, h+60))
	if err != nil {
		t.Fatal(err)
	}
	if err := ab.Put(ctx, Key(p, h, h+60, 7), data); err != nil {
		t.Fatal(err)
	}
	reader.SetApplied(Applied{Revisions: []Revision{{Revision: 7, From: h, To: h + 60, Partitions: []int{p}}}})
	check(t, revTruth)
	reader.SetApplied(Applied{})

	// Without day0+1's rollup, its files are read; a hole there is one.
	if err := os.Remove(filepath.Join(dir, RollupKey(p, day0+1))); err != nil {
		t.Fatal(err)
	}
	check(t, truth)
	gone := Key(p, mid+120, mid+180, 0)
	if err := os.Remove(filepath.Join(dir, gone)); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Sums(ctx, p, lo, hi, Filter{}, "ad-2500"); !errors.Is(err, ErrHole) {
		t.Fatalf("no rollup and a missing file: %v, want ErrHole", err)
	}
	bad := RollupKey(p, day0)
	if err := os.WriteFile(filepath.Join(dir, bad), []byte("not parquet"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Sums(ctx, p, lo, mid, Filter{}, ""); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("corrupt rollup: %v, want ErrCorrupt naming %s", err, bad)
	}
}

func (s *rowsSource) mustFinal(t *testing.T, from, to int64) []tally.FinalRow {
	t.Helper()
	rows, err := s.Final(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}
