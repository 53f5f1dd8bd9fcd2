package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/history"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
)

// TestHistoryExactlyOnce runs a cluster with horizons of about a minute and
// history files of one minute, SIGKILLs an aggregator while clicks flow,
// waits until every minute with clicks is final, and checks the history
// the aggregators wrote (with parquet-go and, independently, DuckDB): per
// partition, files tile the minutes from the first to the history mark
// with no hole or overlap, and their rows add up to the ground truth of
// every (ad, minute) exactly.
func TestHistoryExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of a cluster writing its history")
	}
	// Mostly waiting for minutes of the clock to pass: it runs beside the
	// other waiting tests (go test -parallel, GOMAXPROCS by default).
	t.Parallel()
	needParquetCheck(t)
	const partitions = 8
	bucketDir := filepath.Join(t.TempDir(), "store")
	// Waiting for minutes to turn final and leave memory is most of the
	// test, so the horizons are as short as the clicks allow: their
	// minute of event time ends a few seconds ago, and the acceptance
	// horizon takes it with some seconds to send it; the dedup horizon
	// exceeds the acceptance horizon plus the clock skew; the retention
	// leaves the history writer 25s to write a final minute before it
	// leaves memory.
	const retention = 105 * time.Second
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 2,
		commonFlags: []string{
			"-router.acceptance-horizon=70s", "-router.max-clock-skew=5s", "-router.idle-watermark-lag=2s",
			"-aggregator.allowed-lateness=5s", "-aggregator.dedup-horizon=80s", "-aggregator.retention=" + retention.String(),
			"-hotkey.split-rate=1000000",
		},
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s", "-archive.bucket=" + bucketDir,
			"-archive.interval=2s", "-history.period=1m", "-history.poll=1s"},
	})
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)

	start := time.Now().Add(-62 * time.Second)
	w := newWorkload(20261208, 20_000, 500, 1, start, 0.05, 0, 0, 100)
	ingest(t, w, c.ingestClients(), killAt(t, c.aggregators[1], len(w.batches)/2, 4))
	tr := &truth{clicks: w.unique}
	want := tr.counts()
	var last int64
	for k := range want {
		last = max(last, k.minute)
	}

	// Every partition's history mark passes the last minute with clicks.
	waitHistoryMark(t, c.redisClient(), partitions, last+1)
	ctx := context.Background()

	files := map[int][]history.File{}
	got := map[adMinute]int64{}
	keys := eachFile(t, bucketDir, "history/", history.Read, func(f history.File) {
		files[f.Partition] = append(files[f.Partition], f)
		for _, r := range f.Rows {
			got[adMinute{r.AdID, r.Minute / 60_000}] += r.Clicks
		}
	})
	for p := range partitions {
		fs := files[p]
		sortTiles(t, p, fs)
		if len(fs) == 0 || fs[0].From > w.firstMin || fs[len(fs)-1].To <= last {
			t.Fatalf("partition %d: %d history files do not cover minutes %d to %d", p, len(fs), w.firstMin, last)
		}
	}
	checked := 0
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("%s minute %d: history %d, truth %d", k.ad, k.minute, got[k], n)
		}
		checked++
	}
	if len(got) != len(want) {
		t.Fatalf("history has %d (ad, minute) counts, truth %d", len(got), len(want))
	}
	t.Logf("%d history files; %d (ad, minute) counts equal the ground truth (%d clicks, %d retried)", len(keys), checked, len(w.unique), w.dups)

	// An independent reader, DuckDB, reads the same totals.
	var duck struct {
		Rows [][]any `json:"rows"`
	}
	parquetCheck(t, `SELECT ad_id, epoch_ms(minute) // 60000 AS minute, CAST(sum(clicks) AS BIGINT) AS clicks
		FROM read_parquet('history/**/*_r0.parquet', hive_partitioning = true) GROUP BY ALL`, &duck, nil, "sql", bucketDir)
	duckCounts := map[adMinute]int64{}
	for _, r := range duck.Rows {
		ad, _ := r[0].(string)
		m, _ := r[1].(float64)
		n, _ := r[2].(float64)
		duckCounts[adMinute{ad, int64(m)}] = int64(n)
	}
	if len(duckCounts) != len(want) {
		t.Fatalf("DuckDB reads %d (ad, minute) counts from the history, truth has %d", len(duckCounts), len(want))
	}
	for k, n := range want {
		if duckCounts[k] != n {
			t.Fatalf("DuckDB reads %s minute %d from the history as %d, truth %d", k.ad, k.minute, duckCounts[k], n)
		}
	}
	t.Logf("DuckDB reads the same %d (ad, minute) counts from the history", len(duckCounts))

	// Queries: clicks of now stay in memory; once the first workload's
	// minutes have left memory (-aggregator.retention=2m), windows wholly
	// in the history, wholly in memory and across both answer exactly.
	// Click times within -router.acceptance-horizon and -router.max-clock-skew
	// of now.
	w2 := newWorkload(20261209, 2_000, 50, 1, time.Now().Add(-62*time.Second), 0.05, 0, 0, 100)
	ingest(t, w2, c.ingestClients(), nil)
	all := &truth{clicks: append(slices.Clone(w.unique), w2.unique...)}
	waitLeftMemory(t, cc, partitions, last+1, retention)
	qc := c.queryClient()
	count := func(ad string, from, to int64, f *clickaggv1.Filter) (int64, error) {
		resp, err := qc.GetAggregatedCount(ctx, &clickaggv1.GetAggregatedCountRequest{AdId: ad, From: minuteTS(from), To: minuteTS(to), Filter: f})
		return resp.GetCount(), err
	}
	ads := map[string]bool{}
	for k := range want {
		ads[k.ad] = true
	}
	now := time.Now().Unix() / 60
	windows := map[string][2]int64{
		"history": {w.firstMin, last + 1},
		"memory":  {last + 1, now + 1},
		"across":  {w.firstMin, now + 1},
	}
	queries := 0
	for ad := range ads {
		for name, win := range windows {
			for _, f := range []*clickaggv1.Filter{nil, {Country: "US"}, {UserId: "user-7"}} {
				got, err := count(ad, win[0], win[1], f)
				if err != nil {
					t.Fatalf("%s over %s window %v, filter %v: %v", ad, name, win, f, err)
				}
				if want := all.count(ad, win[0], win[1], f); got != want {
					t.Fatalf("%s over %s window %v, filter %v: %d, want %d", ad, name, win, f, got, want)
				}
				queries++
			}
		}
	}
	// Each (ad, minute) of the first workload, now only in the history.
	for k, n := range want {
		if got, err := count(k.ad, k.minute, k.minute+1, nil); err != nil || got != n {
			t.Fatalf("%s minute %d from the history: %d, %v; want %d", k.ad, k.minute, got, err, n)
		}
		queries++
	}
	// Popular ads over the same windows: each partition joins its
	// history's counts with its top from memory.
	tops := 0
	for name, win := range windows {
		for _, f := range []*clickaggv1.Filter{nil, {Country: "US"}, {UserId: "user-7"}, {Ip: "192.0.2.7"}, {Country: "DE", Ip: "2001:db8::3"}} {
			for _, n := range []int{1, 10, 100} {
				resp, err := qc.GetPopularAds(ctx, &clickaggv1.GetPopularAdsRequest{Count: int32(n), WindowMinutes: int32(win[1] - win[0]), End: minuteTS(win[1]), Filter: f})
				if err != nil {
					t.Fatalf("top %d over %s window %v, filter %v: %v", n, name, win, f, err)
				}
				if want := all.top(win[0], win[1], n, f); !sameTop(resp.GetAds(), want) {
					t.Fatalf("top %d over %s window %v, filter %v: %d ads, want %d; first difference: %s", n, name, win, f, len(resp.GetAds()), len(want), firstDiff(resp.GetAds(), want))
				}
				tops++
			}
		}
	}
	// -queryd.max-window (24h here) still bounds popular-ads windows.
	_, err := qc.GetPopularAds(ctx, &clickaggv1.GetPopularAdsRequest{Count: 10, WindowMinutes: 24*60 + 1, End: minuteTS(now + 1)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("popular ads over 24h and a minute: %v, want INVALID_ARGUMENT", err)
	}

	// A missing history file fails the queries that need it, naming it;
	// it is never read as zero, also when the aggregator has it cached.
	var ad string
	for k := range want {
		ad = k.ad
		break
	}
	gone := files[parts(t, partitions).Partition(ad)][0]
	if err := os.Remove(filepath.Join(bucketDir, gone.Key)); err != nil {
		t.Fatal(err)
	}
	_, err = count(ad, w.firstMin, last+1, nil)
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), fmt.Sprint(gone.From)) {
		t.Fatalf("count over a missing history file: %v, want DATA_LOSS naming minute %d", err, gone.From)
	}
	_, err = qc.GetPopularAds(ctx, &clickaggv1.GetPopularAdsRequest{Count: 10, WindowMinutes: int32(now + 1 - w.firstMin), End: minuteTS(now + 1)})
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), fmt.Sprint(gone.From)) {
		t.Fatalf("popular ads over a missing history file: %v, want DATA_LOSS naming minute %d", err, gone.From)
	}
	t.Logf("%d counts and %d popular-ads queries over windows in the history, in memory and across both exact; a missing file is DATA_LOSS", queries, tops)
}

