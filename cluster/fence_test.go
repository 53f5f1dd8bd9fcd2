package cluster

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/testserver"
)

// TestFence: a transaction of another writer conditioned on Fence succeeds
// while the leadership holds, and fails once it resigned, also after the
// same candidate was elected again (a new term has a new fence).
func TestFence(t *testing.T) {
	etcd := testserver.EtcdClient(t)
	c := NewClient(etcd, "/t")
	ctx := ctxT(t)
	put := func(fence clientv3.Cmp, v string) bool {
		t.Helper()
		resp, err := etcd.Txn(ctx).If(fence).Then(clientv3.OpPut("/t/other", v)).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Succeeded
	}
	l := campaign(t, c, "coord")
	if !put(l.Fence(), "1") {
		t.Fatal("write fenced by a current leadership refused")
	}
	if err := l.Resign(context.Background()); err != nil {
		t.Fatal(err)
	}
	if put(l.Fence(), "2") {
		t.Fatal("write fenced by a resigned leadership accepted")
	}
	l2 := campaign(t, c, "coord")
	if put(l.Fence(), "3") || !put(l2.Fence(), "4") {
		t.Fatal("the old term's fence holds in the new term, or the new one does not")
	}
	resp, err := etcd.Get(ctx, "/t/other")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "4" {
		t.Fatalf("value %v, %v; want the writes of current leaderships only", resp, err)
	}
}
