package router

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestConfigFlagsAndValidate(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if fs.Lookup("router.id") != nil {
		t.Error("flag -router.id exists; the router's ID is the process's -id")
	}
	for _, name := range []string{"router.max-clock-skew", "router.acceptance-horizon", "router.tick-interval",
		"router.idle-watermark-lag", "router.max-events-per-request", "router.max-id-length",
		"router.append-concurrency", "router.max-batch-events", "router.append-timeout", "router.stream-window",
		"router.max-redis-memory-fraction", "router.redis-memory-check-interval", "router.caller-rate", "router.caller-burst"} {
		f := fs.Lookup(name)
		if f == nil || f.Usage == "" {
			t.Errorf("flag -%s missing or without help", name)
		}
	}
	want := Config{MaxSkew: time.Minute, Horizon: 6 * time.Hour, TickInterval: time.Second,
		IdleLag: time.Minute, MaxEvents: 10000, MaxIDLength: 128,
		AppendConcurrency: 4, MaxBatchEvents: 20000, AppendTimeout: 10 * time.Second, StreamWindow: 16,
		MaxRedisMemoryFraction: 0.8, MemoryCheckInterval: time.Second}
	if c != want {
		t.Fatalf("defaults %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(defaults): %v", err)
	}
	if id := New(c, "", partitioner(t, 1), nil, nil, nil).id; id != defaultID() || !strings.Contains(id, "-") {
		t.Fatalf("router with an empty ID is named %q, want hostname-pid %q", id, defaultID())
	}
	if err := fs.Parse([]string{"-router.idle-watermark-lag=24h", "-router.max-events-per-request=5"}); err != nil {
		t.Fatal(err)
	}
	if c.IdleLag != 24*time.Hour || c.MaxEvents != 5 {
		t.Fatalf("parsed %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}

	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"negative_skew", func(c *Config) { c.MaxSkew = -time.Second }, "router.max-clock-skew -1s: must not be negative"},
		{"zero_horizon", func(c *Config) { c.Horizon = 0 }, "router.acceptance-horizon 0s: must be positive"},
		{"zero_tick_interval", func(c *Config) { c.TickInterval = 0 }, "router.tick-interval 0s: must be positive"},
		{"negative_idle_lag", func(c *Config) { c.IdleLag = -time.Second }, "router.idle-watermark-lag -1s: must not be negative"},
		{"zero_max_events", func(c *Config) { c.MaxEvents = 0 }, "router.max-events-per-request 0: must be at least 1"},
		{"zero_max_id_length", func(c *Config) { c.MaxIDLength = 0 }, "router.max-id-length 0: must be at least 1"},
		{"memory_fraction_above_1", func(c *Config) { c.MaxRedisMemoryFraction = 1.5 }, "router.max-redis-memory-fraction 1.5: must be between 0 and 1"},
		{"negative_memory_fraction", func(c *Config) { c.MaxRedisMemoryFraction = -0.1 }, "router.max-redis-memory-fraction -0.1: must be between 0 and 1"},
		{"zero_memory_check_interval", func(c *Config) { c.MemoryCheckInterval = 0 }, "router.redis-memory-check-interval 0s: must be positive"},
		{"negative_caller_rate", func(c *Config) { c.CallerRate = -1 }, "router.caller-rate -1: must be a number of clicks per second, at least 0"},
		{"nan_caller_rate", func(c *Config) { c.CallerRate = math.NaN() }, "router.caller-rate NaN: must be a number of clicks per second, at least 0"},
		{"negative_caller_burst", func(c *Config) { c.CallerBurst = -1 }, "router.caller-burst -1: must not be negative"},
		{"caller_burst_below_max_events", func(c *Config) { c.CallerRate, c.CallerBurst = 10, 9999 },
			"router.caller-burst 9999: must be at least router.max-events-per-request=10000, or a request that large would never pass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t)
			tc.mod(&c)
			if err := c.Validate(); err == nil || err.Error() != tc.want {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestValidateID(t *testing.T) {
	for _, tc := range []struct {
		name, id, want string
	}{
		{"ok", testID, ""},
		{"max_length", strings.Repeat("r", 128), ""},
		{"long_id", strings.Repeat("r", 129), "-id is 129 bytes long, at most 128 allowed for a router"},
		{"invalid_utf8_id", "r\xff", "-id is not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateID(tc.id)
			if got := fmt.Sprint(err); (err == nil) != (tc.want == "") || err != nil && got != tc.want {
				t.Fatalf("ValidateID(%q) = %v, want %q", tc.id, err, tc.want)
			}
		})
	}
}

// TestRequestErrors covers the requests that fail as a whole.
func TestRequestErrors(t *testing.T) {
	rdb := testserver.RedisClient(t)
	cfg := testConfig(t)
	cfg.MaxEvents = 5
	parts := partitioner(t, 4)
	r := New(cfg, testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	batch := func(n int) []*clickaggv1.ClickEvent {
		var out []*clickaggv1.ClickEvent
		for i := range n {
			out = append(out, click(fmt.Sprintf("e-%d", i), fmt.Sprintf("ad-%d", i), t0))
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		events   []*clickaggv1.ClickEvent
		sentinel error
		code     codes.Code
		msg      string
	}{
		{"no_events", nil, ErrNoEvents, codes.InvalidArgument, "router: request has no events"},
		{"empty_events", []*clickaggv1.ClickEvent{}, ErrNoEvents, codes.InvalidArgument, "router: request has no events"},
		{"too_many_events", batch(6), ErrTooManyEvents, codes.ResourceExhausted, "router: request has too many events: 6 events, at most 5 allowed"},
		{"max_events", batch(5), nil, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accepted, rejected, err := r.Ingest(context.Background(), tc.events)
			if tc.sentinel == nil {
				if err != nil || accepted != int64(len(tc.events)) || len(rejected) != 0 {
					t.Fatalf("Ingest = %d, %v, %v; want all %d accepted", accepted, rejected, err, len(tc.events))
				}
				return
			}
			if !errors.Is(err, tc.sentinel) || accepted != 0 || rejected != nil {
				t.Fatalf("Ingest = %d, %v, %v; want 0, nil, %v", accepted, rejected, err, tc.sentinel)
			}
			st := status.Convert(toStatus(err))
			if st.Code() != tc.code || st.Message() != tc.msg {
				t.Fatalf("status %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
}

// TestIngestAppendsValidEventsByPartition ingests one mixed batch and checks
// the answer and the exact content of every partition's stream against a
// grouping the test computes itself.
func TestIngestAppendsValidEventsByPartition(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 8)
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))

	var events []*clickaggv1.ClickEvent
	var wantRejected []*clickaggv1.Rejection
	want := map[int][]*clickaggv1.LogEvent{}
	var wantMax int64
	for i := range 300 {
		e := click(fmt.Sprintf("e-%d", i), fmt.Sprintf("ad-%d", i%40), t0.Add(-time.Duration(i)*time.Minute+30*time.Second))
		e.Ip = fmt.Sprintf("2001:DB8::%X", i+1)
		e.Country = []string{"us", "FR", "de"}[i%3]
		switch {
		case i%7 == 3:
			e.Ip = fmt.Sprintf("300.0.0.%d", i)
			wantRejected = append(wantRejected, &clickaggv1.Rejection{Index: int32(i), EventId: e.EventId,
				Reason: fmt.Sprintf("ip %q is not a valid IPv4 or IPv6 address", e.Ip)})
		case i%11 == 5:
			e.Country = "XX"
			wantRejected = append(wantRejected, &clickaggv1.Rejection{Index: int32(i), EventId: e.EventId,
				Reason: `country "XX" is not an assigned ISO 3166-1 alpha-2 code`})
		case i == 299:
			e.ClickTime = timestamppb.New(t0.Add(-7 * time.Hour))
			wantRejected = append(wantRejected, &clickaggv1.Rejection{Index: int32(i), EventId: e.EventId,
				Reason: "click_time 2026-03-01T05:00:00Z is 7h0m0s behind the router clock, over the acceptance horizon of 6h0m0s by 1h0m0s"})
		default:
			le := stored(e)
			le.Ip = fmt.Sprintf("2001:db8::%x", i+1)
			le.Country = strings.ToUpper(e.Country)
			p := parts.Partition(e.AdId)
			want[p] = append(want[p], le)
			wantMax = max(wantMax, le.ClickTimeMs)
		}
		events = append(events, e)
	}
	// A client retry inside one request: appended twice, the aggregators'
	// dedup counts it once.
	dup := proto.CloneOf(events[1])
	events = append(events, dup)
	dp := parts.Partition(dup.AdId)
	i := slices.IndexFunc(want[dp], func(e *clickaggv1.LogEvent) bool { return e.EventId == dup.EventId })
	want[dp] = append(want[dp], proto.CloneOf(want[dp][i]))
	wantAccepted := int64(len(events) - len(wantRejected))

	accepted, rejected, err := r.Ingest(ctx, events)
	if err != nil {
		t.Fatal(err)
	}
	if accepted != wantAccepted {
		t.Errorf("accepted %d, want %d", accepted, wantAccepted)
	}
	if !equalRejections(rejected, wantRejected) {
		t.Errorf("rejected %v\nwant %v", rejected, wantRejected)
	}
	if len(want) < 2 {
		t.Fatalf("test data reaches %d partitions; it must reach several", len(want))
	}
	for p := range parts.Partitions() {
		entries, err := readStream(ctx, rdb, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(want[p]) == 0 {
			if len(entries) != 0 {
				t.Errorf("partition %d: %d entries, want none", p, len(entries))
			}
			continue
		}
		wantEntry := &clickaggv1.LogEntry{RouterId: "router-test", Events: want[p]}
		if len(entries) != 1 || !proto.Equal(entries[0], wantEntry) {
			t.Errorf("partition %d: %v\nwant one entry %v", p, entries, prototext.Format(wantEntry))
		}
	}
	if got := r.maxAccepted.Load(); got != wantMax {
		t.Errorf("frontier %d, want %d", got, wantMax)
	}
}

// TestIngestConcurrent runs many Ingest calls at once: every accepted event
// is in the log exactly once and the frontier is the maximum.
func TestIngestConcurrent(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 8)
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))

	const workers, requests, perRequest = 8, 10, 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	for w := range workers {
		wg.Go(func() {
			for q := range requests {
				var batch []*clickaggv1.ClickEvent
				for i := range perRequest {
					n := (w*requests+q)*perRequest + i
					at := t0.Add(-time.Duration(n) * time.Second)
					batch = append(batch, click(fmt.Sprintf("e-%d", n), fmt.Sprintf("ad-%d", n%97), at))
				}
				accepted, rejected, err := r.Ingest(ctx, batch)
				mu.Lock()
				total += accepted
				mu.Unlock()
				if err != nil || len(rejected) != 0 {
					t.Errorf("Ingest: %v, %v", rejected, err)
				}
			}
		})
	}
	wg.Wait()
	wantMax := t0.UnixMilli() // event 0 is the newest
	if total != workers*requests*perRequest {
		t.Fatalf("accepted %d, want %d", total, workers*requests*perRequest)
	}
	seen := map[string]int{}
	for p := range parts.Partitions() {
		entries, err := readStream(ctx, rdb, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			for _, ev := range e.Events {
				if parts.Partition(ev.AdId) != p {
					t.Errorf("event %s of ad %s in partition %d, want %d", ev.EventId, ev.AdId, p, parts.Partition(ev.AdId))
				}
				seen[ev.EventId]++
			}
		}
	}
	for n := range workers * requests * perRequest {
		if id := fmt.Sprintf("e-%d", n); seen[id] != 1 {
			t.Errorf("event %s is in the log %d times, want once", id, seen[id])
		}
	}
	if len(seen) != workers*requests*perRequest {
		t.Errorf("%d distinct events in the log, want %d", len(seen), workers*requests*perRequest)
	}
	if got := r.maxAccepted.Load(); got != wantMax {
		t.Errorf("frontier %d, want %d", got, wantMax)
	}
}

// TestIngestLogUnavailable kills Redis: the request fails with UNAVAILABLE,
// reports nothing accepted and does not move the frontier.
func TestIngestLogUnavailable(t *testing.T) {
	srv := testserver.Redis(t)
	rdb := newClient(t, srv)
	parts := partitioner(t, 4)
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	batch := []*clickaggv1.ClickEvent{click("e-1", "ad-1", t0), click("e-2", "ad-2", t0), {EventId: "bad"}}
	if accepted, _, err := r.Ingest(context.Background(), batch[:1]); err != nil || accepted != 1 {
		t.Fatalf("Ingest before the kill = %d, %v", accepted, err)
	}
	before := r.maxAccepted.Load()
	srv.Kill()

	batch[0].ClickTime.Seconds += 30
	accepted, rejected, err := r.Ingest(context.Background(), batch)
	if !errors.Is(err, ErrLogUnavailable) || accepted != 0 || rejected != nil {
		t.Fatalf("Ingest = %d, %v, %v; want 0, nil, %v", accepted, rejected, err, ErrLogUnavailable)
	}
	if code := status.Code(toStatus(err)); code != codes.Unavailable {
		t.Fatalf("code %v, want Unavailable", code)
	}
	if got := r.maxAccepted.Load(); got != before {
		t.Fatalf("frontier moved from %d to %d on a failed append", before, got)
	}

	// Over gRPC the client sees the same.
	c := startGRPC(t, r)
	_, err = c.Ingest(context.Background(), &clickaggv1.IngestRequest{Events: batch})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), ErrLogUnavailable.Error()) {
		t.Fatalf("gRPC Ingest: %v, want Unavailable: %v", err, ErrLogUnavailable)
	}
}

// TestIngestContextEnded: a caller that is gone or out of time gets its own
// code, not UNAVAILABLE, and nothing is appended.
func TestIngestContextEnded(t *testing.T) {
	rdb := testserver.RedisClient(t)
	parts := partitioner(t, 4)
	r := New(testConfig(t), testID, parts, partlog.New(rdb, testPrefix), nil, fixedClock(t0))
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		code codes.Code
	}{
		{"canceled", canceled, codes.Canceled},
		{"deadline_exceeded", expired, codes.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accepted, _, err := r.Ingest(tc.ctx, []*clickaggv1.ClickEvent{click("e-"+tc.name, "ad-1", t0)})
			st := status.Convert(toStatus(err))
			want := "append 1 events to 1 partitions: " + tc.ctx.Err().Error()
			if accepted != 0 || st.Code() != tc.code || st.Message() != want {
				t.Fatalf("Ingest = %d, %v; want 0 and %v %q", accepted, err, tc.code, want)
			}
		})
	}
	n, err := rdb.XLen(context.Background(), partlog.Key(testPrefix, parts.Partition("ad-1"))).Result()
	if err != nil || n != 0 {
		t.Fatalf("stream has %d entries (%v), want 0", n, err)
	}
}

func TestToStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{ErrNoEvents, codes.InvalidArgument},
		{fmt.Errorf("%w: 7 events", ErrTooManyEvents), codes.ResourceExhausted},
		{fmt.Errorf("%w: append: %w", ErrLogUnavailable, errors.New("connection refused")), codes.Unavailable},
		{fmt.Errorf("%w: %w", ErrSplitsUnavailable, errors.New("hotkey: split table copy may be stale")), codes.Unavailable},
		{fmt.Errorf("%w: append: %w", ErrLogUnavailable, context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("%w: append: %w", ErrLogUnavailable, context.Canceled), codes.Canceled},
		{errors.New("encode log entry of partition 3: boom"), codes.Internal},
	} {
		st := status.Convert(toStatus(tc.err))
		if st.Code() != tc.code || st.Message() != tc.err.Error() {
			t.Errorf("toStatus(%v) = %v %q, want %v", tc.err, st.Code(), st.Message(), tc.code)
		}
	}
}

func TestFrontier(t *testing.T) {
	const lag, skew = time.Minute, time.Minute
	ms := func(d time.Duration) int64 { return t0.Add(d).UnixMilli() }
	for _, tc := range []struct {
		name        string
		maxAccepted int64
		last        int64
		want        int64
	}{
		{"no data: now minus idle lag", 0, 0, ms(-lag)},
		{"old data: idle lag floor wins", ms(-time.Hour), 0, ms(-lag)},
		{"recent data wins over the floor", ms(-10 * time.Second), 0, ms(-10 * time.Second)},
		{"future data within skew", ms(50 * time.Second), 0, ms(50 * time.Second)},
		{"capped at now plus skew", ms(5 * time.Minute), 0, ms(skew)},
		{"never below the last tick", ms(-time.Hour), ms(30 * time.Second), ms(30 * time.Second)},
		{"last tick beyond the cap stays", 0, ms(10 * time.Minute), ms(10 * time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := frontier(tc.maxAccepted, t0, lag, skew, tc.last); got != tc.want {
				t.Fatalf("frontier = %d, want %d (%+dms)", got, tc.want, got-tc.want)
			}
		})
	}
}

