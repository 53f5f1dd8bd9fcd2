package test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/localserver"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/router"
	"github.com/clickagg/clickagg/testserver"
)

// TestRedisFull fills Redis mid-ingest (maxmemory far below what it uses,
// noeviction, set by CONFIG SET as an operator or a growing log would) and
// checks what the design promises: clients get UNAVAILABLE saying it is
// Redis memory, from a router bounding memory (naming the server) and from
// one that lets Redis refuse its appends, and both stay ready; the routers
// export the server's memory; no snapshot changes, a byte, while saves are refused, and a dead
// aggregator's partitions are claimed and restored from them meanwhile;
// once maxmemory is raised, ingest resumes by itself, and every
// acknowledged click is counted exactly once. (The bound on one full
// primary of a Redis Cluster: router's TestIngestOverMemoryBoundCluster.)
func TestRedisFull(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of a full Redis")
	}
	const partitions = 8
	boundHTTP, fullHTTP := freeAddr(t), freeAddr(t)
	routerFlags := []string{"-router.idle-watermark-lag=1h", "-router.redis-memory-check-interval=200ms"}
	spec := clusterSpec{
		partitions: partitions, coordinators: 1, routers: 1, aggregators: 2,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=1s"},
		routerFlags:     append([]string{"-http.addr=" + boundHTTP}, routerFlags...),
	}
	c := newTestCluster(t, spec)
	// A second router without the memory bound: Redis itself refuses its
	// appends.
	c.routers = append(c.routers, startProc(t, c.dir, "router-2",
		c.flags("-target=router", append([]string{"-http.addr=" + fullHTTP, "-router.max-redis-memory-fraction=0"}, routerFlags...))...))
	ctx := context.Background()
	full := c.redisClient().(*redis.Client)
	cc, qc, ic := c.coordinatorClient(), c.queryClient(), c.ingestClients()
	waitCaughtUp(t, cc, partitions, time.Minute)

	start := time.Now().Truncate(time.Minute).Add(-6 * time.Minute)
	w := newWorkload(20261207, 40_000, 1_000, 4, start, 0.05, 0.02, 0, 200)
	first := *w
	first.batches = w.batches[:len(w.batches)/3]
	ingest(t, &first, ic, nil)
	waitCaughtUp(t, cc, partitions, time.Minute)

	node := full.Options().Addr
	for _, kv := range [][2]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", "1"}} {
		if err := full.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("redis %s is full", node)

	// The rest of the clicks go on in the background: their clients get
	// UNAVAILABLE and retry, as clients do.
	rest := *w
	rest.batches = w.batches[len(w.batches)/3:]
	var res *ingestResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		res = ingest(t, &rest, ic, nil)
	}()

	// Both routers refuse, saying why. The probe sends clicks already
	// acknowledged, as after a lost answer: what reaches the partitions on
	// the other primaries counts once.
	probe := func(r int) error {
		_, err := ic[r].Ingest(ctx, &clickaggv1.IngestRequest{Events: w.batches[0]})
		return err
	}
	for r, want := range []string{router.ErrLogOverBound.Error() + ": Redis " + node + " uses ", router.ErrLogFull.Error()} {
		testserver.Eventually(t, 30*time.Second, func() error {
			err := probe(r)
			if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), want) {
				return fmt.Errorf("router-%d: %v, want UNAVAILABLE %q", r+1, err, want)
			}
			t.Logf("router-%d refuses: %v", r+1, err)
			return nil
		})
	}
	for _, m := range []struct {
		addr, name, label string
		want              float64
	}{
		{boundHTTP, "clickagg_router_log_over_bound", "", 1},
		{fullHTTP, "clickagg_router_log_full", "", 1},
		{boundHTTP, "clickagg_redis_maxmemory_bytes", `node="` + node + `"`, 1},
		{fullHTTP, "clickagg_redis_maxmemory_bytes", `node="` + node + `"`, 1},
	} {
		// Gauges follow each router's own reading, within an interval.
		testserver.Eventually(t, 10*time.Second, func() error {
			if v, err := metricSum(m.addr, m.name, m.label); err != nil || v != m.want {
				return fmt.Errorf("%s{%s} at %s = %v (%v) while Redis is full, want %v", m.name, m.label, m.addr, v, err, m.want)
			}
			return nil
		})
	}
	snapKeys := make([]string, partitions)
	for p := range partitions {
		snapKeys[p] = fmt.Sprintf("clickagg:{p%d}:snap", p)
	}
	snaps := dumpKeys(t, full, snapKeys)

	// The aggregator of partition 0 dies: its partitions move, and their
	// new owner claims and restores them from their snapshots while Redis
	// is full.
	st, err := cc.GetClusterStatus(ctx, &clickaggv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var victim *proc
	for _, a := range c.aggregators {
		for _, ps := range st.Partitions {
			if ps.Partition == 0 && ps.Member == a.name {
				victim = a
			}
		}
	}
	if victim == nil {
		t.Fatalf("no aggregator of this test owns partition 0: %v", st.Partitions)
	}
	t.Logf("SIGKILL %s, owner of partition 0", victim.name)
	victim.Kill()
	testserver.Eventually(t, time.Minute, func() error {
		st, err := cc.GetClusterStatus(ctx, &clickaggv1.GetClusterStatusRequest{})
		if err != nil {
			return err
		}
		if len(st.Unavailable) > 0 || len(st.Partitions) != partitions {
			return fmt.Errorf("partitions %v unavailable, %d reported", st.Unavailable, len(st.Partitions))
		}
		for _, ps := range st.Partitions {
			if ps.Member == victim.name || ps.State != "serving" {
				return fmt.Errorf("partition %d: %s on %s", ps.Partition, ps.State, ps.Member)
			}
		}
		return nil
	})
	if got := dumpKeys(t, full, snapKeys); !maps.Equal(got, snaps) {
		t.Errorf("snapshots changed while Redis refused writes")
	}
	if t.Failed() {
		t.FailNow()
	}

	// The routers stayed ready all along: behind a Service, clients still
	// reach them and hear why.
	for _, r := range c.routers {
		if st, err := r.health(""); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s: readiness %v (%v) while Redis is full, want SERVING", r.name, st, err)
		}
	}

	// Memory raised: ingest resumes by itself.
	if err := full.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	for r := range ic {
		testserver.Eventually(t, 30*time.Second, func() error { return probe(r) })
	}
	victim.Restart()
	<-done
	if res == nil {
		t.Fatal("ingest of the rest failed")
	}
	if res.retried.Load() == 0 {
		t.Errorf("no request was retried: Redis was never full for the clients")
	}
	for _, m := range []struct{ addr, name string }{{boundHTTP, "clickagg_router_log_over_bound"}, {fullHTTP, "clickagg_router_log_full"}} {
		testserver.Eventually(t, 10*time.Second, func() error {
			if v, err := metricSum(m.addr, m.name, ""); err != nil || v != 0 {
				return fmt.Errorf("%s at %s = %v (%v) after maxmemory was raised, want 0", m.name, m.addr, v, err)
			}
			return nil
		})
	}

	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	tr := &truth{clicks: w.unique}
	checkEveryAdMinute(t, qc, tr)
	checkTopN(t, qc, tr, w)
}

// freeAddr returns a free loopback address, for a process's -http.addr.
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// dumpKeys returns the serialized value (DUMP) of each key, "" for a
// missing one.
func dumpKeys(t *testing.T, rdb *redis.Client, keys []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range keys {
		v, err := rdb.Dump(context.Background(), k).Result()
		if err != nil && err != redis.Nil {
			t.Fatalf("dump %s: %v", k, err)
		}
		out[k] = v
	}
	return out
}
