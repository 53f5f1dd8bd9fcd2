package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

const prefix = "clickagg"

func equalMinutes(a, b map[int64][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}

func mustLoad(t *testing.T, st *snapshot.Store, p int) snapshot.Loaded {
	t.Helper()
	l, err := st.Load(context.Background(), p)
	if err != nil {
		t.Fatalf("load %d: %v", p, err)
	}
	return l
}

func checkLoaded(t *testing.T, got snapshot.Loaded, meta string, minutes map[int64][]byte, epoch uint64) {
	t.Helper()
	if string(got.Meta) != meta {
		t.Errorf("meta = %q, want %q", got.Meta, meta)
	}
	if !equalMinutes(got.Minutes, minutes) {
		t.Errorf("minutes = %s, want %s", describe(got.Minutes), describe(minutes))
	}
	if got.Epoch != epoch {
		t.Errorf("epoch = %d, want %d", got.Epoch, epoch)
	}
}

// describe lists minutes in order, with short values quoted and long ones
// by length.
func describe(ms map[int64][]byte) string {
	var b strings.Builder
	for _, m := range slices.Sorted(maps.Keys(ms)) {
		if v := ms[m]; len(v) <= 16 {
			fmt.Fprintf(&b, "%d=%q ", m, v)
		} else {
			fmt.Fprintf(&b, "%d=<%d bytes> ", m, len(v))
		}
	}
	return "[" + strings.TrimSpace(b.String()) + "]"
}

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

func TestSaveLoadRoundTrip(t *testing.T) { testSaveLoadRoundTrip(t, testserver.RedisClient(t)) }

func testSaveLoadRoundTrip(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	st := snapshot.New(rdb, prefix)

	if _, err := st.Load(ctx, 1); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("load before save = %v, want ErrNotFound", err)
	}

	minutes := map[int64][]byte{
		29000000: []byte("first"),
		29000001: {0, 1, 2, 0xff}, // binary-safe
		29000002: {},              // an encoded empty MinuteState is empty
	}
	if err := st.Save(ctx, 1, snapshot.Write{Epoch: 3, Meta: []byte("meta-1"), Minutes: minutes}); err != nil {
		t.Fatalf("save: %v", err)
	}
	loaded := mustLoad(t, st, 1)
	checkLoaded(t, loaded, "meta-1", minutes, 3)
	for m, want := range minutes {
		got, ok := loaded.Minutes[m]
		if !ok {
			t.Fatalf("minute %d not loaded", m)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("minute %d = %q, want %q", m, got, want)
		}
	}
	if got, ok := loaded.Minutes[29000003]; ok {
		t.Errorf("a minute never saved is loaded as %q", got)
	}

	// Partitions are separate, and the keys are the documented ones.
	if _, err := st.Load(ctx, 2); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("load of another partition = %v, want ErrNotFound", err)
	}
	if got, err := rdb.Get(ctx, "clickagg:{p1}:epoch").Result(); err != nil || got != "3" {
		t.Errorf("fence key = %q, %v; want \"3\"", got, err)
	}
	if got, err := rdb.HGet(ctx, "clickagg:{p1}:snap", "m:29000000").Result(); err != nil || got != "first" {
		t.Errorf("minute field = %q, %v; want \"first\"", got, err)
	}

	// An empty meta is still a snapshot (an all-default SnapshotMeta
	// encodes to zero bytes).
	if err := st.Save(ctx, 2, snapshot.Write{Epoch: 1}); err != nil {
		t.Fatalf("save: %v", err)
	}
	checkLoaded(t, mustLoad(t, st, 2), "", map[int64][]byte{}, 1)
}

func TestIncrementalSave(t *testing.T) {
	ctx := context.Background()
	st := snapshot.New(testserver.RedisClient(t), prefix)
	want := map[int64][]byte{}
	first := map[int64][]byte{}
	for m := range int64(5) {
		first[100+m] = fmt.Appendf(nil, "v1-%d", m)
	}
	if err := st.Save(ctx, 0, snapshot.Write{Epoch: 1, Meta: []byte("m1"), Minutes: first}); err != nil {
		t.Fatalf("save: %v", err)
	}
	maps.Copy(want, first)

	second := snapshot.Write{
		Epoch:   1,
		Meta:    []byte("m2"),
		Minutes: map[int64][]byte{102: []byte("v2-2"), 105: []byte("v2-5")},
		Drop:    []int64{100, 999}, // 999 was never stored: dropping it is a no-op
	}
	if err := st.Save(ctx, 0, second); err != nil {
		t.Fatalf("save: %v", err)
	}
	maps.Copy(want, second.Minutes)
	for _, m := range second.Drop {
		delete(want, m)
	}
	checkLoaded(t, mustLoad(t, st, 0), "m2", want, 1)
}

