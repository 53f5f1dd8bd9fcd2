package test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/testserver"
)

// TestHistoryExactlyOnce runs a cluster with horizons of about a minute and
// history files of one minute, SIGKILLs an aggregator while clicks flow,
// waits until every minute with clicks is final, and checks the history
// the aggregators wrote: per partition, files tile the minutes from the
// first to the history mark with no hole or overlap, and their rows add up
// to the ground truth of every (ad, minute) exactly.
func TestHistoryExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of a cluster writing its history")
	}
	const partitions = 8
	bucketDir := filepath.Join(t.TempDir(), "store")
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 2,
		commonFlags: []string{
			"-router.acceptance-horizon=1m", "-router.max-clock-skew=30s", "-router.idle-watermark-lag=2s",
			"-aggregator.allowed-lateness=5s", "-aggregator.dedup-horizon=95s", "-aggregator.retention=10m",
		},
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s", "-archive.bucket=" + bucketDir,
			"-archive.interval=2s", "-history.period=1m", "-history.poll=1s"},
	})
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)

	start := time.Now().Add(-40 * time.Second)
	w := newWorkload(20261208, 20_000, 500, 1, start, 0.05, 0, 0, 100)
	agg := c.aggregators[1]
	n := len(w.batches)
	ingest(t, w, c.ingestClients(), func(i int, res *ingestResult) {
		if i == n/2 {
			waitSent(&res.sent, int64(i-4))
			t.Logf("SIGKILL %s at request %d", agg.name, i)
			agg.Kill()
			go func() {
				time.Sleep(time.Second)
				agg.Restart()
			}()
		}
	})
	tr := &truth{clicks: w.unique}
	want := tr.counts()
	var last int64
	for k := range want {
		last = max(last, k.minute)
	}

	// Every partition's history mark passes the last minute with clicks.
	rdb := redis.NewClient(&redis.Options{Addr: c.redis.Addr})
	defer rdb.Close()
	ctx := context.Background()
	testserver.Eventually(t, 4*time.Minute, func() error {
		for p := range partitions {
			v, err := rdb.Get(ctx, fmt.Sprintf("clickagg:{p%d}:history", p)).Result()
			if err != nil {
				return fmt.Errorf("partition %d: history mark: %w", p, err)
			}
			if end, _ := strconv.ParseInt(v, 10, 64); end <= last {
				return fmt.Errorf("partition %d history ends at minute %d, last clicks in %d", p, end, last)
			}
		}
		return nil
	})

	bucket, err := archive.OpenBucket(ctx, bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	keys, err := bucket.List(ctx, "history/")
	if err != nil {
		t.Fatal(err)
	}
	files := map[int][]history.File{}
	got := map[adMinute]int64{}
	for _, k := range keys {
		data, err := bucket.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		f, err := history.Read(k, data)
		if err != nil {
			t.Fatal(err)
		}
		files[f.Partition] = append(files[f.Partition], f)
		for _, r := range f.Rows {
			got[adMinute{r.AdID, r.Minute / 60_000}] += r.Clicks
		}
	}
	for p := range partitions {
		fs := files[p]
		slices.SortFunc(fs, func(a, b history.File) int { return int(a.From - b.From) })
		if len(fs) == 0 || fs[0].From > w.firstMin || fs[len(fs)-1].To <= last {
			t.Fatalf("partition %d: %d history files do not cover minutes %d to %d", p, len(fs), w.firstMin, last)
		}
		for i := 1; i < len(fs); i++ {
			if fs[i].From != fs[i-1].To {
				t.Fatalf("partition %d: %s follows %s: a hole or an overlap", p, fs[i].Key, fs[i-1].Key)
			}
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
}
