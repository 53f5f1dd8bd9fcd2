package test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
)

// nodeTimeout is the Redis Cluster node timeout of the failover test: a
// primary that does not answer for this long is failed over. Redis's
// default, 15s, would make the test mostly wait.
const nodeTimeout = 2 * time.Second

// TestPrimaryFailover SIGKILLs, during ingest, the Redis Cluster primary
// that holds the busiest partition, three times (at a quarter, half and
// three quarters of the workload), each time after its replica has been
// cut off from it for a second (see failOver): the cluster promotes the
// replica,
// the killed node is restarted as its supervisor would and rejoins as
// the new primary's replica, and ingest and queries resume by
// themselves. With -redis.wait-replicas=1 a click is acknowledged only
// once the replica has it, so every acknowledged click is counted
// exactly once although each kill loses what the primary had not yet
// replicated.
func TestPrimaryFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	const partitions = 16
	c := newTestCluster(t, clusterSpec{
		partitions: partitions, coordinators: 1, routers: 2, aggregators: 2,
		redisCluster:    struct{ primaries, replicas int }{3, 1},
		commonFlags:     []string{"-redis.wait-replicas=1", "-redis.wait-timeout=1s"},
		aggregatorFlags: []string{"-aggregator.snapshot-interval=1s"},
		routerFlags:     []string{"-router.idle-watermark-lag=1h"},
	})
	for _, n := range c.rcluster.Nodes {
		setNodeTimeout(t, n)
	}
	rdb := redis.NewClusterClient(testserver.RedisClusterOptions(c.rcluster))
	defer rdb.Close()
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)

	start := time.Now().Truncate(time.Minute).Add(-15 * time.Minute)
	w := newWorkload(7, 100_000, 10_000, 12, start, 0.05, 0.01, 0, 500)
	busiest := busiestPartition(t, w, partitions)
	key := partlog.Key("clickagg", busiest)
	n := len(w.batches)
	var kills atomic.Int32
	// done is closed when the last kill is over: the cluster has a
	// primary for every slot again, and the killed node is back.
	done := make(chan struct{})
	close(done)
	ingest(t, w, c.ingestClients(), func(i int, res *ingestResult) {
		if i != n/4 && i != n/2 && i != 3*n/4 {
			return
		}
		<-done
		// The last kill's node must have synced as a replica, or none
		// could take over.
		waitReplicasOnline(t, c.rcluster)
		victim := primaryOf(t, rdb, c.rcluster, key)
		replica := c.rcluster.Nodes[replicaOf(t, c.rcluster, victim)]
		done = make(chan struct{})
		go func() {
			defer close(done)
			failOver(t, c.rcluster, rdb, victim, replica, key, c.aggregators)
			kills.Add(1)
		}()
		t.Logf("failing over partition %d's primary at request %d", busiest, i)
	})
	<-done
	if k := kills.Load(); k != 3 {
		t.Fatalf("%d kills, want 3", k)
	}
	waitCaughtUp(t, cc, partitions, 3*time.Minute)
	tr := &truth{clicks: w.unique}
	qc := c.queryClient()
	checkEveryAdMinute(t, qc, tr)
	checkTopN(t, qc, tr, w)
}