// TestLateParts checks that a late part is stored beside its minute and
// replaces the previous one, that writing the minute whole deletes it, and
// that dropping the minute deletes both.
func TestLateParts(t *testing.T) {
	ctx := context.Background()
	st := snapshot.New(testserver.RedisClient(t), prefix)
	minutes := map[int64][]byte{100: []byte("whole-100"), 101: []byte("whole-101"), 102: []byte("whole-102")}
	save := func(w snapshot.Write) {
		t.Helper()
		w.Epoch = 1
		if err := st.Save(ctx, 0, w); err != nil {
			t.Fatalf("save: %v", err)
		}
	}
	check := func(meta string, late map[int64][]byte) {
		t.Helper()
		l := mustLoad(t, st, 0)
		checkLoaded(t, l, meta, minutes, 1)
		if !equalMinutes(l.Late, late) {
			t.Errorf("late parts = %s, want %s", describe(l.Late), describe(late))
		}
	}
	save(snapshot.Write{Meta: []byte("m1"), Minutes: maps.Clone(minutes)})
	check("m1", map[int64][]byte{})
	save(snapshot.Write{Meta: []byte("m2"), Late: map[int64][]byte{100: []byte("late-100a"), 101: []byte("late-101a")}})
	check("m2", map[int64][]byte{100: []byte("late-100a"), 101: []byte("late-101a")})
	save(snapshot.Write{Meta: []byte("m3"), Late: map[int64][]byte{100: []byte("late-100b")}})
	check("m3", map[int64][]byte{100: []byte("late-100b"), 101: []byte("late-101a")})
	minutes[101] = []byte("whole-101b")
	save(snapshot.Write{Meta: []byte("m4"), Minutes: map[int64][]byte{101: minutes[101]}, Late: map[int64][]byte{102: []byte("late-102a")}})
	check("m4", map[int64][]byte{100: []byte("late-100b"), 102: []byte("late-102a")})
	delete(minutes, 100)
	delete(minutes, 102)
	save(snapshot.Write{Meta: []byte("m5"), Drop: []int64{100, 102}})
	check("m5", map[int64][]byte{})
}

func TestFencing(t *testing.T) { testFencing(t, testserver.RedisClient(t)) }

func testFencing(t *testing.T, rdb redis.UniversalClient) {
	ctx := context.Background()
	st := snapshot.New(rdb, prefix)
	log := partlog.New(rdb, prefix)
	const p = 3
	ids, err := log.Append(ctx, []partlog.Append{{Partition: p, Data: []byte("a")}, {Partition: p, Data: []byte("b")}, {Partition: p, Data: []byte("c")}})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 4, Meta: []byte("old"), Minutes: map[int64][]byte{1: []byte("x"), 2: []byte("y")}}); err != nil {
		t.Fatalf("save at epoch 4: %v", err)
	}
	if err := st.Claim(ctx, p, 5); err != nil {
		t.Fatalf("claim 5: %v", err)
	}

	keys := []string{"clickagg:{p3}:snap", "clickagg:{p3}:epoch", partlog.Key(prefix, p)}
	before := dump(t, rdb, keys...)
	err = st.Save(ctx, p, snapshot.Write{
		Epoch: 4, Meta: []byte("stale"),
		Minutes:       map[int64][]byte{1: []byte("stale"), 3: []byte("stale")},
		Late:          map[int64][]byte{4: []byte("stale")},
		Drop:          []int64{2},
		TrimLogBefore: ids[2],
	})
	if !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("save at epoch 4 after claim 5 = %v, want ErrStaleEpoch", err)
	}
	if after := dump(t, rdb, keys...); !maps.Equal(before, after) {
		t.Fatalf("a refused save changed the stored data")
	}
	checkLoaded(t, mustLoad(t, st, p), "old", map[int64][]byte{1: []byte("x"), 2: []byte("y")}, 5)

	if err := st.Save(ctx, p, snapshot.Write{Epoch: 5, Meta: []byte("new"), Minutes: map[int64][]byte{1: []byte("z")}}); err != nil {
		t.Fatalf("save at epoch 5: %v", err)
	}
	checkLoaded(t, mustLoad(t, st, p), "new", map[int64][]byte{1: []byte("z"), 2: []byte("y")}, 5)

	for _, tc := range []struct {
		epoch uint64
		want  error
	}{
		{4, snapshot.ErrStaleEpoch},
		{0, snapshot.ErrStaleEpoch},
		{5, nil}, // the same owner again
		{7, nil},
		{6, snapshot.ErrStaleEpoch},
	} {
		if err := st.Claim(ctx, p, tc.epoch); !errors.Is(err, tc.want) {
			t.Fatalf("claim %d = %v, want %v", tc.epoch, err, tc.want)
		}
	}
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 5, Meta: []byte("late")}); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("save at epoch 5 after claim 7 = %v, want ErrStaleEpoch", err)
	}
	checkLoaded(t, mustLoad(t, st, p), "new", map[int64][]byte{1: []byte("z"), 2: []byte("y")}, 7)

	// Saving at a higher epoch than the fence raises it, as a claim would.
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 9, Meta: []byte("nine")}); err != nil {
		t.Fatalf("save at epoch 9: %v", err)
	}
	if err := st.Claim(ctx, p, 8); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("claim 8 after save at 9 = %v, want ErrStaleEpoch", err)
	}
}

