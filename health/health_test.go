package health

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/testserver"
)

func status(t *testing.T, hs *grpchealth.Server, svc string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status
}

// TestCheckerFollowsChecks flips one check and sees readiness (gRPC ""
// and the role's service, /readyz) follow it, and liveness stay up; then
// stops the rounds and sees liveness fail.
func TestCheckerFollowsChecks(t *testing.T) {
	hs := grpchealth.NewServer()
	var now atomic.Int64
	now.Store(time.Unix(1000, 0).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	c := NewChecker(Config{Interval: time.Second, Timeout: time.Second}, hs, []string{"svc"}, nil, clock)
	var failing atomic.Bool
	c.Add("redis", func(context.Context) error {
		if failing.Load() {
			return errors.New("connection refused")
		}
		return nil
	})
	ready := httptest.NewServer(c.ReadyHandler())
	defer ready.Close()
	live := httptest.NewServer(c.LiveHandler())
	defer live.Close()
	code := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c.Ready() == nil || code(ready.URL) != 503 {
		t.Fatal("ready before any round")
	}
	for _, tt := range []struct {
		fail bool
		want healthpb.HealthCheckResponse_ServingStatus
		code int
	}{
		{false, healthpb.HealthCheckResponse_SERVING, 200},
		{true, healthpb.HealthCheckResponse_NOT_SERVING, 503},
		{false, healthpb.HealthCheckResponse_SERVING, 200},
	} {
		failing.Store(tt.fail)
		c.Round(context.Background())
		for _, svc := range []string{"", "svc"} {
			if got := status(t, hs, svc); got != tt.want {
				t.Errorf("failing=%v: %q = %v, want %v", tt.fail, svc, got, tt.want)
			}
		}
		if got := code(ready.URL); got != tt.code {
			t.Errorf("failing=%v: /readyz %d, want %d", tt.fail, got, tt.code)
		}
		if got := code(live.URL); got != 200 {
			t.Errorf("failing=%v: /healthz %d, want 200", tt.fail, got)
		}
	}
	now.Add(int64(c.StallTimeout() + time.Second))
	if c.Live() || code(live.URL) != 503 {
		t.Error("live after no round for longer than the stall timeout")
	}
	c.SetStopping()
	if c.Ready() == nil {
		t.Error("ready while stopping")
	}
}

// TestVerifyRedis runs the identity check against a real etcd and two
// real redis-servers: the first member binds the cluster to its Redis,
// the same Redis passes again, another Redis is ErrWrongRedis, and an
// unreachable one is an error that is not.
func TestVerifyRedis(t *testing.T) {
	ctx := context.Background()
	cl := cluster.NewClient(testserver.EtcdClient(t), "/test")
	mine, other := testserver.RedisClient(t), testserver.RedisClient(t)
	if err := VerifyRedis(ctx, cl, mine, "p", "mine"); err != nil {
		t.Fatalf("first member: %v", err)
	}
	if err := VerifyRedis(ctx, cl, mine, "p", "mine"); err != nil {
		t.Fatalf("same redis again: %v", err)
	}
	if err := VerifyRedis(ctx, cl, other, "p", "other"); !errors.Is(err, ErrWrongRedis) {
		t.Fatalf("empty other redis: %v, want ErrWrongRedis", err)
	}
	other.Set(ctx, RedisIDKey("p"), "someone-else", 0)
	if err := VerifyRedis(ctx, cl, other, "p", "other"); !errors.Is(err, ErrWrongRedis) {
		t.Fatalf("another cluster's redis: %v, want ErrWrongRedis", err)
	}
	if err := VerifyRedis(ctx, cl, mine, "q", "mine"); !errors.Is(err, ErrWrongRedis) {
		t.Fatalf("same redis, other prefix: %v, want ErrWrongRedis", err)
	}
	mine.Close()
	if err := VerifyRedis(ctx, cl, mine, "p", "mine"); err == nil || errors.Is(err, ErrWrongRedis) {
		t.Fatalf("unreachable redis: %v, want a transient error", err)
	}
}

// TestGateRun runs the gate against a real etcd and real Redis servers: a
// Redis that is not reachable is retried until ctx ends, without passing;
// another cluster's Redis is refused at once; the cluster's own passes.
func TestGateRun(t *testing.T) {
	ctx := context.Background()
	cl := cluster.NewClient(testserver.EtcdClient(t), "/test")
	mine, other, gone := testserver.RedisClient(t), testserver.RedisClient(t), testserver.RedisClient(t)
	gone.Close()
	run := func(ctx context.Context, rdb redis.Cmdable) (*Gate, int, error) {
		g, attempts := NewGate(), 0
		err := g.Run(ctx, func(ctx context.Context) error {
			attempts++
			return VerifyRedis(ctx, cl, rdb, "p", "addr")
		}, slog.New(slog.DiscardHandler))
		return g, attempts, err
	}
	passed := func(g *Gate) bool { return g.Check(ctx) == nil }

	if g, n, err := run(ctx, mine); err != nil || n != 1 || !passed(g) {
		t.Fatalf("the cluster's redis: %v after %d attempts, passed %v; want nil after 1, passed", err, n, passed(g))
	}
	if g, n, err := run(ctx, other); !errors.Is(err, ErrWrongRedis) || n != 1 || passed(g) {
		t.Fatalf("another redis: %v after %d attempts, passed %v; want ErrWrongRedis after 1, not passed", err, n, passed(g))
	}
	// verifyPause starts at 100ms: a second is several attempts.
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if g, n, err := run(tctx, gone); err != nil || n < 2 || passed(g) {
		t.Fatalf("unreachable redis: %v after %d attempts, passed %v; want nil after several, not passed", err, n, passed(g))
	}
}

// TestRedisWritable fills a real Redis (maxmemory 1, noeviction): the
// write probe fails saying Redis is full, the router's passes; once
// maxmemory is raised both pass, and an unreachable Redis fails both.
func TestRedisWritable(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	writable, orFull := RedisWritable(rdb, ProbeKey("p", "aggregator", "a")), RedisWritableOrFull(rdb, ProbeKey("p", "router", "r"))
	set := func(k, v string) {
		t.Helper()
		if err := rdb.ConfigSet(ctx, k, v).Err(); err != nil {
			t.Fatal(err)
		}
	}
	set("maxmemory-policy", "noeviction")
	set("maxmemory", "1")
	if err := writable(ctx); err == nil || !strings.Contains(err.Error(), "redis is full and refuses writes") {
		t.Errorf("RedisWritable on a full Redis: %v, want it full", err)
	}
	if err := orFull(ctx); err != nil {
		t.Errorf("RedisWritableOrFull on a full Redis: %v, want nil", err)
	}
	set("maxmemory", "0")
	for name, check := range map[string]func(context.Context) error{"RedisWritable": writable, "RedisWritableOrFull": orFull} {
		if err := check(ctx); err != nil {
			t.Errorf("%s once maxmemory is raised: %v", name, err)
		}
	}
	rdb.Close()
	for name, check := range map[string]func(context.Context) error{"RedisWritable": writable, "RedisWritableOrFull": orFull} {
		if err := check(ctx); err == nil {
			t.Errorf("%s on a closed client: nil, want an error", name)
		}
	}
}