// failOver cuts replica off from its primary rc.Nodes[victim] (a wrong
// masterauth, and its link closed) and freezes the aggregators (SIGSTOP),
// and lets ingest go on for a second, so that the primary takes writes
// that neither its replica nor a reader ever gets: with
// -redis.wait-replicas=0 they would be acknowledged, and lost. (A frozen
// replica would not do: the kernel keeps what the primary sent it, and it
// reads all of it when it wakes; an aggregator that read the writes in
// time would count them all the same and hide the loss.) It then SIGKILLs
// the primary, mends the replica and wakes the aggregators, waits until
// the replica is the primary of key, and restarts the killed node, which
// rejoins as its replica.
func failOver(t *testing.T, rc *localserver.RedisCluster, rdb *redis.ClusterClient, victim int, replica *localserver.Redis, key string, aggregators []*proc) {
	ctx := context.Background()
	old := rc.Nodes[victim].Addr
	rr := redis.NewClient(testserver.RedisOptions(replica))
	defer rr.Close()
	t.Logf("cut replica %s off from primary %s, SIGSTOP the aggregators", replica.Addr, old)
	for _, a := range aggregators {
		a.signal(syscall.SIGSTOP)
	}
	if err := rr.ConfigSet(ctx, "masterauth", "wrong").Err(); err != nil {
		t.Error(err)
		return
	}
	if err := rr.ClientKillByFilter(ctx, "TYPE", "master").Err(); err != nil {
		t.Error(err)
		return
	}
	// Not an assertion: the time for writes to reach the primary alone.
	time.Sleep(time.Second)
	t.Logf("SIGKILL primary %s, mend replica %s, SIGCONT the aggregators", old, replica.Addr)
	rc.Nodes[victim].Kill()
	if err := rr.ConfigSet(ctx, "masterauth", replica.Password).Err(); err != nil {
		t.Error(err)
		return
	}
	for _, a := range aggregators {
		a.signal(syscall.SIGCONT)
	}
	testserver.Eventually(t, time.Minute, func() error {
		p, err := rdb.MasterForKey(ctx, key)
		if err == nil && p.Options().Addr == replica.Addr {
			if role, err := p.Do(ctx, "role").Slice(); err == nil && role[0] == "master" {
				return nil
			}
		}
		rdb.ReloadState(ctx)
		return fmt.Errorf("replica %s is not the primary of %s yet", replica.Addr, key)
	})
	t.Logf("%s failed over to %s; restarting %s", key, replica.Addr, old)
	r := rc.Nodes[victim]
	if err := r.Restart(ctx); err != nil {
		t.Errorf("restart %s: %v", old, err)
		return
	}
	setNodeTimeout(t, r)
}

// setNodeTimeout sets the cluster node timeout of n to nodeTimeout.
func setNodeTimeout(t *testing.T, n *localserver.Redis) {
	t.Helper()
	rc := redis.NewClient(testserver.RedisOptions(n))
	defer rc.Close()
	if err := rc.ConfigSet(context.Background(), "cluster-node-timeout", fmt.Sprint(nodeTimeout.Milliseconds())).Err(); err != nil {
		t.Fatalf("set cluster-node-timeout on %s: %v", n.Addr, err)
	}
}

// busiestPartition returns the partition that receives the most events
// of w.
func busiestPartition(t *testing.T, w *workload, partitions int) int {
	t.Helper()
	parts, err := ring.NewPartitioner(partitions)
	if err != nil {
		t.Fatal(err)
	}
	count := make([]int, partitions)
	for _, b := range w.batches {
		for _, ev := range b {
			count[parts.Partition(ev.AdId)]++
		}
	}
	best := 0
	for p, k := range count {
		if k > count[best] {
			best = p
		}
	}
	t.Logf("partition %d is the busiest: %d of %d events", best, count[best], len(w.unique))
	return best
}

// primaryOf returns the index in rc.Nodes of the primary that holds key.
func primaryOf(t *testing.T, rdb *redis.ClusterClient, rc *localserver.RedisCluster, key string) int {
	t.Helper()
	p, err := rdb.MasterForKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range rc.Nodes {
		if n.Addr == p.Options().Addr {
			return i
		}
	}
	t.Fatalf("primary %s of %s is not a node of the cluster", p.Options().Addr, key)
	return -1
}

// replicaOf returns the index in rc.Nodes of the replica of primary
// rc.Nodes[primary].
func replicaOf(t *testing.T, rc *localserver.RedisCluster, primary int) int {
	t.Helper()
	c := redis.NewClient(testserver.RedisOptions(rc.Nodes[primary]))
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range rc.Nodes {
		_, port, _ := strings.Cut(n.Addr, ":")
		if strings.Contains(info, "port="+port+",state=online") {
			return i
		}
	}
	t.Fatalf("primary %s has no replica online: %q", rc.Nodes[primary].Addr, info)
	return -1
}

// waitReplicasOnline waits until every primary has a replica that has
// completed its sync.
func waitReplicasOnline(t *testing.T, rc *localserver.RedisCluster) {
	t.Helper()
	for _, n := range rc.Nodes {
		c := redis.NewClient(testserver.RedisOptions(n))
		testserver.Eventually(t, time.Minute, func() error {
			info, err := c.Info(context.Background(), "replication").Result()
			if err != nil {
				return err
			}
			if strings.Contains(info, "role:master") && !strings.Contains(info, ",state=online,") {
				return fmt.Errorf("primary %s has no replica online", n.Addr)
			}
			return nil
		})
		_ = c.Close()
	}
}