// TestFencingBeyondFloatPrecision uses epochs that a Lua number (a double)
// cannot tell apart, so it fails if the scripts compare epochs as numbers.
func TestFencingBeyondFloatPrecision(t *testing.T) {
	ctx := context.Background()
	st := snapshot.New(testserver.RedisClient(t), prefix)
	const high = uint64(1)<<60 + 1
	if err := st.Claim(ctx, 0, high); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if err := st.Save(ctx, 0, snapshot.Write{Epoch: high - 1, Meta: []byte("x")}); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("save at %d after claim %d = %v, want ErrStaleEpoch", high-1, high, err)
	}
	if err := st.Claim(ctx, 0, 99); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("claim 99 after claim %d = %v, want ErrStaleEpoch", high, err)
	}
	if err := st.Save(ctx, 0, snapshot.Write{Epoch: ^uint64(0), Meta: []byte("max")}); err != nil {
		t.Fatalf("save at max epoch: %v", err)
	}
	checkLoaded(t, mustLoad(t, st, 0), "max", map[int64][]byte{}, ^uint64(0))
}

// TestConcurrentWriters runs an old owner that keeps saving while a new owner
// claims and saves: once the claim has returned, no save of the old owner may
// succeed, and the final state is the new owner's last save.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	st := snapshot.New(testserver.RedisClient(t), prefix)
	const p = 7

	var claimed atomic.Bool
	var oldSaved atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Go(func() {
		refusedAfterClaim := 0
		for i := 0; refusedAfterClaim < 20; i++ {
			wasClaimed := claimed.Load()
			v := fmt.Appendf(nil, "old-%d", i)
			err := st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: v, Minutes: map[int64][]byte{10: v}})
			switch {
			case err == nil && wasClaimed:
				errs <- fmt.Errorf("old owner's save %d succeeded after the new owner's claim returned", i)
				return
			case err == nil:
				oldSaved.Add(1)
			case errors.Is(err, snapshot.ErrStaleEpoch):
				if wasClaimed {
					refusedAfterClaim++
				}
			default:
				errs <- err
				return
			}
		}
	})
	testserver.Eventually(t, 20*time.Second, func() error {
		if n := oldSaved.Load(); n < 5 {
			return fmt.Errorf("old owner saved %d times", n)
		}
		return nil
	})
	if err := st.Claim(ctx, p, 2); err != nil {
		t.Fatalf("claim: %v", err)
	}
	claimed.Store(true)
	const newSaves = 30
	wg.Go(func() {
		for i := range newSaves {
			v := fmt.Appendf(nil, "new-%d", i)
			if err := st.Save(ctx, p, snapshot.Write{Epoch: 2, Meta: v, Minutes: map[int64][]byte{10: v}}); err != nil {
				errs <- fmt.Errorf("new owner's save %d: %w", i, err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	last := fmt.Sprintf("new-%d", newSaves-1)
	checkLoaded(t, mustLoad(t, st, p), last, map[int64][]byte{10: []byte(last)}, 2)
}

func TestTrimLogBefore(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	st := snapshot.New(rdb, prefix)
	log := partlog.New(rdb, prefix)
	const p = 2
	ids := appendEntries(t, log, p, 10)
	// Another partition's log must not be touched.
	otherIDs, err := log.Append(ctx, []partlog.Append{{Partition: p + 1, Data: []byte("o")}})
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	remaining := func(p int) []string { return logIDs(t, log, p) }
	equal := func(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

	if err := st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("m"), TrimLogBefore: ids[4]}); err != nil {
		t.Fatalf("save: %v", err)
	}
	if got := remaining(p); !equal(got, ids[4:]) {
		t.Fatalf("log after trim before entry 4 = %v, want %v", got, ids[4:])
	}
	if got := remaining(p + 1); !equal(got, otherIDs) {
		t.Fatalf("other partition's log = %v, want %v", got, otherIDs)
	}

	// A refused save trims nothing.
	if err := st.Claim(ctx, p, 2); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("m"), TrimLogBefore: ids[8]}); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("stale save = %v, want ErrStaleEpoch", err)
	}
	if got := remaining(p); !equal(got, ids[4:]) {
		t.Fatalf("log after refused save = %v, want %v", got, ids[4:])
	}

	// Without TrimLogBefore nothing is trimmed either.
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 2, Meta: []byte("m")}); err != nil {
		t.Fatalf("save: %v", err)
	}
	if got := remaining(p); !equal(got, ids[4:]) {
		t.Fatalf("log after save without trim = %v, want %v", got, ids[4:])
	}
}

