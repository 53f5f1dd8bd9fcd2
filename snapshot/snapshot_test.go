package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/snapshot/snapshottest"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

// The suite's Store is the aggregator's: a method the aggregator starts to
// use does not compile here until the suite covers it.
var _ aggregator.SnapshotStore = snapshottest.Store(nil)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

const prefix = "clickagg"

// dump returns the serialized value of each key (DUMP), so a test can prove
// that a refused write left them identical byte for byte.
func dump(t *testing.T, rdb redis.UniversalClient, keys ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range keys {
		v, err := rdb.Dump(context.Background(), k).Result()
		if errors.Is(err, redis.Nil) {
			v = "<missing>"
		} else if err != nil {
			t.Fatalf("dump %s: %v", k, err)
		}
		out[k] = v
	}
	return out
}

// TestContractRedis runs the contract suite on one redis-server.
func TestContractRedis(t *testing.T) {
	rdb := testserver.RedisClient(t)
	runContract(t, rdb)
}

// runContract runs the contract suite on rdb, each fixture under a prefix
// of its own.
func runContract(t *testing.T, rdb redis.UniversalClient) {
	n := 0
	snapshottest.Run(t, func(t *testing.T) snapshottest.Fixture {
		n++
		prefix := fmt.Sprintf("contract%d", n)
		return snapshottest.Fixture{Store: snapshot.New(rdb, prefix), Log: partlog.New(rdb, prefix)}
	})
}

// TestLayout pins the documented keys of a saved snapshot.
func TestLayout(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	st := snapshot.New(rdb, prefix)
	if err := st.Save(ctx, 1, snapshot.Write{Epoch: 3, Meta: []byte("meta-1"), Minutes: map[int64][]byte{29000000: []byte("first")}}); err != nil {
		t.Fatalf("save: %v", err)
	}
	if got, err := rdb.Get(ctx, "clickagg:{p1}:epoch").Result(); err != nil || got != "3" {
		t.Errorf("fence key = %q, %v; want \"3\"", got, err)
	}
	if got, err := rdb.HGet(ctx, "clickagg:{p1}:snap", "m:29000000").Result(); err != nil || got != "first" {
		t.Errorf("minute field = %q, %v; want \"first\"", got, err)
	}
	if got, err := rdb.HGet(ctx, "clickagg:{p1}:snap", "meta").Result(); err != nil || got != "meta-1" {
		t.Errorf("meta field = %q, %v; want \"meta-1\"", got, err)
	}
}

func TestLargeSnapshot(t *testing.T) {
	ctx := context.Background()
	st := snapshot.New(testserver.RedisClient(t), prefix)
	rng := rand.New(rand.NewPCG(1, 2))
	minutes := map[int64][]byte{}
	for m := range int64(3000) {
		v := make([]byte, 4096)
		for i := range v {
			v[i] = byte(rng.Uint32())
		}
		minutes[29000000+m] = v
	}
	if err := st.Save(ctx, 0, snapshot.Write{Epoch: 1, Meta: []byte("big"), Minutes: minutes}); err != nil {
		t.Fatalf("save: %v", err)
	}
	snapshottest.CheckLoaded(t, snapshottest.MustLoad(t, st, 0), "big", minutes, 1)

	var drop []int64
	for m := range int64(9000) {
		drop = append(drop, 29000000+m)
	}
	if err := st.Save(ctx, 0, snapshot.Write{Epoch: 1, Meta: []byte("empty"), Drop: drop}); err != nil {
		t.Fatalf("save: %v", err)
	}
	snapshottest.CheckLoaded(t, snapshottest.MustLoad(t, st, 0), "empty", map[int64][]byte{}, 1)
}

func TestSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	start := func() (*localserver.Redis, *redis.Client) {
		t.Helper()
		srv, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: dir, AppendFsync: "always"})
		if err != nil {
			t.Fatalf("start redis: %v", err)
		}
		t.Cleanup(func() { _ = srv.Stop() })
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password})
		t.Cleanup(func() { _ = rdb.Close() })
		return srv, rdb
	}

	srv, rdb := start()
	st := snapshot.New(rdb, prefix)
	minutes := map[int64][]byte{1: []byte("one"), 2: {0, 2}}
	if err := st.Claim(ctx, 4, 6); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if err := st.Save(ctx, 4, snapshot.Write{Epoch: 6, Meta: []byte("durable"), Minutes: minutes}); err != nil {
		t.Fatalf("save: %v", err)
	}
	if err := rdb.Close(); err != nil {
		t.Fatalf("close client: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop redis: %v", err)
	}

	// The restarted server has an empty script cache, so this also covers
	// the EVALSHA → EVAL fallback.
	_, rdb = start()
	st = snapshot.New(rdb, prefix)
	snapshottest.CheckLoaded(t, snapshottest.MustLoad(t, st, 4), "durable", minutes, 6)
	if err := st.Save(ctx, 4, snapshot.Write{Epoch: 5, Meta: []byte("stale")}); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("save below the fence after restart = %v, want ErrStaleEpoch", err)
	}
	if err := st.Save(ctx, 4, snapshot.Write{Epoch: 6, Meta: []byte("again"), Minutes: map[int64][]byte{3: []byte("three")}}); err != nil {
		t.Fatalf("save after restart: %v", err)
	}
	minutes[3] = []byte("three")
	snapshottest.CheckLoaded(t, snapshottest.MustLoad(t, st, 4), "again", minutes, 6)
}

// TestTrimKeepsUnarchived checks that a save with KeepUnarchived trims the
// log no lower than the archived offset (nothing while there is none), and
// that the archived offset is fenced and only moves forward.
func TestTrimKeepsUnarchived(t *testing.T) { testTrimKeepsUnarchived(t, testserver.RedisClient(t)) }

func testTrimKeepsUnarchived(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	st := snapshot.New(rdb, prefix)
	log := partlog.New(rdb, prefix)
	const p = 5
	ids := snapshottest.AppendEntries(t, log, p, 10)
	remaining := func() []string { return snapshottest.LogIDs(t, log, p) }
	save := func(epoch uint64, trim string) error {
		return st.Save(ctx, p, snapshot.Write{Epoch: epoch, Meta: []byte("m"), TrimLogBefore: trim, KeepUnarchived: true})
	}
	if err := st.Claim(ctx, p, 3); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Archived(ctx, p); err != nil || got != "" {
		t.Fatalf("archived offset before any = %q, %v", got, err)
	}
	if err := save(3, ids[6]); err != nil {
		t.Fatal(err)
	}
	if got := remaining(); !slices.Equal(got, ids) {
		t.Fatalf("nothing archived, yet the log was trimmed to %v", got)
	}
	if err := st.SaveArchived(ctx, p, 3, ids[2]); err != nil {
		t.Fatal(err)
	}
	if err := save(3, ids[6]); err != nil {
		t.Fatal(err)
	}
	if got := remaining(); !slices.Equal(got, ids[2:]) {
		t.Fatalf("archived to entry 2, snapshot at 6: log %v, want %v", got, ids[2:])
	}
	if err := st.SaveArchived(ctx, p, 3, ids[8]); err != nil {
		t.Fatal(err)
	}
	if err := save(3, ids[6]); err != nil {
		t.Fatal(err)
	}
	if got := remaining(); !slices.Equal(got, ids[6:]) {
		t.Fatalf("archived to entry 8, snapshot at 6: log %v, want %v", got, ids[6:])
	}
	// Backwards: accepted, changes nothing.
	if err := st.SaveArchived(ctx, p, 3, ids[1]); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Archived(ctx, p); got != ids[8] {
		t.Fatalf("archived offset moved back to %s", got)
	}
	// A deposed owner cannot move it.
	if err := st.SaveArchived(ctx, p, 2, ids[9]); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("stale SaveArchived = %v, want ErrStaleEpoch", err)
	}
	if got, _ := st.Archived(ctx, p); got != ids[8] {
		t.Fatalf("stale owner moved the archived offset to %s", got)
	}
	if err := st.SaveArchived(ctx, p, 3, "nope"); err == nil {
		t.Fatal("SaveArchived accepted an invalid ID")
	}
}

// TestHistoryMark: the history mark (an end minute) is fenced and only
// moves forward.
func TestHistoryMark(t *testing.T) { testHistoryMark(t, testserver.RedisClient(t)) }

