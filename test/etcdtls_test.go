package test

import (
	"strings"
	"testing"
	"time"
)

// TestClusterOverEtcdTLS runs a small cluster whose etcd requires client
// certificates (clusterSpec.etcdTLS): every process reaches it with the
// -etcd.* flags, partitions are assigned through it, and a few thousand
// clicks are counted exactly.
func TestClusterOverEtcdTLS(t *testing.T) {
	spec := clusterSpec{
		partitions: 4, coordinators: 1, routers: 1, aggregators: 1, etcdTLS: true,
		routerFlags: []string{"-router.idle-watermark-lag=1h"},
	}
	c := newTestCluster(t, spec)
	if !strings.HasPrefix(c.etcd.Endpoint, "https://") {
		t.Fatalf("etcd at %s, want https", c.etcd.Endpoint)
	}
	coordClient := c.coordinatorClient()
	waitCaughtUp(t, coordClient, spec.partitions, time.Minute)
	if o := owners(t, c); o["aggregator-1"] != spec.partitions {
		t.Fatalf("owners in etcd %v, want aggregator-1 owning all %d partitions", o, spec.partitions)
	}

	start := time.Now().Truncate(time.Minute).Add(-6 * time.Minute)
	w := newWorkload(20261215, 3_000, 200, 5, start, 0.05, 0, 0, 250)
	res := ingest(t, w, c.ingestClients(), nil)
	if n := len(res.rejectedBy); n != 0 {
		t.Errorf("%d events rejected, want none", n)
	}
	waitCaughtUp(t, coordClient, spec.partitions, time.Minute)
	checkEveryAdMinute(t, c.queryClient(), &truth{clicks: w.unique})
}
