package router

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func newClient(t *testing.T, srv *localserver.Redis) *redis.Client {
	t.Helper()
	c := redis.NewClient(testserver.RedisOptions(srv))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// allTicks returns each partition's tick values in log order, and checks
// that every entry is either a pure tick or a pure event batch of this
// router.
func allTicks(ctx context.Context, rdb *redis.Client, partitions int, routerID string) ([][]int64, error) {
	out := make([][]int64, partitions)
	for p := range partitions {
		entries, err := readStream(ctx, rdb, p)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.RouterId != routerID {
				return nil, fmt.Errorf("partition %d: entry of router %q, want %q", p, e.RouterId, routerID)
			}
			if e.TickMs != 0 && len(e.Events) != 0 {
				return nil, fmt.Errorf("partition %d: tick %d carries %d events", p, e.TickMs, len(e.Events))
			}
		}
		_, out[p] = splitEntries(entries)
	}
	return out, nil
}

// lastTicksAre polls until every partition's latest tick is want.
func lastTicksAre(t *testing.T, rdb *redis.Client, partitions int, want time.Time) {
	t.Helper()
	testserver.Eventually(t, 20*time.Second, func() error {
		ticks, err := allTicks(context.Background(), rdb, partitions, "router-test")
		if err != nil {
			return err
		}
		for p, ts := range ticks {
			if len(ts) == 0 || ts[len(ts)-1] != want.UnixMilli() {
				return fmt.Errorf("partition %d: ticks %v, want the last to be %d (%v)", p, ts, want.UnixMilli(), want)
			}
		}
		return nil
	})
}

// TestRunTicks drives Run with a settable clock through each part of the
// frontier rule and checks the ticks on every partition.
func TestRunTicks(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	const n = 4
	parts := partitioner(t, n)
	cfg := testConfig(t)
	cfg.TickInterval = 10 * time.Millisecond
	clk := testsupport.NewClock(t0)
	r := New(cfg, testID, parts, partlog.New(rdb, testPrefix), nil, clk.Now)

	// A click 50s ahead of the clock is accepted (skew 1m); then the clock
	// steps back 30s, so the first tick is capped at now+skew = t0+30s.
	if accepted, _, err := r.Ingest(ctx, []*clickaggv1.ClickEvent{click("e-1", "ad-1", t0.Add(50*time.Second))}); err != nil || accepted != 1 {
		t.Fatalf("Ingest = %d, %v", accepted, err)
	}
	clk.Set(t0.Add(-30 * time.Second))
	stop := runRouter(t, r)

	testserver.Eventually(t, 20*time.Second, func() error {
		ticks, err := allTicks(ctx, rdb, n, "router-test")
		if err != nil {
			return err
		}
		for p, ts := range ticks {
			if len(ts) == 0 {
				return fmt.Errorf("partition %d has no tick yet", p)
			}
		}
		for p, ts := range ticks {
			if want := t0.Add(30 * time.Second).UnixMilli(); ts[0] != want {
				t.Fatalf("partition %d: first tick %d, want %d (capped at now+skew)", p, ts[0], want)
			}
		}
		return nil
	})

	// Clock back at t0: the accepted click (t0+50s) is the frontier.
	clk.Set(t0)
	lastTicksAre(t, rdb, n, t0.Add(50*time.Second))

	// Ten idle minutes later: the floor now-IdleLag wins.
	clk.Set(t0.Add(10 * time.Minute))
	lastTicksAre(t, rdb, n, t0.Add(9*time.Minute))

	// The clock jumps back 8 minutes: the frontier must not go back.
	before, err := allTicks(ctx, rdb, n, "router-test")
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(2 * time.Minute))
	testserver.Eventually(t, 20*time.Second, func() error {
		ticks, err := allTicks(ctx, rdb, n, "router-test")
		if err != nil {
			return err
		}
		for p := range ticks {
			// One tick may have been computed before the clock moved;
			// the second one surely after.
			if len(ticks[p]) < len(before[p])+2 {
				return fmt.Errorf("partition %d: %d ticks, waiting for %d", p, len(ticks[p]), len(before[p])+2)
			}
		}
		return nil
	})
	stop()

	ticks, err := allTicks(ctx, rdb, n, "router-test")
	if err != nil {
		t.Fatal(err)
	}
	for p, ts := range ticks {
		for i := 1; i < len(ts); i++ {
			if ts[i] < ts[i-1] {
				t.Errorf("partition %d: tick %d after %d goes back", p, ts[i], ts[i-1])
			}
		}
		for _, v := range ts[len(before[p]):] {
			if v != t0.Add(9*time.Minute).UnixMilli() {
				t.Errorf("partition %d: tick %d after the clock went back, want %d", p, v, t0.Add(9*time.Minute).UnixMilli())
			}
		}
	}
	// The click is in its partition, before any tick.
	entries, err := readStream(ctx, rdb, parts.Partition("ad-1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || len(entries[0].Events) != 1 || entries[0].Events[0].EventId != "e-1" {
		t.Fatalf("first entry of ad-1's partition: %v", entries[:min(1, len(entries))])
	}
}

