package health

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	grpchealth "google.golang.org/grpc/health"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
)

// TestCheckerMetrics runs the etcd and Redis checks against a real etcd
// and a real redis-server and reads clickagg_health_check_passing after
// each round: nothing before the first round, both passing, Redis failing
// once its server stopped, then etcd too once it closed.
func TestCheckerMetrics(t *testing.T) {
	// Started here rather than by testserver.Etcd, whose cleanup would
	// close it a second time.
	e, err := localserver.StartEtcd(localserver.EtcdConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	var closeEtcd sync.Once
	stopEtcd := func() { closeEtcd.Do(e.Close) }
	t.Cleanup(stopEtcd)
	cl := cluster.NewClient(testserver.NewEtcdClient(t, e.Endpoint), "/test")
	if _, err := cl.EnsurePartitions(context.Background(), 8); err != nil {
		t.Fatal(err)
	}
	r := testserver.Redis(t)
	rdb := redis.NewClient(testserver.RedisOptions(r))
	t.Cleanup(func() { _ = rdb.Close() })

	c := NewChecker(Config{Interval: time.Second, Timeout: 5 * time.Second}, grpchealth.NewServer(), nil, nil, time.Now)
	c.Add("etcd", func(ctx context.Context) error {
		_, err := cl.EnsurePartitions(ctx, 0)
		return err
	})
	c.Add("redis", RedisReachable(rdb))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	const head = `# HELP clickagg_health_check_passing 1 if the readiness check passed in the last round (every -health.check-interval), 0 if it failed, by check: etcd (a read of the cluster's configuration), redis (a write, or a PING where the role only reads), redis identity, split table, partitions, owners.
# TYPE clickagg_health_check_passing gauge
`
	if n, err := testutil.GatherAndCount(reg, "clickagg_health_check_passing"); err != nil || n != 0 {
		t.Fatalf("before a round: %d series (%v), want none", n, err)
	}
	for _, step := range []struct {
		name   string
		before func()
		want   string
	}{
		{"both up", func() {}, `clickagg_health_check_passing{check="etcd"} 1
clickagg_health_check_passing{check="redis"} 1
`},
		{"redis stopped", func() {
			if err := r.Stop(); err != nil {
				t.Fatal(err)
			}
		}, `clickagg_health_check_passing{check="etcd"} 1
clickagg_health_check_passing{check="redis"} 0
`},
		{"etcd closed", stopEtcd, `clickagg_health_check_passing{check="etcd"} 0
clickagg_health_check_passing{check="redis"} 0
`},
	} {
		step.before()
		c.Round(context.Background())
		if err := testutil.GatherAndCompare(reg, strings.NewReader(head+step.want), "clickagg_health_check_passing"); err != nil {
			t.Errorf("%s: %v", step.name, err)
		}
	}
}
