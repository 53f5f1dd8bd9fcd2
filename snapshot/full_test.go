package snapshot_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/snapshot/snapshottest"
	"github.com/clickagg/clickagg/testserver"
)

// TestSaveWhenRedisFull runs saves against a real Redis at its maxmemory
// under noeviction, as when ingest fills it: a snapshot is stored whole or
// not at all, never half, so the previous one stays loadable.
//
// Redis 7 decides once per script: when memory is over maxmemory as the
// script starts, a write that may grow memory fails with OOM and aborts
// the script only while the script has written nothing; once it has
// written, its later writes are never refused. In saveScript the first
// write is the fence's SET or a minute's HSET, both refused, so a save over
// maxmemory changes no key, byte for byte, and trims nothing; a save that
// only drops minutes starts with an HDEL, which cannot grow memory, and is
// stored whole. The snapshot loads meanwhile (no MULTI, which Redis
// refuses when full), and a new owner can raise the fence (the claim
// script is allow-oom).
func TestSaveWhenRedisFull(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	st := snapshot.New(rdb, prefix)
	plog := partlog.New(rdb, prefix)
	const p = 3
	ids := snapshottest.AppendEntries(t, plog, p, 10)
	keys := []string{"clickagg:{p3}:epoch", "clickagg:{p3}:snap", partlog.Key(prefix, p)}
	first := snapshot.Write{
		Epoch:         1,
		Meta:          []byte("m1"),
		Minutes:       map[int64][]byte{100: []byte("a"), 101: []byte("b"), 102: []byte("c")},
		TrimLogBefore: ids[2],
	}
	if err := st.Save(ctx, p, first); err != nil {
		t.Fatal(err)
	}
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("m1"), Late: map[int64][]byte{101: []byte("b-late")}}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, rdb, keys...)
	loaded := snapshottest.MustLoad(t, st, p)

	setMaxmemory := func(v string) {
		t.Helper()
		if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.ConfigSet(ctx, "maxmemory", v).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Far below what Redis uses: every write that may grow memory is
	// refused.
	setMaxmemory("1")
	for _, tc := range []struct {
		name string
		w    snapshot.Write
	}{
		{"minutes, late parts, drops and a trim", snapshot.Write{
			Epoch: 1, Meta: []byte("m2"),
			Minutes:       map[int64][]byte{101: []byte("b2"), 103: []byte("d")},
			Late:          map[int64][]byte{102: []byte("c-late")},
			Drop:          []int64{100},
			TrimLogBefore: ids[8],
		}},
		{"a newer epoch, which raises the fence first", snapshot.Write{
			Epoch: 2, Meta: []byte("m2"), Minutes: map[int64][]byte{103: []byte("d")}, TrimLogBefore: ids[8],
		}},
		{"only the meta", snapshot.Write{Epoch: 1, Meta: []byte("m2")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := st.Save(ctx, p, tc.w)
			if !redis.IsOOMError(err) {
				t.Fatalf("save over maxmemory: %v, want an OOM error", err)
			}
			if after := dump(t, rdb, keys...); !maps.Equal(after, before) {
				t.Fatalf("a save refused for memory changed keys: %s", changed(before, after))
			}
			got := snapshottest.MustLoad(t, st, p)
			snapshottest.CheckLoaded(t, got, "m1", loaded.Minutes, 1)
			if !maps.EqualFunc(got.Late, loaded.Late, bytes.Equal) {
				t.Errorf("late parts = %s, want %s", snapshottest.Describe(got.Late), snapshottest.Describe(loaded.Late))
			}
		})
	}
	if t.Failed() {
		t.FailNow()
	}

	// Only drops: stored whole.
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("m2"), Drop: []int64{100}, TrimLogBefore: ids[4]}); err != nil {
		t.Fatalf("save of drops only over maxmemory: %v", err)
	}
	snapshottest.CheckLoaded(t, snapshottest.MustLoad(t, st, p), "m2", map[int64][]byte{101: []byte("b"), 102: []byte("c")}, 1)
	if got := snapshottest.LogIDs(t, plog, p); fmt.Sprint(got) != fmt.Sprint(ids[4:]) {
		t.Fatalf("log after the save = %v, want %v", got, ids[4:])
	}
	// A new owner takes the partition.
	if err := st.Claim(ctx, p, 2); err != nil {
		t.Fatalf("claim over maxmemory: %v", err)
	}
	if got := snapshottest.MustLoad(t, st, p); got.Epoch != 2 {
		t.Fatalf("fence after the claim = %d, want 2", got.Epoch)
	}

	// Memory raised: the refused save goes in whole.
	setMaxmemory("0")
	retry := snapshot.Write{
		Epoch: 2, Meta: []byte("m3"),
		Minutes:       map[int64][]byte{101: []byte("b2"), 103: []byte("d")},
		Late:          map[int64][]byte{102: []byte("c-late")},
		TrimLogBefore: ids[8],
	}
	if err := st.Save(ctx, p, retry); err != nil {
		t.Fatalf("save once maxmemory is raised: %v", err)
	}
	got := snapshottest.MustLoad(t, st, p)
	snapshottest.CheckLoaded(t, got, "m3", map[int64][]byte{101: []byte("b2"), 102: []byte("c"), 103: []byte("d")}, 2)
	if want := map[int64][]byte{102: []byte("c-late")}; !maps.EqualFunc(got.Late, want, bytes.Equal) {
		t.Errorf("late parts = %s, want %s", snapshottest.Describe(got.Late), snapshottest.Describe(want))
	}
	if got := snapshottest.LogIDs(t, plog, p); fmt.Sprint(got) != fmt.Sprint(ids[8:]) {
		t.Fatalf("log after the save = %v, want %v", got, ids[8:])
	}
}

// changed names the keys whose dumps differ.
func changed(before, after map[string]string) string {
	var out []string
	for k, v := range before {
		if after[k] != v {
			out = append(out, k)
		}
	}
	return strings.Join(out, ", ")
}
