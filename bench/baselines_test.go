package bench

import (
	"context"
	"testing"
	"time"

	"github.com/clickagg/clickagg/tally"
	"github.com/clickagg/clickagg/testserver"
)

// testRun is a run whose cluster phase is replaced by a recorded sweep.
func testRun(t *testing.T, batches int) *run {
	t.Helper()
	var cfg Config
	cfg.Workload = testWorkload()
	cfg.Workload.Ads = 3000
	cfg.Span = 10 * time.Minute
	cfg.Batch = 200
	cfg.Streams, cfg.Inflight = 2, 2
	cfg.QueryMinSamples, cfg.QueryMaxSamples = 3, 3
	cfg.NaiveTopRuns = 1
	cfg.NaiveTimeout = time.Minute
	r := &run{
		cfg:        cfg,
		names:      Names{Tag: "bt"},
		partitions: 8,
		targets:    Targets{Tally: tally.Options{AllowedLateness: 10 * time.Second, DedupHorizon: time.Hour, Retention: 2 * time.Hour}},
		progress:   newProgress(nil, false, false),
		spanStart:  testSpanStart,
		spanEnd:    testSpanStart + cfg.Span.Milliseconds(),
	}
	t.Cleanup(r.progress.stop)
	r.kinds = queryKinds(10)
	for i := range batches {
		r.batchTimes = append(r.batchTimes, r.spanStart+int64(i)*cfg.Span.Milliseconds()/int64(batches))
	}
	r.probes = []Event{{ID: 1, Ad: uint32(cfg.Workload.Ads), TimeMs: r.spanEnd - 1, Kind: Probe}, {ID: 2, Ad: uint32(cfg.Workload.Ads), TimeMs: r.spanStart, Kind: Probe}}
	r.ingestMid = r.spanStart/60_000 + 5
	return r
}

// TestBaselinesAgree replays the same run into the in-process limit and
// the naive design: they must see the same events and the same (ad,
// minute) keys, the naive counting duplicates that tally drops, and the
// snapshot must restore to the same answers.
func TestBaselinesAgree(t *testing.T) {
	r := testRun(t, 150)
	rdb := testserver.RedisClient(t)
	ctx := context.Background()
	ip, err := r.runInproc(ctx, rdb, 1000)
	if err != nil {
		t.Fatal(err)
	}
	nv, err := r.runNaive(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	events := int64(150*200 + len(r.probes))
	dups, _ := countKinds(r)
	if ip.events != events || nv.events != events || !nv.complete || !nv.countedOK {
		t.Fatalf("events: in-process %d, naive %d (complete %v, counted %v), want %d", ip.events, nv.events, nv.complete, nv.countedOK, events)
	}
	if ip.mem.DedupIDs != events-dups {
		t.Errorf("dedup remembers %d ids, want %d events less %d duplicates", ip.mem.DedupIDs, events, dups)
	}
	if ip.mem.Keys != ip.keys || ip.mem.Events != events-dups || ip.mem.RowBytes <= 0 || ip.mem.FilterBytes <= 0 || ip.mem.DedupBytes <= 0 {
		t.Errorf("memory accounting %+v for %d keys and %d counted events", ip.mem, ip.keys, events-dups)
	}
	if ip.keys != nv.keys {
		t.Errorf("keys: in-process %d, naive %d", ip.keys, nv.keys)
	}
	if ip.snapParts != r.partitions || ip.snapKeys != ip.keys {
		t.Errorf("snapshot of %d partitions, %d keys; want all %d, %d keys", ip.snapParts, ip.snapKeys, r.partitions, ip.keys)
	}
	if !ip.recoveredSame || ip.snap.whole == 0 || ip.snap.bytes == 0 {
		t.Errorf("snapshot: recovered same %v, %d entries, %d bytes", ip.recoveredSame, ip.snap.whole, ip.snap.bytes)
	}
	if ip.incrEvents <= 0 || ip.incr.whole <= 0 || ip.incr.late <= 0 || ip.incr.bytes <= 0 || ip.incr.bytes >= ip.snap.bytes || ip.redisWriteBps <= 0 {
		t.Errorf("incremental snapshot of %d events: %d minutes whole, %d late parts, %d bytes (full: %d); Redis write probe %.0f B/s", ip.incrEvents, ip.incr.whole, ip.incr.late, ip.incr.bytes, ip.snap.bytes, ip.redisWriteBps)
	}
	// The naive counts are the in-process counts plus the duplicates.
	ipTop, nvTop := ip.queries["top"].answers[0].top, nv.queries["top"].answers[0].top
	var ipSum, nvSum int64
	for i := range ipTop {
		ipSum += ipTop[i].Count
		nvSum += nvTop[i].Count
	}
	if nvSum < ipSum || nvSum > ipSum+dups {
		t.Errorf("top counts: naive %d, in-process %d, duplicates %d", nvSum, ipSum, dups)
	}
	if keys, _ := rdb.Keys(ctx, "*").Result(); len(keys) != 0 {
		t.Errorf("the baselines left keys behind: %v", keys[:min(5, len(keys))])
	}
}

// TestSnapshotOfAPartitionSet: -bench.snapshot-keys bounds the partitions
// snapshotted and recovered to the first ones holding that many keys.
func TestSnapshotOfAPartitionSet(t *testing.T) {
	r := testRun(t, 40)
	r.cfg.SnapshotKeys = 1
	rdb := testserver.RedisClient(t)
	ip, err := r.runInproc(context.Background(), rdb, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if ip.snapParts != 1 || ip.snapKeys <= 0 || ip.snapKeys >= ip.keys || !ip.recoveredSame {
		t.Fatalf("snapshot of %d partitions, %d of %d keys, recovered same %v; want 1 partition", ip.snapParts, ip.snapKeys, ip.keys, ip.recoveredSame)
	}
}
