// Package snapshottest is the contract suite of the snapshot store: what
// the aggregator needs of it (Claim, Save, Load with fencing). Every
// implementation runs Run on its real backend (package snapshot on one
// Redis server and on a Redis Cluster).
package snapshottest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/testserver"
)

// Store is aggregator.SnapshotStore.
type Store interface {
	Claim(ctx context.Context, p int, epoch uint64) error
	Save(ctx context.Context, p int, w snapshot.Write) error
	Load(ctx context.Context, p int) (snapshot.Loaded, error)
}

// Log is the partition log that Write.TrimLogBefore trims.
type Log interface {
	Append(ctx context.Context, items []partlog.Append) ([]string, error)
	Read(ctx context.Context, after map[int]string, count int64, block time.Duration) (map[int][]partlog.Entry, error)
}

// Fixture is one implementation under test, empty: no snapshot, no
// fence, empty logs.
type Fixture struct {
	Store Store
	// Log is the partition log the store trims.
	Log Log
}

// Run runs the contract on fixtures from newFixture, one per subtest.
func Run(t *testing.T, newFixture func(t *testing.T) Fixture) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, f Fixture)
	}{
		{"save and load", testSaveLoad},
		{"incremental save", testIncrementalSave},
		{"late parts", testLateParts},
		{"fencing", testFencing},
		{"fencing beyond float precision", testFencingBeyondFloatPrecision},
		{"concurrent writers", testConcurrentWriters},
		{"trim log before", testTrimLogBefore},
		{"invalid writes", testInvalidWrites},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newFixture(t)) })
	}
}

// MustLoad loads p's snapshot and fails the test on an error.
func MustLoad(t *testing.T, st Store, p int) snapshot.Loaded {
	t.Helper()
	l, err := st.Load(context.Background(), p)
	if err != nil {
		t.Fatalf("load %d: %v", p, err)
	}
	return l
}

// CheckLoaded checks got's meta, whole minutes and epoch.
func CheckLoaded(t *testing.T, got snapshot.Loaded, meta string, minutes map[int64][]byte, epoch uint64) {
	t.Helper()
	if string(got.Meta) != meta {
		t.Errorf("meta = %q, want %q", got.Meta, meta)
	}
	if !maps.EqualFunc(got.Minutes, minutes, bytes.Equal) {
		t.Errorf("minutes = %s, want %s", Describe(got.Minutes), Describe(minutes))
	}
	if got.Epoch != epoch {
		t.Errorf("epoch = %d, want %d", got.Epoch, epoch)
	}
}

// Describe lists minutes in order, with short values quoted and long ones
// by length.
func Describe(ms map[int64][]byte) string {
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

func testSaveLoad(t *testing.T, f Fixture) {
	ctx := context.Background()
	st := f.Store
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
	loaded := MustLoad(t, st, 1)
	CheckLoaded(t, loaded, "meta-1", minutes, 3)
	if _, ok := loaded.Minutes[29000002]; !ok {
		t.Errorf("the empty minute is not loaded")
	}
	// Partitions are separate.
	if _, err := st.Load(ctx, 2); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("load of another partition = %v, want ErrNotFound", err)
	}
	// An empty meta is still a snapshot (an all-default SnapshotMeta
	// encodes to zero bytes).
	if err := st.Save(ctx, 2, snapshot.Write{Epoch: 1}); err != nil {
		t.Fatalf("save: %v", err)
	}
	CheckLoaded(t, MustLoad(t, st, 2), "", map[int64][]byte{}, 1)
}

func testIncrementalSave(t *testing.T, f Fixture) {
	ctx := context.Background()
	st := f.Store
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
	CheckLoaded(t, MustLoad(t, st, 0), "m2", want, 1)
}

// testLateParts: a late part is stored beside its minute and replaces the
// previous one, writing the minute whole deletes it, and dropping the
// minute deletes both.
func testLateParts(t *testing.T, f Fixture) {
	ctx := context.Background()
	st := f.Store
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
		l := MustLoad(t, st, 0)
		CheckLoaded(t, l, meta, minutes, 1)
		if !maps.EqualFunc(l.Late, late, bytes.Equal) {
			t.Errorf("late parts = %s, want %s", Describe(l.Late), Describe(late))
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

// LogIDs returns the IDs of the entries in partition p's log.
func LogIDs(t *testing.T, l Log, p int) []string {
	t.Helper()
	got, err := l.Read(context.Background(), map[int]string{p: "0"}, 0, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var out []string
	for _, e := range got[p] {
		out = append(out, e.ID)
	}
	return out
}

// AppendEntries appends n one-byte entries to partition p's log and
// returns their IDs.
func AppendEntries(t *testing.T, l Log, p, n int) []string {
	t.Helper()
	var items []partlog.Append
	for i := range n {
		items = append(items, partlog.Append{Partition: p, Data: []byte{byte(i)}})
	}
	ids, err := l.Append(context.Background(), items)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return ids
}

// testFencing: a claim refuses every later write of an older epoch, which
// then changes nothing (snapshot, late parts, log); the same epoch may
// claim again; a save at a higher epoch raises the fence.
func testFencing(t *testing.T, f Fixture) {
	ctx := context.Background()
	st := f.Store
	const p = 3
	ids := AppendEntries(t, f.Log, p, 3)
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 4, Meta: []byte("old"), Minutes: map[int64][]byte{1: []byte("x"), 2: []byte("y")}}); err != nil {
		t.Fatalf("save at epoch 4: %v", err)
	}
	if err := st.Claim(ctx, p, 5); err != nil {
		t.Fatalf("claim 5: %v", err)
	}
	err := st.Save(ctx, p, snapshot.Write{
		Epoch: 4, Meta: []byte("stale"),
		Minutes:       map[int64][]byte{1: []byte("stale"), 3: []byte("stale")},
		Late:          map[int64][]byte{4: []byte("stale")},
		Drop:          []int64{2},
		TrimLogBefore: ids[2],
	})
	if !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("save at epoch 4 after claim 5 = %v, want ErrStaleEpoch", err)
	}
	l := MustLoad(t, st, p)
	CheckLoaded(t, l, "old", map[int64][]byte{1: []byte("x"), 2: []byte("y")}, 5)
	if len(l.Late) != 0 {
		t.Errorf("a refused save stored late parts %s", Describe(l.Late))
	}
	if got := LogIDs(t, f.Log, p); !slices.Equal(got, ids) {
		t.Errorf("log after a refused save = %v, want %v", got, ids)
	}

	if err := st.Save(ctx, p, snapshot.Write{Epoch: 5, Meta: []byte("new"), Minutes: map[int64][]byte{1: []byte("z")}}); err != nil {
		t.Fatalf("save at epoch 5: %v", err)
	}
	CheckLoaded(t, MustLoad(t, st, p), "new", map[int64][]byte{1: []byte("z"), 2: []byte("y")}, 5)
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
	CheckLoaded(t, MustLoad(t, st, p), "new", map[int64][]byte{1: []byte("z"), 2: []byte("y")}, 7)
	// Saving at a higher epoch than the fence raises it, as a claim would.
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 9, Meta: []byte("nine")}); err != nil {
		t.Fatalf("save at epoch 9: %v", err)
	}
	if err := st.Claim(ctx, p, 8); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("claim 8 after save at 9 = %v, want ErrStaleEpoch", err)
	}
}

