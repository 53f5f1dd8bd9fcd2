package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

// TestSimulatedDays runs a cluster through three days of event time in a
// few minutes of wall time, with duplicates, late clicks and a SIGKILL of
// an aggregator (the process that archives the log and writes the history)
// while clicks flow, and checks it exactly against the ground truth: every
// log entry is in the raw archive once, whose files chain without a gap;
// the history files tile each partition's minutes and add up to the
// truth; and counts and popular ads through queryd, over windows wholly in
// the history, wholly in memory and across both, with each filter, equal
// the truth.
//
// Event time runs ahead of the wall clock because the routers' ticks
// follow the newest click they accepted (-router.idle-watermark-lag far
// above the data's age), so minutes complete, turn final, are written to
// the history and leave memory as the clicks of later ones arrive.
func TestSimulatedDays(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of a cluster running through days of event time")
	}
	// Mostly waiting for minutes of the clock to pass: it runs beside the
	// other waiting tests (go test -parallel, GOMAXPROCS by default).
	t.Parallel()
	const (
		partitions = 8
		days       = 3
		// pace is the wall time the first workload's three days take:
		// about an hour and a half of event time a second.
		pace = 50 * time.Second
	)
	bucketDir := filepath.Join(t.TempDir(), "store")
	// Horizons are in event time, which runs about 5000 times faster than
	// the wall clock while the first workload is sent: the dedup horizon
	// covers the late clicks (up to 200s behind the stream) and the
	// reordering of requests in flight (a few minutes of event time); the
	// retention leaves the history writer, which looks for final periods
	// every second, hours of event time (about 25 s of wall time at this
	// pace) to write each period before it leaves memory (else it is a
	// hole).
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 2,
		commonFlags: []string{
			"-router.acceptance-horizon=100h", "-router.idle-watermark-lag=100h", "-hotkey.keep=101h",
			"-aggregator.allowed-lateness=5s", "-aggregator.dedup-horizon=20m", "-aggregator.retention=36h",
			"-hotkey.split-rate=1000000", "-queryd.max-window=100h",
		},
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s", "-archive.bucket=" + bucketDir,
			"-archive.interval=2s", "-history.period=30m", "-history.poll=1s"},
	})
	rdb := c.redisClient()
	watcher := watchLogs(rdb, partitions)
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	ctx := context.Background()

	// Workload 1: three days ending about an hour and a half ago;
	// workload 2: 45 minutes starting a quarter of an hour after it, so
	// that the last periods of workload 1 become final while workload 2
	// stays in memory.
	start := time.Now().Add(-(days*24*time.Hour + 90*time.Minute)).Truncate(30 * time.Minute)
	w1 := newWorkload(20261210, 150_000, 500, days*24*60, start, 0.05, 0.02, 0, 100)
	w2 := newWorkload(20261211, 5_000, 50, 45, start.Add(days*24*time.Hour+15*time.Minute), 0.05, 0.02, 0, 100)
	t.Logf("workload 1: %d clicks, %d retried, %d late, minutes %d to %d; workload 2: %d clicks, minutes %d to %d",
		len(w1.unique), w1.dups, w1.late, w1.firstMin, w1.firstMin+int64(w1.minutes), len(w2.unique), w2.firstMin, w2.firstMin+int64(w2.minutes))

	// Requests go out at a steady pace, so that event time advances
	// smoothly. Halfway, aggregator-2 is killed with requests in flight and
	// restarted; sending pauses until its partitions are served again, so
	// that the log it must replay spans seconds of event time, not the
	// hours the others advance meanwhile.
	agg := c.aggregators[1]
	n := len(w1.batches)
	per := pace / time.Duration(n)
	t0 := time.Now()
	ingest(t, w1, c.ingestClients(), func(i int, res *ingestResult) {
		if i == n/2 {
			waitSent(&res.sent, int64(i-4))
			paused := time.Now()
			t.Logf("SIGKILL %s at request %d", agg.name, i)
			agg.Kill()
			agg.Restart()
			if err := waitFor(2*time.Minute, func() error { return caughtUp(cc, partitions) }); err != nil {
				t.Errorf("after the restart of %s: %v", agg.name, err)
			}
			t0 = t0.Add(time.Since(paused))
			t.Logf("%s restarted and its partitions caught up in %v", agg.name, time.Since(paused).Round(time.Millisecond))
		}
		time.Sleep(time.Until(t0.Add(time.Duration(i) * per)))
	})
	ingest(t, w2, c.ingestClients(), nil)
	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	all := &truth{clicks: append(slices.Clone(w1.unique), w2.unique...)}

	// Every partition's history reaches the last period that is final
	// under the watermark all partitions end at: the newest click's time
	// (the routers' last ticks) less the allowed lateness. That is past
	// workload 1.
	w1End := w1.firstMin + int64(w1.minutes) // minutes [w1.firstMin, w1End)
	var newest int64
	for _, cl := range all.clicks {
		newest = max(newest, cl.ev.ClickTime.AsTime().UnixMilli())
	}
	finalEnd := (newest - 5_000 - 20*60_000) / 60_000 / 30 * 30
	if finalEnd < w1End {
		t.Fatalf("the history would end at minute %d, before workload 1's end %d", finalEnd, w1End)
	}
	marks := map[int]int64{}
	testserver.Eventually(t, 2*time.Minute, func() error {
		for p := range partitions {
			v, err := rdb.Get(ctx, fmt.Sprintf("clickagg:{p%d}:history", p)).Result()
			if err != nil {
				return fmt.Errorf("partition %d: history mark: %w", p, err)
			}
			end, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("partition %d: history mark %q: %w", p, v, err)
			}
			if end != finalEnd {
				return fmt.Errorf("partition %d history ends at minute %d, want %d", p, end, finalEnd)
			}
			marks[p] = end
		}
		return nil
	})

	// The raw archive: every entry the log held is in it once, and each
	// partition's files chain from the start of its log.
	waitDataArchived(t, rdb, watcher, 2*time.Minute)
	seen, err := watcher.close()
	if err != nil {
		t.Fatal(err)
	}
	keys, checked := checkArchive(t, bucketDir, seen, all.clicks)
	checkChain(t, bucketDir, partitions)
	t.Logf("raw archive: %d files chained without a gap; %d log entries archived exactly once; all %d acknowledged clicks in it", len(keys), checked, len(all.clicks))

	// The history: per partition, files tile its minutes from the first
	// period of workload 1 to its mark, and their rows are the truth of
	// every (ad, minute) before the mark.
	files := checkDaysHistory(t, bucketDir, partitions, w1.firstMin, marks, all)

	// Queries. The watermark is now at the end of workload 2: minutes more
	// than -aggregator.retention (36h) older left memory.
	last := w2.firstMin + int64(w2.minutes) + 1 // past workload 2's latest click
	windows := []struct {
		name     string
		from, to int64
	}{
		{"history: day 1", w1.firstMin, w1.firstMin + 24*60},
		{"history: an hour of day 2", w1End - 40*60, w1End - 39*60},
		{"memory: workload 1's last 3 hours", w1End - 3*60, w1End},
		{"memory: workload 2", w2.firstMin, last},
		{"across: the last two days", w1End - 48*60, last},
		{"across: everything", w1.firstMin, last},
	}
	qc := c.queryClient()
	ads := []string{"ad-0", "ad-1", "ad-3", "ad-10", "ad-40", "ad-150", "ad-499", "ad-none"}
	counts, tops := 0, 0
	for _, win := range windows {
		// Filters matching clicks of the window: those of its first click
		// of the most popular ad.
		var pick *clickaggv1.ClickEvent
		for _, cl := range all.clicks {
			if cl.ev.AdId == "ad-0" && cl.minute >= win.from && cl.minute < win.to {
				pick = cl.ev
				break
			}
		}
		if pick == nil {
			t.Fatalf("%s: no click of ad-0", win.name)
		}
		filters := []*clickaggv1.Filter{nil, {Country: "US"}, {UserId: pick.UserId}, {Ip: pick.Ip}, {Country: pick.Country, Ip: pick.Ip}}
		for _, f := range filters {
			for _, ad := range ads {
				resp, err := qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: minuteTS(win.from), To: minuteTS(win.to), Filter: f})
				if err != nil {
					t.Fatalf("%s over %s [%d, %d), filter %v: %v", ad, win.name, win.from, win.to, f, err)
				}
				if want := all.count(ad, win.from, win.to, f); resp.GetCount() != want {
					t.Fatalf("%s over %s [%d, %d), filter %v: %d, want %d", ad, win.name, win.from, win.to, f, resp.GetCount(), want)
				}
				counts++
			}
			for _, n := range []int{1, 10, 100} {
				resp, err := qc.GetPopularAds(ctx, &clickaggv1.GetPopularAdsRequest{Count: int32(n), WindowMinutes: int32(win.to - win.from), End: minuteTS(win.to), Filter: f})
				if err != nil {
					t.Fatalf("top %d over %s [%d, %d), filter %v: %v", n, win.name, win.from, win.to, f, err)
				}
				if want := all.top(win.from, win.to, n, f); !sameTop(resp.GetAds(), want) {
					t.Fatalf("top %d over %s [%d, %d), filter %v: %d ads, want %d; first difference: %s", n, win.name, win.from, win.to, f, len(resp.GetAds()), len(want), firstDiff(resp.GetAds(), want))
				}
				tops++
			}
		}
	}
	t.Logf("%d counts and %d popular-ads queries over %d windows × 5 filters equal the ground truth", counts, tops, len(windows))

	// The windows are where their names say: without its history file, a
	// minute of day 1 cannot be answered, and one of the last hours of
	// workload 1 is answered from memory.
	p := parts(t, partitions).Partition("ad-0")
	for _, win := range []struct {
		minute  int64
		history bool
	}{{w1.firstMin + 60, true}, {w1End - 2*60, false}} {
		i := slices.IndexFunc(files[p], func(f history.File) bool { return f.From <= win.minute && win.minute < f.To })
		if i < 0 {
			t.Fatalf("partition %d: no history file holds minute %d", p, win.minute)
		}
		if err := os.Remove(filepath.Join(bucketDir, files[p][i].Key)); err != nil {
			t.Fatal(err)
		}
		resp, err := qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: "ad-0", From: minuteTS(win.minute), To: minuteTS(win.minute + 1)})
		switch {
		case win.history && status.Code(err) != codes.DataLoss:
			t.Fatalf("ad-0 minute %d, its history file removed: %v, want DATA_LOSS", win.minute, err)
		case !win.history && err != nil:
			t.Fatalf("ad-0 minute %d, in memory, its history file removed: %v", win.minute, err)
		case !win.history && resp.GetCount() != all.count("ad-0", win.minute, win.minute+1, nil):
			t.Fatalf("ad-0 minute %d, in memory: %d, want %d", win.minute, resp.GetCount(), all.count("ad-0", win.minute, win.minute+1, nil))
		}
	}
}