func testHistoryMark(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	st := snapshot.New(rdb, prefix)
	const p = 6
	if _, ok, err := st.History(ctx, p); ok || err != nil {
		t.Fatalf("mark before any: %v %v", ok, err)
	}
	if err := st.Claim(ctx, p, 4); err != nil {
		t.Fatal(err)
	}
	for _, h := range []int64{9, 499_999, 500_000, 12} {
		if err := st.SaveHistory(ctx, p, 4, min(h, 9), h); err != nil {
			t.Fatal(err)
		}
	}
	if h, ok, err := st.History(ctx, p); !ok || err != nil || h != 500_000 {
		t.Fatalf("mark = %d %v %v, want 500000", h, ok, err)
	}
	if s, ok, err := st.HistoryStart(ctx, p); !ok || err != nil || s != 9 {
		t.Fatalf("start = %d %v %v, want the first one saved, 9", s, ok, err)
	}
	if err := st.SaveHistory(ctx, p, 3, -1, 600_000); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("stale SaveHistory = %v", err)
	}
	if h, _, _ := st.History(ctx, p); h != 500_000 {
		t.Fatalf("a deposed owner moved the mark to %d", h)
	}
}

// TestOnCluster runs the store on a Redis Cluster of 3 primaries with a
// replica each: every script names only keys of its partition's hash
// slot, and Load's MULTI stays within it. The cases use different
// prefixes or partitions, so they share the cluster.
func TestOnCluster(t *testing.T) {
	rdb := testserver.RedisClusterClient(t)
	t.Run("contract", func(t *testing.T) { runContract(t, rdb) })
	t.Run("trim keeps unarchived", func(t *testing.T) { testTrimKeepsUnarchived(t, rdb) })
	t.Run("history mark", func(t *testing.T) { testHistoryMark(t, rdb) })
	t.Run("slot being migrated", func(t *testing.T) { testMigratingSlot(t, rdb) })
}

// testMigratingSlot saves a partition while its slot is being migrated
// to another primary and only its fence has moved yet, as happens for a
// moment to every slot that `redis-cli --cluster reshard` moves. Redis
// answers the save's script, over keys on both sides, with TRYAGAIN:
// the save fails with that error, never ErrStaleEpoch, writes nothing,
// and succeeds once the slot has moved. (go-redis follows the ASK and
// retries the TRYAGAIN a few times first; the aggregator retries a
// failed save at its next interval.)
func testMigratingSlot(t *testing.T, rdb *redis.ClusterClient) {
	ctx := context.Background()
	st := snapshot.New(rdb, prefix)
	const p = 11 // in a slot of its own: the contract uses partitions 0 to 7
	fence := "clickagg:{p11}:epoch"
	if err := st.Claim(ctx, p, 1); err != nil {
		t.Fatal(err)
	}
	src, err := rdb.MasterForKey(ctx, fence)
	if err != nil {
		t.Fatal(err)
	}
	var dst *redis.Client
	var nodes []*redis.Client
	var mu sync.Mutex
	if err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		nodes = append(nodes, m)
		if m.Options().Addr != src.Options().Addr && dst == nil {
			dst = m
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slot, err := rdb.ClusterKeySlot(ctx, fence).Result()
	if err != nil {
		t.Fatal(err)
	}
	srcID, dstID := src.ClusterMyID(ctx).Val(), dst.ClusterMyID(ctx).Val()
	must := func(c *redis.Client, args ...any) {
		t.Helper()
		if err := c.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%s %v: %v", c.Options().Addr, args, err)
		}
	}
	must(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID)
	must(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID)
	host, port, _ := net.SplitHostPort(dst.Options().Addr)
	must(src, "MIGRATE", host, port, "", 0, 5000, "AUTH", rdb.Options().Password, "KEYS", fence)

	err = st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("m"), Minutes: map[int64][]byte{1: []byte("x")}})
	if !redis.IsTryAgainError(err) || errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("save during the migration = %v, want TRYAGAIN", err)
	}
	// Only the fence is in the slot, on the primary it moved to.
	for c, want := range map[*redis.Client]int64{src: 0, dst: 1} {
		if n, err := c.ClusterCountKeysInSlot(ctx, int(slot)).Result(); err != nil || n != want {
			t.Fatalf("%s holds %d keys (%v) of the slot after a refused save, want %d", c.Options().Addr, n, err, want)
		}
	}

	for _, c := range append([]*redis.Client{dst, src}, nodes...) {
		must(c, "CLUSTER", "SETSLOT", slot, "NODE", dstID)
	}
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("m"), Minutes: map[int64][]byte{1: []byte("x")}}); err != nil {
		t.Fatalf("save after the migration: %v", err)
	}
	snapshottest.CheckLoaded(t, snapshottest.MustLoad(t, st, p), "m", map[int64][]byte{1: []byte("x")}, 1)
}
