package test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/router"
	"github.com/clickagg/clickagg/testserver"
)

// metricSum scrapes http://addr/metrics and returns the sum of the samples
// of metric name whose labels contain label (e.g. `op="store"`, or "").
func metricSum(addr, name, label string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		series, value, ok := strings.Cut(sc.Text(), " ")
		metric, labels, _ := strings.Cut(series, "{")
		if !ok || metric != name || !strings.Contains(labels, label) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", series, err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("%s: no %s{%s}", addr, name, label)
	}
	return sum, nil
}

// archivedOffsets returns every partition's archived offset.
func archivedOffsets(ctx context.Context, rdb redis.UniversalClient, partitions int) (map[int]string, error) {
	out := map[int]string{}
	for p := range partitions {
		id, err := rdb.Get(ctx, fmt.Sprintf("clickagg:{p%d}:archived", p)).Result()
		if err != nil {
			return nil, fmt.Errorf("partition %d: archived offset: %w", p, err)
		}
		out[p] = id
	}
	return out, nil
}

// TestArchiveStoreOutage takes the object store away from a running
// cluster (its directory replaced by a file, which fails writes even for
// root) and checks what the design promises: ingest and exact real-time
// queries go on; the archive errors grow and no archived offset moves; as
// the untrimmed logs reach the routers' memory bound, the router refuses
// clicks with UNAVAILABLE saying why, rather than let Redis fill up; once
// the store is back, the archive catches up with every log entry exactly
// once, the logs are trimmed and the router accepts clicks again.
func TestArchiveStoreOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of an object store outage")
	}
	const partitions = 4
	dir := t.TempDir()
	bucketDir := filepath.Join(dir, "archive")
	aggHTTP, routerHTTP := freeAddr(t), freeAddr(t)
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 1, aggregators: 1,
		aggregatorFlags: []string{"-http.addr=" + aggHTTP, "-aggregator.snapshot-interval=1s", "-archive.bucket=" + bucketDir, "-archive.interval=2s"},
		routerFlags: []string{"-http.addr=" + routerHTTP, "-router.idle-watermark-lag=1h",
			"-router.max-redis-memory-fraction=0.3", "-router.redis-memory-check-interval=100ms"},
	})
	ctx := context.Background()
	rdb := c.redisClient()
	watcher := watchLogs(rdb, partitions)
	cc, qc := c.coordinatorClient(), c.queryClient()
	ic := c.ingestClients()
	waitCaughtUp(t, cc, partitions, time.Minute)

	start := time.Now().Truncate(time.Minute).Add(-6 * time.Minute)
	w := newWorkload(20261208, 20_000, 500, 4, start, 0.05, 0.02, 0, 200)
	half := *w
	half.batches = w.batches[:len(w.batches)/2]
	ingest(t, &half, ic, nil)
	waitCaughtUp(t, cc, partitions, time.Minute)
	waitDataArchived(t, rdb, watcher, time.Minute)

	// The outage. A regular file where the bucket's directory was: every
	// write under it fails with ENOTDIR, whoever runs the test.
	away := bucketDir + ".away"
	if err := os.Rename(bucketDir, away); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bucketDir, []byte("the object store is down\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	storeErrors := func() float64 {
		v, err := metricSum(aggHTTP, "clickagg_archive_errors_total", `op="store"`)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	errs0 := storeErrors()
	testserver.Eventually(t, 30*time.Second, func() error {
		if v := storeErrors(); v <= errs0 {
			return fmt.Errorf("clickagg_archive_errors_total{op=\"store\"} = %v, not growing", v)
		}
		return nil
	})
	frozen, err := archivedOffsets(ctx, rdb, partitions)
	if err != nil {
		t.Fatal(err)
	}

	// Ingest goes on, and queries answer exactly.
	rest := *w
	rest.batches = w.batches[len(w.batches)/2:]
	ingest(t, &rest, ic, nil)
	waitCaughtUp(t, cc, partitions, time.Minute)
	checkEveryAdMinute(t, qc, &truth{clicks: w.unique})
	if t.Failed() {
		t.FailNow()
	}
	if got, err := archivedOffsets(ctx, rdb, partitions); err != nil || fmt.Sprint(got) != fmt.Sprint(frozen) {
		t.Fatalf("archived offsets moved while the store was down: %v, then %v (%v)", frozen, got, err)
	}
	t.Logf("store down: %v store errors, archived offsets stay at %v", storeErrors()-errs0, frozen)

	// A small bound: 1 MiB above what Redis uses now (the router's
	// fraction 0.3 of a maxmemory well above it, so that Redis itself
	// refuses nothing). The clients send their clicks again, as after
	// lost answers: the logs grow and the counts do not.
	nodes, err := partlog.New(rdb, "clickagg").Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bound := nodes[0].Used + 1<<20
	if err := rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(int64(float64(bound)/0.3), 10)).Err(); err != nil {
		t.Fatal(err)
	}
	var refusal error
	resent := 0
	for i := 0; refusal == nil; i++ {
		if i == 50*len(w.batches) {
			t.Fatalf("the router accepted %d requests that grew the logs past its bound", i)
		}
		_, err := ic[0].Ingest(ctx, &clickaggv1.IngestRequest{Events: w.batches[i%len(w.batches)]})
		switch {
		case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), router.ErrLogOverBound.Error()):
			refusal = err
		case err != nil:
			t.Fatalf("ingest request %d sent again: %v", i, err)
		default:
			resent++
		}
	}
	if v, err := metricSum(routerHTTP, "clickagg_router_log_over_bound", ""); err != nil || v != 1 {
		t.Errorf("clickagg_router_log_over_bound = %v (%v) while refusing, want 1", v, err)
	}
	t.Logf("after %d requests sent again, the router refuses: %v", resent, refusal)
	// Still refusing: nothing but the archive can make room.
	time.Sleep(time.Second)
	if _, err := ic[0].Ingest(ctx, &clickaggv1.IngestRequest{Events: w.batches[0]}); status.Code(err) != codes.Unavailable {
		t.Fatalf("ingest over the bound with the store still down: %v, want UNAVAILABLE", err)
	}

	// The store is back: the archive catches up, snapshots trim the logs,
	// and the router accepts clicks again.
	if err := os.Remove(bucketDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(away, bucketDir); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, time.Minute, func() error {
		_, err := ic[0].Ingest(ctx, &clickaggv1.IngestRequest{Events: w.batches[0]})
		return err
	})
	if v, err := metricSum(routerHTTP, "clickagg_router_log_over_bound", ""); err != nil || v != 0 {
		t.Errorf("clickagg_router_log_over_bound = %v (%v) once accepting, want 0", v, err)
	}
	waitCaughtUp(t, cc, partitions, time.Minute)
	waitDataArchived(t, rdb, watcher, time.Minute)
	seen, err := watcher.close()
	if err != nil {
		t.Fatal(err)
	}
	keys, checked := checkArchive(t, bucketDir, seen, w.unique)
	// Clicks sent again are counted once.
	checkEveryAdMinute(t, qc, &truth{clicks: w.unique})
	t.Logf("store back: %d files; %d log entries archived exactly once; all %d acknowledged clicks in the archive", len(keys), checked, len(w.unique))
}
