package hotkey_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/hotkey"
)

func table(t *testing.T, version uint64, splits ...hotkey.Interval) *hotkey.Table {
	t.Helper()
	tab, err := hotkey.NewTable(version, splits, 8)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestStoreWriteIsFencedAndConditional(t *testing.T) {
	e := newEnv(t, 8, time.Now())
	ctx := ctxT(t)

	empty, rev, err := e.store.Load(ctx)
	if err != nil || empty.Version() != 0 || len(empty.Splits()) != 0 || rev != 0 {
		t.Fatalf("Load of a new cluster = %+v, %d, %v; want the empty table at revision 0", empty, rev, err)
	}
	fence, resign := leader(t, e.etcd, "c1")
	v1 := table(t, 1, hotkey.Interval{AdID: "a", Partitions: []int{1, 2}, FromMinute: 100, Members: []string{"m1", "m2"}})
	rev1, err := e.store.Write(ctx, fence, 0, v1)
	if err != nil {
		t.Fatalf("first write: %v", err)
	}
	got, rev, err := e.store.Load(ctx)
	if err != nil || rev != rev1 || got.Version() != 1 || !reflect.DeepEqual(got.Splits(), v1.Splits()) {
		t.Fatalf("Load = %+v at %d, %v; want %+v at %d", got.Splits(), rev, err, v1.Splits(), rev1)
	}

	// A writer that read before the first write conflicts.
	v2 := table(t, 2)
	if _, err := e.store.Write(ctx, fence, 0, v2); !errors.Is(err, hotkey.ErrConflict) {
		t.Fatalf("write at a stale revision: %v, want ErrConflict", err)
	}
	if _, err := e.store.Write(ctx, fence, rev1, v2); err != nil {
		t.Fatalf("write at the current revision: %v", err)
	}

	// A deposed leader writes nothing, even at the current revision.
	_, rev, _ = e.store.Load(ctx)
	resign()
	fence2, _ := leader(t, e.etcd, "c2")
	if _, err := e.store.Write(ctx, fence, rev, table(t, 3)); !errors.Is(err, hotkey.ErrFenced) {
		t.Fatalf("write of the deposed leader: %v, want ErrFenced", err)
	}
	if got, _, _ := e.store.Load(ctx); got.Version() != 2 {
		t.Fatalf("version %d after the deposed leader's write, want 2", got.Version())
	}
	if _, err := e.store.Write(ctx, fence2, rev, table(t, 3)); err != nil {
		t.Fatalf("write of the new leader: %v", err)
	}
}

func TestStoreRefusesMalformedTables(t *testing.T) {
	e := newEnv(t, 8, time.Now())
	ctx := ctxT(t)
	for _, v := range []string{
		`not json`,
		`{"version":1,"splits":[{"ad_id":"a","partitions":[1,8],"from_minute":5}]}`,
		`{"version":1,"splits":[{"ad_id":"a","partitions":[1,2],"from_minute":5},{"ad_id":"a","partitions":[3,4],"from_minute":6}]}`,
	} {
		if _, err := e.etcd.Put(ctx, etcdPrefix+"/splits", v); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.store.Load(ctx); !errors.Is(err, hotkey.ErrMalformed) {
			t.Errorf("Load of %s: %v, want ErrMalformed", v, err)
		}
	}
}

func TestStoreAcksLiveOnTheLease(t *testing.T) {
	e := newEnv(t, 8, time.Now())
	ctx := ctxT(t)
	lease, err := e.etcd.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.WriteAck(ctx, "r1", 7, lease.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.store.WriteAck(ctx, "bad/id", 7, lease.ID); !errors.Is(err, hotkey.ErrInvalid) {
		t.Fatalf("ack with a slash in the id: %v, want ErrInvalid", err)
	}
	acks, err := e.store.Acks(ctx)
	if want := map[string]hotkey.Ack{"r1": {Version: 7, Lease: int64(lease.ID)}}; err != nil || !reflect.DeepEqual(acks, want) {
		t.Fatalf("Acks = %v, %v; want %v", acks, err, want)
	}
	if _, err := e.etcd.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if acks, err := e.store.Acks(ctx); err != nil || len(acks) != 0 {
		t.Fatalf("Acks after the lease was revoked = %v, %v; want none", acks, err)
	}
	if err := e.store.WriteAck(ctx, "r1", 8, lease.ID); err == nil {
		t.Fatal("ack on a revoked lease succeeded")
	}
	if err := e.store.WriteAck(ctx, "r1", 8, clientv3.NoLease); err != nil {
		t.Fatal(err)
	}
}