// waitFor is testserver.Eventually returning the last error instead of
// failing the test, for goroutines other than the test's.
func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// caughtUp is waitCaughtUp's condition: every partition is served and its
// owner has applied its whole log.
func caughtUp(c clickaggv1.CoordinatorServiceClient, partitions int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.GetClusterStatus(ctx, &clickaggv1.GetClusterStatusRequest{})
	if err != nil {
		return err
	}
	if len(st.Unavailable) > 0 {
		return fmt.Errorf("partitions %v unavailable", st.Unavailable)
	}
	if len(st.Partitions) != partitions {
		return fmt.Errorf("%d partitions reported, want %d", len(st.Partitions), partitions)
	}
	for _, p := range st.Partitions {
		if p.State != "serving" || p.Lag > 0 {
			return fmt.Errorf("partition %d: state %s lag %d", p.Partition, p.State, p.Lag)
		}
	}
	return nil
}

// checkChain checks that each partition's raw archive files form one
// chain: in the order of their entries, each names as its previous offset
// the last entry of the file before it, and the first names the start of
// the log (nothing was trimmed before archiving began).
func checkChain(t *testing.T, bucketURL string, partitions int) {
	t.Helper()
	chunks := map[int][]archive.Chunk{}
	eachFile(t, bucketURL, "raw/", archive.ReadChunk, func(ch archive.Chunk) {
		ch.Rows, ch.Ticks = nil, nil
		chunks[ch.Partition] = append(chunks[ch.Partition], ch)
	})
	for p := range partitions {
		cs := chunks[p]
		if len(cs) == 0 {
			t.Fatalf("partition %d has no archive file", p)
		}
		slices.SortFunc(cs, func(a, b archive.Chunk) int { return partlog.CompareIDs(a.First, b.First) })
		prev := archive.LogStart
		for _, ch := range cs {
			if ch.Previous != prev {
				t.Fatalf("partition %d: %s follows entry %q, the file before it ends at %q: a gap or an overlap", p, ch.Key, ch.Previous, prev)
			}
			prev = ch.Last
		}
	}
}

