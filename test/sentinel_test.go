package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/testserver"
)

// waitReplicas is the -redis.wait-replicas the Sentinel failover test
// runs with. At 0 (no replica acknowledgement) Redis replication is
// asynchronous, and a click acknowledged just before the primary dies may
// be on no replica: the test then pauses ingest for a moment before the
// kill, until the replica holds every acknowledged write. At 1 every
// acknowledged write is on the replica already, and the kill comes in the
// middle of traffic, as the issue asks.
const waitReplicas = 1

// TestSentinelFailoverExact is issue 14's test 4: a clickagg cluster on a
// primary with one replica under three sentinels (quorum 2) ingests 300k
// clicks with duplicates, late and invalid events; midway the primary is
// SIGKILLed. The sentinels promote the replica, ingest and queries resume
// by themselves (clients only retry what failed, with the same event ids),
// the old primary comes back at once and is made a replica, and every
// (ad, minute) count, top-N and watched top list equals the ground truth.
func TestSentinelFailoverExact(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end failover test")
	}
	spec := clusterSpec{
		partitions: 16, coordinators: 1, routers: 2, aggregators: 2,
		aggregatorFlags: []string{"-aggregator.snapshot-interval=2s"},
		// Event times run from 24 minutes ago to 2 minutes ago.
		routerFlags: []string{"-router.idle-watermark-lag=1h"},
	}
	spec.redisSentinel.replicas, spec.redisSentinel.sentinels = 1, 3
	if waitReplicas > 0 {
		spec.commonFlags = append(spec.commonFlags, fmt.Sprintf("-redis.wait-replicas=%d", waitReplicas))
	}
	c := newTestCluster(t, spec)
	rs := c.rsentinel
	primary, replica := rs.Nodes[0], rs.Nodes[1]
	coordClient := c.coordinatorClient()
	waitCaughtUp(t, coordClient, spec.partitions, 2*time.Minute)
	qc := c.queryClient()
	watched := watchTop(t, qc)

	start := time.Now().Truncate(time.Minute).Add(-24 * time.Minute)
	w := newWorkload(20261207, 300_000, 20_000, 22, start, 0.05, 0.02, 0.005, 500)
	t.Logf("workload: %d unique clicks, %d duplicates, %d late, %d invalid, %d requests",
		len(w.unique), w.dups, w.late, len(w.invalidAt), len(w.batches))

	failedOver := make(chan struct{})
	n := len(w.batches)
	res := ingest(t, w, c.ingestClients(), func(i int, res *ingestResult) {
		if i != n/2 {
			return
		}
		if waitReplicas == 0 {
			// Every request before i is acknowledged and none after it
			// is sent; a write and WAIT on the primary after them all
			// returns once the replica holds everything written before.
			waitSent(&res.sent, int64(i))
			if err := replicated(primary); err != nil {
				t.Errorf("before the kill: %v", err)
			}
		} else {
			waitSent(&res.sent, int64(i-8))
		}
		t.Logf("SIGKILL the primary %s at request %d", primary.Addr, i)
		primary.Kill()
		killed := time.Now()
		go func() {
			defer close(failedOver)
			// As soon as one sentinel names the new primary, the old one
			// comes back: the others learn of the failover from hello
			// messages and still name it for a moment, in which it is a
			// master again. Clients must not write to it (redisconf's
			// agreement): what it takes is lost when it is made a replica.
			// Not testserver.Eventually: t.Fatal belongs to the test's
			// goroutine, and this is the ingest's.
			sc := redis.NewSentinelClient(&redis.Options{Addr: rs.Sentinels[0].Addr, Password: rs.SentinelPassword})
			defer sc.Close()
			for {
				got, err := sc.GetMasterAddrByName(context.Background(), rs.MasterName).Result()
				if err == nil && strings.Join(got, ":") == replica.Addr {
					break
				}
				if time.Since(killed) > time.Minute {
					t.Errorf("a minute after the kill, sentinel %s names %v (%v), want the replica %s", rs.Sentinels[0].Addr, got, err, replica.Addr)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("sentinel %s names %s the primary %v after the kill", rs.Sentinels[0].Addr, replica.Addr, time.Since(killed).Round(100*time.Millisecond))
			// Back, the old primary becomes the new one's replica, so that
			// a replica count of 1 can be met again.
			if err := primary.Restart(context.Background()); err != nil {
				t.Errorf("restart the old primary: %v", err)
			}
		}()
	})
	<-failedOver
	if len(res.rejectedBy) != len(w.invalidAt) {
		t.Errorf("%d events rejected, want %d", len(res.rejectedBy), len(w.invalidAt))
	}

	waitCaughtUp(t, coordClient, spec.partitions, 3*time.Minute)
	tr := &truth{clicks: w.unique}
	checkEveryAdMinute(t, qc, tr)
	checkTopN(t, qc, tr, w)
	// The top lists stored in Redis are not checked: they are written
	// without WAIT, so one written after the replica caught up can be lost
	// with the primary, and queryd writes a minute again only when its
	// counts change.
	checkPublished(t, nil, watched, tr, w)
}

// replicated returns once every write that primary acknowledged so far
// is on a replica: WAIT counts the replicas that hold the client's last
// write, and the write of a marker key comes after all of them.
func replicated(primary *localserver.Redis) error {
	ctx := context.Background()
	rdb := redis.NewClient(testserver.RedisOptions(primary))
	defer rdb.Close()
	if err := rdb.Set(ctx, "test:replicated", time.Now().String(), 0).Err(); err != nil {
		return err
	}
	if n, err := rdb.Do(ctx, "WAIT", 1, 30_000).Int(); err != nil || n < 1 {
		return fmt.Errorf("WAIT 1: %d replicas, %v", n, err)
	}
	return nil
}
