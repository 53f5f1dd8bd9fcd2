package bench

import (
	"context"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/tally"
)

// TestSnapshotRecoveryAtScale runs only the snapshot/recovery part of the
// bench on a state shaped like the report's (the default workload, 64
// partitions, about 1M keys in the first 24), against a redis-server with
// appendfsync always. It takes a minute and most of a core, so it runs
// only with CLICKAGG_SNAPREC_EVENTS set to the number of events to
// generate (12000000 matches docs/benchmarks.md); CLICKAGG_SNAPREC_PROF
// names a file for a CPU profile of snapshotRecovery alone.
func TestSnapshotRecoveryAtScale(t *testing.T) {
	events, _ := strconv.Atoi(os.Getenv("CLICKAGG_SNAPREC_EVENTS"))
	if events <= 0 {
		t.Skip("set CLICKAGG_SNAPREC_EVENTS to run")
	}
	r := testRun(t, 0)
	r.cfg.Workload.Ads = 2_000_000
	r.cfg.Span = time.Hour
	r.cfg.Batch = 500
	r.cfg.SnapshotKeys = 1_000_000
	r.partitions = 64
	r.targets.Tally.DedupHorizon = 6*time.Hour + 30*time.Minute
	r.targets.Tally.Retention = 24 * time.Hour
	r.spanEnd = r.spanStart + r.cfg.Span.Milliseconds()
	batches := events / r.cfg.Batch
	for i := range batches {
		r.batchTimes = append(r.batchTimes, r.spanStart+int64(i)*r.cfg.Span.Milliseconds()/int64(batches))
	}
	const kept = 28 // enough partitions for 1M keys; the others are not applied
	parts, err := ring.NewPartitioner(r.partitions)
	if err != nil {
		t.Fatal(err)
	}
	state := make([]*tally.Partition, kept)
	for i := range state {
		state[i] = tally.NewPartition(i, r.targets.Tally)
	}
	rp := r.newReplayer(parts, 200_000)
	start := time.Now()
	var chunk []entry
	for {
		evs := rp.events()
		if evs == nil {
			break
		}
		chunk = rp.entries(evs, chunk[:0], nil)
		for _, e := range chunk {
			if e.partition < kept {
				if _, err := state[e.partition].ApplyEncoded(e.id, e.data, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	chunk = rp.ticks(chunk[:0])
	for _, e := range chunk {
		if e.partition < kept {
			if _, err := state[e.partition].ApplyEncoded(e.id, e.data, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	keysOf := make([]int64, kept)
	var keys int64
	for i, p := range state {
		keysOf[i] = p.Memory().Keys
		keys += keysOf[i]
	}
	t.Logf("state of %d partitions, %d keys, built in %s", kept, keys, time.Since(start).Round(time.Millisecond))

	ctx := context.Background()
	srv, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: filepath.Join(t.TempDir(), "redis"), AppendFsync: "always"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password})
	t.Cleanup(func() { _ = rdb.Close() })

	if path := os.Getenv("CLICKAGG_SNAPREC_PROF"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	res := &inprocResult{}
	if err := r.snapshotRecovery(ctx, rdb, rp, state, keysOf, res); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d partitions, %d keys, %d minute entries, %.1f MiB (%.0f B/key)", res.snapParts, res.snapKeys, res.snap.whole, float64(res.snap.bytes)/(1<<20), float64(res.snap.bytes)/float64(res.snapKeys))
	t.Logf("full write %s (%.2f s per 10M keys), recovery %s (%.2f s per 10M keys), recovered same %v",
		res.snapWrite.Round(time.Millisecond), res.snapWrite.Seconds()*1e7/float64(res.snapKeys),
		res.recovery.Round(time.Millisecond), res.recovery.Seconds()*1e7/float64(res.snapKeys), res.recoveredSame)
	t.Logf("incremental write of one more minute (%d events): %d entries, %.1f MiB in %s; Redis write bandwidth %.0f MB/s, floor %.2f s per 10M keys",
		res.incrEvents, res.incr.whole, float64(res.incr.bytes)/(1<<20), res.incrWrite.Round(time.Millisecond), res.redisWriteBps/1e6,
		float64(res.snap.bytes)/float64(res.snapKeys)*1e7/res.redisWriteBps)
	if !res.recoveredSame {
		t.Error("the recovered state answers differently")
	}
}