// checkDaysHistory checks each partition's history files: they tile its
// minutes from the period of first to its mark, with no hole or overlap,
// and their rows add up to the truth of every (ad, minute) before the
// mark, and hold nothing after it. It returns the files by partition, in
// order.
func checkDaysHistory(t *testing.T, bucketURL string, partitions int, first int64, marks map[int]int64, tr *truth) map[int][]history.File {
	t.Helper()
	files := map[int][]history.File{}
	got := map[adMinute]int64{}
	rows := 0
	keys := eachFile(t, bucketURL, "history/", history.Read, func(f history.File) {
		if f.Revision != 0 {
			t.Fatalf("%s: revision %d, and nobody recounted", f.Key, f.Revision)
		}
		files[f.Partition] = append(files[f.Partition], f)
		for _, r := range f.Rows {
			got[adMinute{r.AdID, r.Minute / 60_000}] += r.Clicks
		}
		rows += len(f.Rows)
	})
	for p := range partitions {
		fs := files[p]
		sortTiles(t, p, fs)
		if len(fs) == 0 || fs[0].From > first || fs[len(fs)-1].To != marks[p] {
			t.Fatalf("partition %d: %d history files do not cover minutes %d to its mark %d", p, len(fs), first, marks[p])
		}
	}
	pt := parts(t, partitions)
	want := map[adMinute]int64{}
	for k, n := range tr.counts() {
		if k.minute < marks[pt.Partition(k.ad)] {
			want[k] = n
		}
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("%s minute %d: history %d, truth %d", k.ad, k.minute, got[k], n)
		}
	}
	for k, n := range got {
		if want[k] != n {
			t.Fatalf("%s minute %d: history %d, truth %d (the history ends at %d)", k.ad, k.minute, n, want[k], marks[pt.Partition(k.ad)])
		}
	}
	t.Logf("history: %d files, %d rows; %d (ad, minute) counts equal the ground truth", len(keys), rows, len(want))
	return files
}
