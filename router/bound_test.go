package router

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// startBounded starts a router over plog bounded at half of Redis's
// maxmemory, read every 20ms, and returns it with a function that sends
// it one new click over gRPC.
func startBounded(t *testing.T, plog *partlog.Log, partitions int, lg *slog.Logger) (*Router, func() error) {
	t.Helper()
	cfg := testConfig(t)
	cfg.MaxRedisMemoryFraction = 0.5
	cfg.MemoryCheckInterval = 20 * time.Millisecond
	r := New(cfg, testID, partitioner(t, partitions), plog, lg, fixedClock(t0), WithMemoryBound(plog))
	c := startGRPC(t, r)
	runRouter(t, r)
	n := 0
	return r, func() error {
		n++
		_, err := c.Ingest(context.Background(), &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{click(fmt.Sprintf("e-%d", n), "ad-1", t0)}})
		return err
	}
}

// TestIngestOverMemoryBound grows the partition logs of a real Redis past
// a router's bound (half of maxmemory), as logs that cannot be trimmed
// while the archive is behind do: the router refuses clicks with
// UNAVAILABLE saying why, still appends ticks, says so in the gauge and in
// one log line; once the logs are trimmed, as archiving and a snapshot
// would, it accepts clicks again and says so once. Without maxmemory it
// bounds nothing and warns once.
func TestIngestOverMemoryBound(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	plog := partlog.New(rdb, testPrefix)
	logs := &testsupport.SyncBuffer{}
	const partitions = 4
	r, ingest := startBounded(t, plog, partitions, slog.New(slog.NewTextHandler(logs, nil)))
	refused := func() error {
		err := ingest()
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), ErrLogOverBound.Error()+": ") {
			return fmt.Errorf("Ingest: %v, want Unavailable %q...", err, ErrLogOverBound)
		}
		return nil
	}
	const overLine, underLine, unlimitedLine = "partition log store is over its memory bound", "partition log store is under its memory bound again", "redis has no maxmemory"

	// No maxmemory: nothing to bound.
	testserver.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), unlimitedLine) {
			return fmt.Errorf("no log line %q yet", unlimitedLine)
		}
		return nil
	})
	if err := ingest(); err != nil {
		t.Fatalf("Ingest into a Redis without maxmemory: %v", err)
	}

	used := func() int64 {
		t.Helper()
		nodes, err := plog.Memory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return nodes[0].Used
	}
	// The bound, half of maxmemory, lies 4 MiB above what Redis uses now.
	limit := 2 * (used() + 4<<20)
	if err := rdb.ConfigSet(ctx, "maxmemory", fmt.Sprint(limit)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ingest(); err != nil {
		t.Fatalf("Ingest under the bound: %v", err)
	}
	// Grow the logs past the bound, still short of maxmemory.
	data := []byte(strings.Repeat("x", 64<<10))
	for i := 0; used() <= limit/2+(1<<20); i++ {
		if _, err := plog.Append(ctx, []partlog.Append{{Partition: i % partitions, Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Eventually(t, 10*time.Second, refused)
	for range 3 {
		if err := refused(); err != nil {
			t.Fatal(err)
		}
	}
	if v := testutil.ToFloat64(r.m.logOverBound); v != 1 {
		t.Errorf("clickagg_router_log_over_bound = %v over the bound, want 1", v)
	}
	if v := testutil.ToFloat64(r.m.redisBound); v != float64(limit/2) {
		t.Errorf("clickagg_router_redis_memory_bound_bytes = %v, want %d", v, limit/2)
	}
	if v := testutil.ToFloat64(r.m.redisUsed); v <= float64(limit/2) {
		t.Errorf("clickagg_router_redis_used_memory_bytes = %v over the bound, want more than %d", v, limit/2)
	}
	node := rdb.Options().Addr
	if v := testutil.ToFloat64(r.m.redisNodeLimit.WithLabelValues(node)); v != float64(limit) {
		t.Errorf("clickagg_redis_maxmemory_bytes{node=%q} = %v, want %d", node, v, limit)
	}
	if v := testutil.ToFloat64(r.m.redisNodeUsed.WithLabelValues(node)); v <= float64(limit/2) {
		t.Errorf("clickagg_redis_used_memory_bytes{node=%q} = %v over the bound, want more than %d", node, v, limit/2)
	}
	// Ticks still go in: watermarks move and minutes complete meanwhile.
	if _, err := r.tick(ctx, 0); err != nil {
		t.Errorf("tick over the bound: %v, want it appended", err)
	}

	// The archive caught up and a snapshot trimmed the logs.
	for p := range partitions {
		if err := rdb.XTrimMaxLen(ctx, partlog.Key(testPrefix, p), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Eventually(t, 10*time.Second, ingest)
	if v := testutil.ToFloat64(r.m.logOverBound); v != 0 {
		t.Errorf("clickagg_router_log_over_bound = %v after the trim, want 0", v)
	}
	for _, line := range []string{unlimitedLine, overLine, underLine} {
		if k := strings.Count(logs.String(), line); k != 1 {
			t.Errorf("%d log lines %q, want 1:\n%s", k, line, logs)
		}
	}
}

// TestIngestOverMemoryBoundCluster runs the bound on a real Redis Cluster
// of three primaries, each with its own maxmemory: the router exports
// every primary's memory and limit, refuses clicks while one primary is
// over the bound even though the others have room, naming that primary,
// and accepts them again once its maxmemory is raised.
func TestIngestOverMemoryBoundCluster(t *testing.T) {
	ctx := context.Background()
	rc := testserver.RedisCluster(t, 3, 0)
	rdb := redis.NewClusterClient(testserver.RedisClusterOptions(rc))
	t.Cleanup(func() { _ = rdb.Close() })
	plog := partlog.New(rdb, testPrefix)
	r, ingest := startBounded(t, plog, 4, nil)

	// Every primary gets its own maxmemory; one of them, far above the
	// others' share, sits at about 2/3 of it: over the bound, short of
	// what Redis itself refuses.
	full, err := rdb.MasterForKey(ctx, partlog.Key(testPrefix, 0))
	if err != nil {
		t.Fatal(err)
	}
	fullNode := full.Options().Addr
	nodes, err := plog.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	limits := map[string]int64{}
	for _, m := range nodes {
		limits[m.Node] = 1 << 30
		if m.Node == fullNode {
			limits[m.Node] = m.Used * 3 / 2
		}
	}
	err = rdb.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		return node.ConfigSet(ctx, "maxmemory", fmt.Sprint(limits[node.Options().Addr])).Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	// The primaries get their maxmemory one by one, and the router may
	// read them in between: the refusal can come before every gauge
	// holds its primary's limit, so both are waited for.
	testserver.Eventually(t, 10*time.Second, func() error {
		err := ingest()
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), ErrLogOverBound.Error()+": Redis "+fullNode+" uses ") {
			return fmt.Errorf("Ingest: %v, want Unavailable %q naming %s", err, ErrLogOverBound, fullNode)
		}
		for node, limit := range limits {
			if v := testutil.ToFloat64(r.m.redisNodeLimit.WithLabelValues(node)); v != float64(limit) {
				return fmt.Errorf("clickagg_redis_maxmemory_bytes{node=%q} = %v, want %d", node, v, limit)
			}
		}
		return nil
	})
	if got := testutil.CollectAndCount(r.m.redisNodeLimit); got != 3 {
		t.Errorf("clickagg_redis_maxmemory_bytes has %d series, want one per primary (3)", got)
	}
	for node := range limits {
		if v := testutil.ToFloat64(r.m.redisNodeUsed.WithLabelValues(node)); v <= 0 {
			t.Errorf("clickagg_redis_used_memory_bytes{node=%q} = %v, want > 0", node, v)
		}
	}
	if v := testutil.ToFloat64(r.m.redisBound); v != float64(limits[fullNode]/2) {
		t.Errorf("clickagg_router_redis_memory_bound_bytes = %v, want the full primary's %d", v, limits[fullNode]/2)
	}

	if err := full.ConfigSet(ctx, "maxmemory", "1gb").Err(); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 10*time.Second, ingest)
	if v := testutil.ToFloat64(r.m.logOverBound); v != 0 {
		t.Errorf("clickagg_router_log_over_bound = %v after maxmemory was raised, want 0", v)
	}
}
