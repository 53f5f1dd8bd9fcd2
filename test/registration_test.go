package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/testserver"
)

// TestLostLeasesAreRegisteredAgain revokes the etcd leases of a running
// router, queryd and coordinator, as an etcd outage longer than
// -etcd.lease-ttl would end them: each registers again as a new
// incarnation, and the router acknowledges the split table on its new
// lease, the incarnation whose acknowledgement the coordinator waits for
// before a split takes effect.
func TestLostLeasesAreRegisteredAgain(t *testing.T) {
	c := newTestCluster(t, clusterSpec{partitions: 4, coordinators: 1, routers: 1, aggregators: 1})
	cli := c.etcdClient()
	cl := cluster.NewClient(cli, cluster.DefaultPrefix)
	store := hotkey.NewStore(cli, cluster.DefaultPrefix, c.partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kept := []string{"router-1", "queryd-1", "coordinator-1"}

	// current returns the kept members by id once all are registered and
	// the router acknowledged the table on its lease.
	current := func() (map[string]cluster.Member, error) {
		ms, err := cl.Members(ctx, "")
		if err != nil {
			return nil, err
		}
		byID := map[string]cluster.Member{}
		for _, m := range ms {
			byID[m.ID] = m
		}
		for _, id := range kept {
			if _, ok := byID[id]; !ok {
				return nil, fmt.Errorf("%s not registered", id)
			}
		}
		acks, err := store.Acks(ctx)
		if err != nil {
			return nil, err
		}
		if a, r := acks["router-1"], byID["router-1"]; a.Lease != r.Incarnation {
			return nil, fmt.Errorf("router-1 acknowledged on lease %x, its incarnation is %x", a.Lease, r.Incarnation)
		}
		return byID, nil
	}
	var before map[string]cluster.Member
	testserver.Eventually(t, time.Minute, func() (err error) {
		before, err = current()
		return err
	})
	for _, id := range kept {
		if _, err := cli.Revoke(ctx, clientv3.LeaseID(before[id].Incarnation)); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Eventually(t, time.Minute, func() error {
		after, err := current()
		if err != nil {
			return err
		}
		for _, id := range kept {
			if after[id].Incarnation == before[id].Incarnation {
				return fmt.Errorf("%s still has incarnation %x", id, before[id].Incarnation)
			}
		}
		return nil
	})
}
