package router

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
)

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
	logs := &syncBuffer{}
	cfg := testConfig(t)
	cfg.MaxRedisMemoryFraction = 0.5
	cfg.MemoryCheckInterval = 20 * time.Millisecond
	const partitions = 4
	r := New(cfg, partitioner(t, partitions), plog, slog.New(slog.NewTextHandler(logs, nil)), fixedClock(t0), WithMemoryBound(plog))
	c := startGRPC(t, r)
	runRouter(t, r)
	n := 0
	ingest := func() error {
		n++
		_, err := c.Ingest(ctx, &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{click(fmt.Sprintf("e-%d", n), "ad-1", t0)}})
		return err
	}
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

	used0, _, err := plog.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The bound, half of maxmemory, lies 4 MiB above what Redis uses now.
	limit := 2 * (used0 + 4<<20)
	if err := rdb.ConfigSet(ctx, "maxmemory", fmt.Sprint(limit)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ingest(); err != nil {
		t.Fatalf("Ingest under the bound: %v", err)
	}
	// Grow the logs past the bound, still short of maxmemory.
	data := []byte(strings.Repeat("x", 64<<10))
	for i := 0; ; i++ {
		used, _, err := plog.Memory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if used > limit/2+(1<<20) {
			break
		}
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
