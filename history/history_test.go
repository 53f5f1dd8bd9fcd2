package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/clickagg/clickagg/archive"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
)

var opts = tally.Options{AllowedLateness: 10 * time.Second, DedupHorizon: 5 * time.Minute, Retention: 4 * time.Hour}

type cell struct {
	minute      int64
	ad, country string
}

// feed applies three hours of clicks, with retries and clicks up to 3
// minutes late, to a new partition, and returns it with the clicks per
// (minute, ad, country) counted once per (ad_id, event_id).
func feed(t *testing.T) (*tally.Partition, map[cell]int64, int64) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	p := tally.NewPartition(1, opts)
	truth := map[cell]int64{}
	seen := map[[3]string]bool{}
	start := int64(483_334 * 3_600_000) // a whole hour
	var sent []*clickaggv1.LogEvent
	for i := range 3 * 3600 / 2 {
		now := start + int64(i)*2000
		le := &clickaggv1.LogEntry{TickMs: now}
		for j := range 3 {
			ev := &clickaggv1.LogEvent{
				EventId: fmt.Sprintf("e%d-%d", i, j%2), ClickTimeMs: now - r.Int64N(3000),
				UserId: "u", Ip: "192.0.2.1", Country: []string{"US", "DE", "FR"}[r.IntN(3)],
			}
			ev.AdId = fmt.Sprintf("ad-%d", r.IntN(40))
			if r.IntN(20) == 0 {
				ev.ClickTimeMs = now - 60_000 - r.Int64N(120_000) // late
			}
			if r.IntN(10) == 0 && len(sent) > 0 {
				ev = sent[r.IntN(len(sent))] // a retry
			}
			le.Events = append(le.Events, ev)
			sent = append(sent, ev)
			m := ev.ClickTimeMs / 60_000
			k := [3]string{ev.AdId, ev.EventId, fmt.Sprint(m)}
			if !seen[k] {
				seen[k] = true
				truth[cell{m, ev.AdId, ev.Country}]++
			}
		}
		p.Apply(fmt.Sprintf("%d-0", now), le)
	}
	return p, truth, start / 3_600_000
}

type marks struct{ *snapshot.Store }