// testFencingBeyondFloatPrecision uses epochs that a double cannot tell
// apart, so it fails if epochs are compared as floating-point numbers
// (Lua's numbers).
func testFencingBeyondFloatPrecision(t *testing.T, f Fixture) {
	ctx := context.Background()
	st := f.Store
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
	CheckLoaded(t, MustLoad(t, st, 0), "max", map[int64][]byte{}, ^uint64(0))
}

// testConcurrentWriters runs an old owner that keeps saving while a new
// owner claims and saves: once the claim has returned, no save of the old
// owner may succeed, and the final state is the new owner's last save.
func testConcurrentWriters(t *testing.T, f Fixture) {
	ctx := context.Background()
	st := f.Store
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
	CheckLoaded(t, MustLoad(t, st, p), last, map[int64][]byte{10: []byte(last)}, 2)
}

// testTrimLogBefore: a save trims its partition's log below
// TrimLogBefore, and no other partition's; a refused save, or one without
// TrimLogBefore, trims nothing.
func testTrimLogBefore(t *testing.T, f Fixture) {
	ctx := context.Background()
	st := f.Store
	const p = 2
	ids := AppendEntries(t, f.Log, p, 10)
	otherIDs := AppendEntries(t, f.Log, p+1, 1)
	check := func(what string, p int, want []string) {
		t.Helper()
		if got := LogIDs(t, f.Log, p); !slices.Equal(got, want) {
			t.Fatalf("%s: log of partition %d = %v, want %v", what, p, got, want)
		}
	}
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("m"), TrimLogBefore: ids[4]}); err != nil {
		t.Fatalf("save: %v", err)
	}
	check("trim before entry 4", p, ids[4:])
	check("trim of another partition", p+1, otherIDs)
	if err := st.Claim(ctx, p, 2); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 1, Meta: []byte("m"), TrimLogBefore: ids[8]}); !errors.Is(err, snapshot.ErrStaleEpoch) {
		t.Fatalf("stale save = %v, want ErrStaleEpoch", err)
	}
	check("refused save", p, ids[4:])
	if err := st.Save(ctx, p, snapshot.Write{Epoch: 2, Meta: []byte("m")}); err != nil {
		t.Fatalf("save: %v", err)
	}
	check("save without trim", p, ids[4:])
}

// testInvalidWrites: a write that contradicts itself, or names no log
// entry to trim below, is refused (not as stale) and stores nothing.
func testInvalidWrites(t *testing.T, f Fixture) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		w    snapshot.Write
	}{
		{"minute changed and dropped", snapshot.Write{Epoch: 1, Meta: []byte("m"), Minutes: map[int64][]byte{5: []byte("x")}, Drop: []int64{5}}},
		{"late part and dropped", snapshot.Write{Epoch: 1, Meta: []byte("m"), Late: map[int64][]byte{5: []byte("x")}, Drop: []int64{5}}},
		{"minute whole and late part", snapshot.Write{Epoch: 1, Meta: []byte("m"), Minutes: map[int64][]byte{5: []byte("x")}, Late: map[int64][]byte{5: []byte("y")}}},
		{"trim ID not a log ID", snapshot.Write{Epoch: 1, Meta: []byte("m"), TrimLogBefore: "12-x"}},
		{"trim ID negative", snapshot.Write{Epoch: 1, Meta: []byte("m"), TrimLogBefore: "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.Store.Save(ctx, 0, tc.w)
			if err == nil || errors.Is(err, snapshot.ErrStaleEpoch) {
				t.Fatalf("save = %v, want a validation error", err)
			}
			if _, err := f.Store.Load(ctx, 0); !errors.Is(err, snapshot.ErrNotFound) {
				t.Fatalf("load after invalid save = %v, want ErrNotFound", err)
			}
		})
	}
}