// waitHistoryMark waits until every partition's history mark has reached
// minute to: its history holds every minute before it.
func waitHistoryMark(t *testing.T, rdb redis.UniversalClient, partitions int, to int64) {
	t.Helper()
	ctx := context.Background()
	testserver.Eventually(t, 4*time.Minute, func() error {
		for p := range partitions {
			v, err := rdb.Get(ctx, fmt.Sprintf("clickagg:{p%d}:history", p)).Result()
			if err != nil {
				return fmt.Errorf("partition %d: history mark: %w", p, err)
			}
			if end, _ := strconv.ParseInt(v, 10, 64); end < to {
				return fmt.Errorf("partition %d history ends at minute %d, want %d", p, end, to)
			}
		}
		return nil
	})
}

// waitLeftMemory waits until every partition has deleted the minutes
// before minute to from memory (-aggregator.retention behind its
// watermark), so that queries of them read the history. The watermark
// only grows: once passed, they stay gone.
func waitLeftMemory(t *testing.T, cc clickaggv1.CoordinatorServiceClient, partitions int, to int64, retention time.Duration) {
	t.Helper()
	gone := time.Unix(to*60, 0).Add(retention)
	testserver.Eventually(t, 4*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := cc.GetClusterStatus(ctx, &clickaggv1.GetClusterStatusRequest{})
		if err != nil {
			return err
		}
		if len(st.Partitions) != partitions {
			return fmt.Errorf("%d partitions reported, want %d", len(st.Partitions), partitions)
		}
		for _, p := range st.Partitions {
			if wm := p.Watermark.AsTime(); wm.Before(gone) {
				// The status call asks every aggregator: a few times a
				// second is enough for a wait of a minute or more.
				time.Sleep(200 * time.Millisecond)
				return fmt.Errorf("partition %d: watermark %v, minutes before %d leave memory at %v", p.Partition, wm.Format(time.TimeOnly), to, gone.Format(time.TimeOnly))
			}
		}
		return nil
	})
}

// sortTiles sorts partition p's history files by their first minute and
// checks that each begins where the one before it ends: no hole, no
// overlap.
func sortTiles(t *testing.T, p int, fs []history.File) {
	t.Helper()
	slices.SortFunc(fs, func(a, b history.File) int { return int(a.From - b.From) })
	for i := 1; i < len(fs); i++ {
		if fs[i].From != fs[i-1].To {
			t.Fatalf("partition %d: %s follows %s: a hole or an overlap", p, fs[i].Key, fs[i-1].Key)
		}
	}
}

func parts(t *testing.T, n int) *ring.Partitioner {
	t.Helper()
	p, err := ring.NewPartitioner(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