// TestRunTicksAtStart: the first tick is appended at once, not after the
// first interval.
func TestRunTicksAtStart(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	const n = 3
	cfg := testConfig(t)
	cfg.TickInterval = time.Hour
	r := New(cfg, testID, partitioner(t, n), partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	stop := runRouter(t, r)
	lastTicksAre(t, rdb, n, t0.Add(-time.Minute))
	stop()
	ticks, err := allTicks(ctx, rdb, n, "router-test")
	if err != nil {
		t.Fatal(err)
	}
	for p, ts := range ticks {
		if len(ts) != 1 {
			t.Errorf("partition %d: ticks %v, want exactly one in an hour-long interval", p, ts)
		}
	}
}

// TestTickBeforeAnyData: with an IdleLag reaching before 1970 (a backfill
// setting) and no clicks, there is nothing to say and no tick is written; the
// first accepted click then sets the frontier.
func TestTickBeforeAnyData(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	const n = 2
	cfg := testConfig(t)
	cfg.IdleLag = 100 * 365 * 24 * time.Hour
	cfg.Horizon = 24 * time.Hour
	parts := partitioner(t, n)
	r := New(cfg, testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	last, err := r.tick(ctx, 0)
	if err != nil || last != 0 {
		t.Fatalf("tick = %d, %v; want 0, nil", last, err)
	}
	ticks, err := allTicks(ctx, rdb, n, "router-test")
	if err != nil {
		t.Fatal(err)
	}
	for p, ts := range ticks {
		if len(ts) != 0 {
			t.Fatalf("partition %d: ticks %v, want none", p, ts)
		}
	}
	old := t0.Add(-20 * time.Hour)
	if accepted, _, err := r.Ingest(ctx, []*clickaggv1.ClickEvent{click("e-1", "ad-1", old)}); err != nil || accepted != 1 {
		t.Fatalf("Ingest = %d, %v", accepted, err)
	}
	if last, err = r.tick(ctx, last); err != nil || last != old.UnixMilli() {
		t.Fatalf("tick = %d, %v; want %d", last, err, old.UnixMilli())
	}
	lastTicksAre(t, rdb, n, old)
}

// TestRunSurvivesLogOutage kills Redis under a running router: Run logs the
// failed ticks, keeps running, and ticks again once Redis is back.
func TestRunSurvivesLogOutage(t *testing.T) {
	dir := t.TempDir()
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	start := func() *localserver.Redis {
		srv, err := localserver.StartRedis(context.Background(), localserver.RedisConfig{Dir: dir, Port: port, AppendFsync: "no"})
		if err != nil {
			t.Fatalf("start redis: %v", err)
		}
		t.Cleanup(func() { _ = srv.Stop() })
		return srv
	}
	srv := start()
	rdb := newClient(t, srv)
	const n = 2
	cfg := testConfig(t)
	cfg.TickInterval = 10 * time.Millisecond
	clk := testsupport.NewClock(t0)
	logs := &testsupport.SyncBuffer{}
	r := New(cfg, testID, partitioner(t, n), partlog.New(rdb, testPrefix), slog.New(slog.NewTextHandler(logs, nil)), clk.Now)
	stop := runRouter(t, r)
	lastTicksAre(t, rdb, n, t0.Add(-time.Minute))

	srv.Kill()
	testserver.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(logs.String(), `msg="append tick"`) {
			return fmt.Errorf("no failed tick logged yet:\n%s", logs.String())
		}
		return nil
	})
	clk.Set(t0.Add(time.Hour))
	start()
	lastTicksAre(t, rdb, n, t0.Add(time.Hour-time.Minute))
	testserver.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(logs.String(), `msg="append tick recovered"`) {
			return fmt.Errorf("no recovery logged yet:\n%s", logs.String())
		}
		return nil
	})
	stop()
}