func TestSaveRejectsInvalidWrites(t *testing.T) {
	ctx := context.Background()
	st := snapshot.New(testserver.RedisClient(t), prefix)
	for _, tc := range []struct {
		name string
		w    snapshot.Write
	}{
		{"minute changed and dropped", snapshot.Write{Epoch: 1, Meta: []byte("m"), Minutes: map[int64][]byte{5: []byte("x")}, Drop: []int64{5}}},
		{"late part and dropped", snapshot.Write{Epoch: 1, Meta: []byte("m"), Late: map[int64][]byte{5: []byte("x")}, Drop: []int64{5}}},
		{"minute whole and late part", snapshot.Write{Epoch: 1, Meta: []byte("m"), Minutes: map[int64][]byte{5: []byte("x")}, Late: map[int64][]byte{5: []byte("y")}}},
		{"trim ID not a stream ID", snapshot.Write{Epoch: 1, Meta: []byte("m"), TrimLogBefore: "12-x"}},
		{"trim ID negative", snapshot.Write{Epoch: 1, Meta: []byte("m"), TrimLogBefore: "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := st.Save(ctx, 0, tc.w)
			if err == nil || errors.Is(err, snapshot.ErrStaleEpoch) {
				t.Fatalf("save = %v, want a validation error", err)
			}
			if _, err := st.Load(ctx, 0); !errors.Is(err, snapshot.ErrNotFound) {
				t.Fatalf("load after invalid save = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestLargeSnapshot saves more minutes than Lua's unpack could take in one
// call, with about 12 MB of minute data, and drops more minutes than that.
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
	checkLoaded(t, mustLoad(t, st, 0), "big", minutes, 1)

	var drop []int64
	for m := range int64(9000) {
		drop = append(drop, 29000000+m)
	}
	if err := st.Save(ctx, 0, snapshot.Write{Epoch: 1, Meta: []byte("empty"), Drop: drop}); err != nil {
		t.Fatalf("save: %v", err)
	}
	checkLoaded(t, mustLoad(t, st, 0), "empty", map[int64][]byte{}, 1)
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
	checkLoaded(t, mustLoad(t, st, 4), "durable", minutes, 6)
	if err := st.Save(ctx, 4, snapshot.Write{Epoch: 5, Meta: []byte("stale")}); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("save below the fence after restart = %v, want ErrStaleEpoch", err)
	}
	if err := st.Save(ctx, 4, snapshot.Write{Epoch: 6, Meta: []byte("again"), Minutes: map[int64][]byte{3: []byte("three")}}); err != nil {
		t.Fatalf("save after restart: %v", err)
	}
	minutes[3] = []byte("three")
	checkLoaded(t, mustLoad(t, st, 4), "again", minutes, 6)
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
	ids := appendEntries(t, log, p, 10)
	remaining := func() []string { return logIDs(t, log, p) }
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

// appendEntries appends n one-byte entries to partition p's log and returns
// their IDs.
func appendEntries(t *testing.T, log *partlog.Log, p, n int) []string {
	t.Helper()
	var items []partlog.Append
	for i := range n {
		items = append(items, partlog.Append{Partition: p, Data: []byte{byte(i)}})
	}
	ids, err := log.Append(context.Background(), items)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return ids
}

// logIDs returns the IDs of the entries in partition p's log.
func logIDs(t *testing.T, log *partlog.Log, p int) []string {
	t.Helper()
	got, err := log.Range(context.Background(), p, "", 1000)
	if err != nil {
		t.Fatalf("range: %v", err)
	}
	var out []string
	for _, e := range got {
		out = append(out, e.ID)
	}
	return out
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
// partitions, so they share the cluster.
func TestOnCluster(t *testing.T) {
	rdb := testserver.RedisClusterClient(t)
	for _, tc := range []struct {
		name string
		run  func(*testing.T, redis.UniversalClient)
	}{
		{"save and load", testSaveLoadRoundTrip},
		{"fencing", testFencing},
		{"trim keeps unarchived", testTrimKeepsUnarchived},
		{"history mark", testHistoryMark},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, rdb) })
	}
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
	const p = 7
	fence := "clickagg:{p7}:epoch"
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
	checkLoaded(t, mustLoad(t, st, p), "m", map[int64][]byte{1: []byte("x")}, 1)
}