func (m marks) SaveHistory(ctx context.Context, p int, epoch uint64, start, end int64) error {
	err := m.Store.SaveHistory(ctx, p, epoch, start, end)
	if errors.Is(err, snapshot.ErrStaleEpoch) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

// TestWriterWritesFinalPeriods runs the writer over a partition of three
// hours, with files of an hour and of 15 minutes: the first two hours are
// final and written, tiled by files of the period, with exactly the
// truth's rows; the third is not; a deposed owner is fenced, and what it
// writes again is the same bytes.
func TestWriterWritesFinalPeriods(t *testing.T) {
	ctx := context.Background()
	p, truth, firstHour := feed(t)
	rdb := testserver.RedisClient(t)
	// The log ends 3 hours after its first hour; with a dedup horizon of
	// 5 minutes, the final periods end 2h or 2h45m after it.
	for i, tc := range []struct {
		period time.Duration
		final  int64
	}{{time.Hour, 120}, {15 * time.Minute, 165}} {
		period := tc.period
		t.Run(period.String(), func(t *testing.T) {
			st := snapshot.New(rdb, fmt.Sprintf("histtest%d", i))
			if err := st.Claim(ctx, 1, 5); err != nil {
				t.Fatal(err)
			}
			b, err := archive.OpenBucket(ctx, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			w, err := New(Config{Period: period, Poll: 10 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond},
				marks{st}, b, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			want := firstHour*60 + tc.final
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- w.Run(runCtx, 1, 5, p) }()
			testserver.Eventually(t, 10*time.Second, func() error {
				end, ok, err := st.History(ctx, 1)
				if err != nil || !ok || end < want {
					return fmt.Errorf("history mark %d %v %v", end, ok, err)
				}
				return nil
			})
			time.Sleep(50 * time.Millisecond)
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Run = %v", err)
			}
			if end, _, _ := st.History(ctx, 1); end != want {
				t.Fatalf("history mark %d, want %d: the rest is not final", end, want)
			}
			keys, err := b.List(ctx, "history/")
			if err != nil {
				t.Fatal(err)
			}
			got := map[cell]int64{}
			var prev Name
			for i, k := range keys {
				data, err := b.Get(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				f, err := Read(k, data)
				if err != nil {
					t.Fatal(err)
				}
				if f.To-f.From != int64(period/time.Minute) || i > 0 && f.From != prev.To {
					t.Fatalf("%s after %+v: files do not tile the minutes by %v", k, prev, period)
				}
				prev = f.Name
				for _, r := range f.Rows {
					got[cell{r.Minute / 60_000, r.AdID, r.Country}] += r.Clicks
				}
			}
			if prev.To != want {
				t.Fatalf("files end at minute %d, want %d", prev.To, want)
			}
			n := 0
			for c, v := range truth {
				if c.minute >= want {
					continue
				}
				n++
				if got[c] != v {
					t.Fatalf("%+v: history %d, truth %d", c, got[c], v)
				}
			}
			if len(got) != n || n < 1000 {
				t.Fatalf("history has %d cells, truth %d", len(got), n)
			}

			// A newer owner fences the writer out; it writes the same
			// bytes first.
			if err := st.Claim(ctx, 1, 6); err != nil {
				t.Fatal(err)
			}
			if err := rdb.Del(ctx, fmt.Sprintf("histtest%d:{p1}:history", i)).Err(); err != nil {
				t.Fatal(err)
			}
			before, _ := b.Get(ctx, keys[0])
			if err := w.Run(ctx, 1, 5, p); !errors.Is(err, ErrFenced) {
				t.Fatalf("Run of a deposed owner = %v, want ErrFenced", err)
			}
			after, _ := b.Get(ctx, keys[0])
			if !bytes.Equal(before, after) {
				t.Fatal("the same minutes were written with other bytes")
			}
		})
	}
}

func TestReadRefusesWhatIsNotTheKeys(t *testing.T) {
	rows := []tally.FinalRow{{Minute: 29_000_000 + 5, AdID: "a", Country: "US", Clicks: 2, Revision: 1, UserHashes: []uint64{1, 2}, IPHashes: []uint64{3, 4}}}
	n := Name{Partition: 4, From: 29_000_000, To: 29_000_010}
	data, err := Encode(n, rows)
	if err != nil {
		t.Fatal(err)
	}
	key := Key(4, n.From, n.To, 0)
	if want := "history/date=2025-02-19/hour=21/partition=004/29000000-29000010_r0.parquet"; key != want {
		t.Fatalf("key %s, want %s", key, want)
	}
	f, err := Read(key, data)
	if err != nil || len(f.Rows) != 1 || f.Name != n || f.Rows[0].Clicks != 2 || f.Rows[0].IPHashes[1] != 4 {
		t.Fatalf("Read = %+v, %v", f, err)
	}
	for _, bad := range []struct{ name, key string }{
		{"other minutes", Key(4, n.From, n.To+1, 0)},
		{"other partition", Key(5, n.From, n.To, 0)},
		{"other revision", Key(4, n.From, n.To, 1)},
		{"folders do not match", strings.Replace(key, "hour=21", "hour=22", 1)},
		{"not a history key", "history/x.parquet"},
	} {
		if _, err := Read(bad.key, data); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad.key) {
			t.Errorf("%s: %v", bad.name, err)
		}
	}
	if _, err := Read(key, data[:len(data)-9]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
}

// TestReaderSums writes a partition's history and checks Reader.Sums over
// windows inside and across files, per filter, against the truth; a
// deleted file is a hole naming where it should be.
func TestReaderSums(t *testing.T) {
	ctx := context.Background()
	p, truth, firstHour := feed(t)
	lo := firstHour * 60
	b, dir, _ := writeQuarters(t, p, lo, lo+120)
	r := NewReader(b)
	for _, w := range [][2]int64{{lo, lo + 120}, {lo + 7, lo + 8}, {lo + 50, lo + 70}, {lo + 14, lo + 16}} {
		for _, f := range []Filter{{}, {Country: "DE"}, {IP: "192.0.2.1"}, {UserID: "u", Country: "FR"}, {UserID: "nobody"}} {
			got, err := r.Sums(ctx, 1, w[0], w[1], f, "")
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]int64{}
			for c, n := range truth {
				if c.minute >= w[0] && c.minute < w[1] && (f.Country == "" || f.Country == c.country) && f.UserID != "nobody" {
					want[c.ad] += n
				}
			}
			if !maps.Equal(got, want) {
				t.Fatalf("Sums(%v, %+v) = %v, want %v", w, f, got, want)
			}
			one, err := r.Sums(ctx, 1, w[0], w[1], f, "ad-3")
			if err != nil || len(one) > 1 || one["ad-3"] != want["ad-3"] {
				t.Fatalf("Sums(%v, %+v, ad-3) = %v, %v; want %d", w, f, one, err, want["ad-3"])
			}
		}
	}
	// A missing file is a hole, named; a file that is not what its key
	// says is corrupt, named.
	gone := Key(1, lo+30, lo+45, 0)
	if err := os.Remove(filepath.Join(dir, gone)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sums(ctx, 1, lo, lo+120, Filter{}, ""); !errors.Is(err, ErrHole) || !strings.Contains(err.Error(), "minute "+fmt.Sprint(lo+30)) {
		t.Fatalf("Sums over a missing file = %v, want ErrHole at minute %d", err, lo+30)
	}
	if _, err := r.Sums(ctx, 1, lo+45, lo+120, Filter{}, ""); err != nil {
		t.Fatalf("Sums after the hole: %v", err)
	}
	bad := Key(1, lo+45, lo+60, 0)
	if err := os.WriteFile(filepath.Join(dir, bad), []byte("not parquet"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sums(ctx, 1, lo+45, lo+120, Filter{}, ""); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Sums over a corrupt file = %v, want ErrCorrupt naming %s", err, bad)
	}
}

// countingBucket is a real bucket that counts the files read, and runs
// afterList, if set, after each listing.
type countingBucket struct {
	*archive.Bucket
	gets      int
	afterList func()
}

func (b *countingBucket) Get(ctx context.Context, key string) ([]byte, error) {
	b.gets++
	return b.Bucket.Get(ctx, key)
}

func (b *countingBucket) ListObjects(ctx context.Context, prefix string) ([]archive.Object, error) {
	keys, err := b.Bucket.ListObjects(ctx, prefix)
	if b.afterList != nil {
		b.afterList()
	}
	return keys, err
}

// writeQuarters writes p's final rows of the minutes [from, to) as
// partition 1's revision-0 history files of 15 minutes each into a
// directory bucket, and returns the bucket (closed when the test ends),
// its directory, and the files as Read reads them.
func writeQuarters(t *testing.T, p *tally.Partition, from, to int64) (*archive.Bucket, string, []File) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	b, err := archive.OpenBucket(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	var files []File
	for m := from; m < to; m += 15 {
		rows, err := p.Final(m, m+15)
		if err != nil {
			t.Fatal(err)
		}
		n := Name{Partition: 1, From: m, To: m + 15}
		data, err := Encode(n, rows)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Read(Key(n.Partition, n.From, n.To, 0), data)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		if err := b.Put(ctx, Key(n.Partition, n.From, n.To, 0), data); err != nil {
			t.Fatal(err)
		}
	}
	return b, dir, files
}

// TestReaderCache checks that a Reader with a cache reads each file once
// over repeated sums, with the same answers, keeps no more than its bound,
// and still fails on a file that is missing, gone after it was listed, or
// corrupt, naming it.
func TestReaderCache(t *testing.T) {
	ctx := context.Background()
	p, _, firstHour := feed(t)
	lo := firstHour * 60
	ab, dir, files := writeQuarters(t, p, lo, lo+120)
	var sizes []int64
	for _, f := range files {
		sizes = append(sizes, fileSize(f))
	}
	want, err := NewReader(ab).Sums(ctx, 1, lo, lo+120, Filter{Country: "DE"}, "")
	if err != nil {
		t.Fatal(err)
	}

	b := &countingBucket{Bucket: ab}
	r := NewReader(b, WithCache(1<<30))
	for i := range 3 {
		got, err := r.Sums(ctx, 1, lo, lo+120, Filter{Country: "DE"}, "")
		if err != nil || !maps.Equal(got, want) {
			t.Fatalf("sums %d: %v, %v; want %v", i, got, err, want)
		}
	}
	if b.gets != 8 {
		t.Fatalf("3 sums over 8 files read %d files, want 8", b.gets)
	}
	// A cache of two files' size keeps two: a sum over the last two
	// reads none, over the first two reads both again.
	small := &countingBucket{Bucket: ab}
	r2 := NewReader(small, WithCache(sizes[6]+sizes[7]))
	for _, w := range [][2]int64{{lo, lo + 120}, {lo + 90, lo + 120}, {lo, lo + 30}} {
		if _, err := r2.Sums(ctx, 1, w[0], w[1], Filter{}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if small.gets != 10 {
		t.Fatalf("read %d files, want 8 + 0 + 2", small.gets)
	}

	// Missing while cached: a hole, named.
	gone := Key(1, lo+30, lo+45, 0)
	if err := os.Remove(filepath.Join(dir, gone)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sums(ctx, 1, lo, lo+120, Filter{}, ""); !errors.Is(err, ErrHole) || !strings.Contains(err.Error(), "minute "+fmt.Sprint(lo+30)) {
		t.Fatalf("Sums over a missing cached file = %v, want ErrHole at minute %d", err, lo+30)
	}
	// Listed, then gone before it is read: a hole, named.
	gone = Key(1, lo+45, lo+60, 0)
	b.afterList = func() { _ = os.Remove(filepath.Join(dir, gone)) }
	if _, err := NewReader(b, WithCache(1<<30)).Sums(ctx, 1, lo+45, lo+60, Filter{}, ""); !errors.Is(err, ErrHole) || !strings.Contains(err.Error(), gone) {
		t.Fatalf("Sums over a file gone after the listing = %v, want ErrHole naming %s", err, gone)
	}
	b.afterList = nil
	// Corrupt: named, every time, never cached.
	bad := Key(1, lo+60, lo+75, 0)
	if err := os.WriteFile(filepath.Join(dir, bad), []byte("not parquet"), 0o644); err != nil {
		t.Fatal(err)
	}
	r3 := NewReader(ab, WithCache(1<<30))
	for range 2 {
		if _, err := r3.Sums(ctx, 1, lo+60, lo+90, Filter{}, ""); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad) {
			t.Fatalf("Sums over a corrupt file = %v, want ErrCorrupt naming %s", err, bad)
		}
	}
}

// TestApplied checks which revision serves which minutes: the latest
// applied one covering a period, per partition; the parts of a window
// covered; and the revision an answer reports.
func TestApplied(t *testing.T) {
	var a Applied
	for _, r := range []Revision{
		{Revision: 2, From: 100, To: 160, Partitions: []int{1, 3}},
		{Revision: 5, From: 120, To: 140, Partitions: []int{3}},
		{Revision: 7, From: 160, To: 180, Partitions: []int{3}},
	} {
		var err error
		if a, err = a.With(r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.With(Revision{Revision: 6}); err == nil {
		t.Fatal("revision 6 applied after 7")
	}
	enc, err := a.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := DecodeApplied(enc); err != nil || !reflect.DeepEqual(a, b) {
		t.Fatalf("decode: %+v, %v", b, err)
	}
	for _, c := range []struct {
		p        int
		from, to int64
		want     int
	}{
		{1, 100, 120, 2}, {3, 100, 120, 2}, {3, 120, 130, 5}, {3, 130, 160, 2}, {3, 140, 160, 2},
		{2, 120, 130, 0}, {3, 160, 170, 7}, {1, 160, 170, 0}, {3, 90, 100, 0},
	} {
		if got := a.For(c.p, c.from, c.to); got != c.want {
			t.Errorf("For(%d, %d, %d) = %d, want %d", c.p, c.from, c.to, got, c.want)
		}
	}
	if got := a.Covered(3, 90, 200); !reflect.DeepEqual(got, [][2]int64{{100, 180}}) {
		t.Errorf("Covered(3) = %v", got)
	}
	if got := a.Covered(1, 150, 200); !reflect.DeepEqual(got, [][2]int64{{150, 160}}) {
		t.Errorf("Covered(1) = %v", got)
	}
	if got := a.Served(3, 100, 125); got != 5 {
		t.Errorf("Served(3, 100, 125) = %d, want 5", got)
	}
	if got := a.Served(1, 160, 200); got != 0 {
		t.Errorf("Served(1, 160, 200) = %d, want 0", got)
	}
}

// TestReaderServesAppliedRevisions writes a period at revisions 0 and 4:
// the reader serves revision 0 until revision 4 is applied, revision 4
// from the next View on (a View taken before keeps 0), and a hole naming
// revision 4's file once it is deleted, never revision 0 instead.
func TestReaderServesAppliedRevisions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := archive.OpenBucket(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const from, to = 29_000_000, 29_000_010
	for rev, clicks := range map[int]int64{0: 3, 4: 2} {
		rows := []tally.FinalRow{{Minute: from + 1, AdID: "a", Country: "US", Clicks: clicks,
			UserHashes: make([]uint64, clicks), IPHashes: make([]uint64, clicks)}}
		data, err := Encode(Name{Partition: 2, From: from, To: to, Revision: rev}, rows)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Put(ctx, Key(2, from, to, rev), data); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(b)
	sum := func(v View) int64 {
		t.Helper()
		s, err := v.Sums(ctx, 2, from, to, Filter{}, "a")
		if err != nil {
			t.Fatal(err)
		}
		return s["a"]
	}
	before := r.View()
	if got := sum(before); got != 3 {
		t.Fatalf("before applying: %d clicks, want revision 0's 3", got)
	}
	r.SetApplied(Applied{Revisions: []Revision{{Revision: 4, From: from, To: to, Partitions: []int{0, 2}}}})
	if got := sum(r.View()); got != 2 {
		t.Fatalf("after applying: %d clicks, want revision 4's 2", got)
	}
	if got := sum(before); got != 3 {
		t.Fatalf("a view taken before applying: %d clicks, want 3", got)
	}
	if err := os.Remove(filepath.Join(dir, Key(2, from, to, 4))); err != nil {
		t.Fatal(err)
	}
	_, err = r.View().Sums(ctx, 2, from, to, Filter{}, "a")
	if !errors.Is(err, ErrHole) || !strings.Contains(err.Error(), Key(2, from, to, 4)) {
		t.Fatalf("applied revision's file deleted: %v, want ErrHole naming it", err)
	}
}

// TestReaderCacheRereadsRewrittenFile writes a file, sums it through a
// caching reader, writes other rows under the same key (as a restore from
// a backup, or tampering, would): the next sum reads the new rows.
func TestReaderCacheRereadsRewrittenFile(t *testing.T) {
	ctx := context.Background()
	b, err := archive.OpenBucket(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const from, to = 29_000_000, 29_000_010
	put := func(clicks int64) {
		rows := []tally.FinalRow{{Minute: from + 1, AdID: "a", Country: "US", Clicks: clicks,
			UserHashes: make([]uint64, clicks), IPHashes: make([]uint64, clicks)}}
		data, err := Encode(Name{Partition: 2, From: from, To: to}, rows)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Put(ctx, Key(2, from, to, 0), data); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(b, WithCache(1<<20))
	for _, clicks := range []int64{3, 2} {
		put(clicks)
		s, err := r.Sums(ctx, 2, from, to, Filter{}, "a")
		if err != nil || s["a"] != clicks {
			t.Fatalf("sum after writing %d clicks: %v, %v", clicks, s, err)
		}
	}
}