// runRouter runs r.Run until the test ends, failing the test if Run returns
// an error; stop ends it early and waits.
func runRouter(t *testing.T, r *Router) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestIngestLogFull fills a real Redis (maxmemory with noeviction): ingest
// fails with UNAVAILABLE saying the log store is full, the gauge says so,
// and the log says so once, not once per request; when Redis accepts
// writes again, so does the router, and it says so once.
func TestIngestLogFull(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	logs := &testsupport.SyncBuffer{}
	lg := slog.New(slog.NewTextHandler(logs, nil))
	r := New(testConfig(t), testID, partitioner(t, 4), partlog.New(rdb, testPrefix), lg, fixedClock(t0))
	c := startGRPC(t, r)
	ingest := func(id string) error {
		_, err := c.Ingest(ctx, &clickaggv1.IngestRequest{Events: []*clickaggv1.ClickEvent{click(id, "ad-1", t0)}})
		return err
	}
	if err := ingest("e-0"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	// Any amount below what Redis already uses refuses every write.
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := ingest(fmt.Sprintf("e-full-%d", i))
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), ErrLogFull.Error()+": ") {
			t.Fatalf("Ingest into a full Redis: %v, want Unavailable %q...", err, ErrLogFull)
		}
	}
	if v := testutil.ToFloat64(r.m.logFull); v != 1 {
		t.Errorf("clickagg_router_log_full = %v while Redis is full, want 1", v)
	}
	if _, err := r.tick(ctx, 0); !errors.Is(err, partlog.ErrFull) {
		t.Errorf("tick into a full Redis: %v, want %v", err, partlog.ErrFull)
	}
	const fullLine, backLine = "partition log store is full", "partition log store accepts appends again"
	if n := strings.Count(logs.String(), fullLine); n != 1 {
		t.Errorf("%d log lines %q after 3 failed requests and a tick, want 1:\n%s", n, fullLine, logs)
	}

	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := ingest(fmt.Sprintf("e-after-%d", i)); err != nil {
			t.Fatalf("Ingest once Redis has room: %v", err)
		}
	}
	if v := testutil.ToFloat64(r.m.logFull); v != 0 {
		t.Errorf("clickagg_router_log_full = %v after a successful append, want 0", v)
	}
	if n := strings.Count(logs.String(), backLine); n != 1 {
		t.Errorf("%d log lines %q, want 1:\n%s", n, backLine, logs)
	}
}
