// Package partlogtest is the contract suite of the partition log: what the
// router (router.Log) and the aggregator (aggregator.Log) need of it. Every
// implementation runs Run on its real backend (package partlog on one
// Redis server and on a Redis Cluster).
package partlogtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/testserver"
)

// Log is the union of router.Log and aggregator.Log.
type Log interface {
	Append(ctx context.Context, items []partlog.Append) ([]string, error)
	Read(ctx context.Context, after map[int]string, count int64, block time.Duration) (map[int][]partlog.Entry, error)
	Lag(ctx context.Context, p int, after string) (int64, string, error)
}

// Fixture is one implementation under test, every partition empty.
type Fixture struct {
	Log Log
	// Trim drops partition p's entries before the entry minID, as the
	// snapshot store does once no snapshot needs them.
	Trim func(t *testing.T, p int, minID string)
	// Waiting returns a condition that holds once a Read started after the
	// call waits for partition p, which is empty; nil: the suite cannot
	// tell, and appends without waiting.
	Waiting func(t *testing.T, p int) func() error
}

// Partitions is how many partitions the suite writes: 0..Partitions-1.
const Partitions = 12

// Run runs the contract on fixtures from newFixture, one per subtest.
func Run(t *testing.T, newFixture func(t *testing.T) Fixture) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, f Fixture)
	}{
		{"round trip", testRoundTrip},
		{"read every partition in order", testReadInOrder},
		{"read waits for an append", testReadWaits},
		{"nothing new", testNothingNew},
		{"cancel ends the wait", testCancel},
		{"lag", testLag},
		{"lag beyond the exact bound", testLagBeyondExactBound},
		{"read and lag after trim", testTrim},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newFixture(t)) })
	}
}

// AppendN appends n entries to partition p, one Append call each so that
// the IDs come from separate round trips too, and returns what it wrote.
func AppendN(t *testing.T, l Log, p, n int) []partlog.Entry {
	t.Helper()
	var out []partlog.Entry
	for i := range n {
		data := fmt.Appendf(nil, "p%d-e%d", p, i)
		ids, err := l.Append(context.Background(), []partlog.Append{{Partition: p, Data: data}})
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		out = append(out, partlog.Entry{ID: ids[0], Data: data})
	}
	return out
}

// EqualEntries reports whether a and b hold the same IDs and data.
func EqualEntries(a, b []partlog.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y partlog.Entry) bool {
		return x.ID == y.ID && string(x.Data) == string(y.Data)
	})
}

// testRoundTrip: one Append over three interleaved partitions, binary
// data, IDs increasing per partition; Read from the start ("0" or ""),
// paged with count, and caught up.
func testRoundTrip(t *testing.T, f Fixture) {
	ctx := context.Background()
	l := f.Log
	var items []partlog.Append
	want := map[int][]partlog.Entry{}
	for i := range 30 {
		p := i % 3
		items = append(items, partlog.Append{Partition: p, Data: []byte{byte(p), 0, 0xff, byte(i)}})
	}
	ids, err := l.Append(ctx, items)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if len(ids) != len(items) {
		t.Fatalf("append returned %d ids for %d items", len(ids), len(items))
	}
	for i, it := range items {
		want[it.Partition] = append(want[it.Partition], partlog.Entry{ID: ids[i], Data: it.Data})
	}
	for p, es := range want {
		for i := 1; i < len(es); i++ {
			if partlog.CompareIDs(es[i-1].ID, es[i].ID) >= 0 {
				t.Fatalf("partition %d: ids not increasing: %s then %s", p, es[i-1].ID, es[i].ID)
			}
		}
	}
	if ids, err := l.Append(ctx, nil); err != nil || len(ids) != 0 {
		t.Fatalf("empty append = %v, %v", ids, err)
	}

	got, err := l.Read(ctx, map[int]string{0: "0", 1: "", 2: "0", 3: "0"}, 0, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("read returned partitions %v, want 0, 1, 2", slices.Sorted(maps.Keys(got)))
	}
	for p := range 3 {
		if !EqualEntries(got[p], want[p]) {
			t.Errorf("partition %d: read %v, want %v", p, got[p], want[p])
		}
	}

	// Paging with count: after the 4th entry of partition 1, at most 3.
	got, err = l.Read(ctx, map[int]string{1: want[1][3].ID}, 3, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !EqualEntries(got[1], want[1][4:7]) {
		t.Errorf("paged read %v, want %v", got[1], want[1][4:7])
	}

	// Caught up: nothing after the last entry.
	got, err = l.Read(ctx, map[int]string{2: want[2][len(want[2])-1].ID}, 10, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("read after last entry returned %v, want nothing", got)
	}
}

// testReadInOrder: Appends that each span every partition, read back in
// pages of 7, every other one with a block that must not be waited for
// while entries are there.
func testReadInOrder(t *testing.T, f Fixture) {
	ctx := context.Background()
	l := f.Log
	const rounds = 20
	want := map[int][]partlog.Entry{}
	for i := range rounds {
		var items []partlog.Append
		for p := range Partitions {
			items = append(items, partlog.Append{Partition: p, Data: fmt.Appendf(nil, "p%d-e%d", p, i)})
		}
		ids, err := l.Append(ctx, items)
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		for j, it := range items {
			want[it.Partition] = append(want[it.Partition], partlog.Entry{ID: ids[j], Data: it.Data})
		}
	}
	after := map[int]string{}
	for p := range Partitions {
		after[p] = "0"
	}
	got := map[int][]partlog.Entry{}
	for read := 0; read < Partitions*rounds; {
		res, err := l.Read(ctx, after, 7, time.Minute*time.Duration(read%2))
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if len(res) == 0 {
			t.Fatalf("read nothing after %d of %d entries", read, Partitions*rounds)
		}
		for p, es := range res {
			if len(es) > 7 {
				t.Fatalf("partition %d: read %d entries with count 7", p, len(es))
			}
			got[p] = append(got[p], es...)
			after[p] = es[len(es)-1].ID
			read += len(es)
		}
	}
	if res, err := l.Read(ctx, after, 7, 0); err != nil || len(res) != 0 {
		t.Fatalf("read after the last entries = %v, %v; want nothing", res, err)
	}
	for p := range Partitions {
		if !EqualEntries(got[p], want[p]) {
			t.Errorf("partition %d: read %v, want %v", p, got[p], want[p])
		}
	}
}

// testReadWaits starts a Read of partition 4 after its entries and of the
// empty partition 5, with a long block; once the fixture says the reader
// waits, it appends one entry to partition 5, which Read must return, and
// nothing else.
func testReadWaits(t *testing.T, f Fixture) {
	l := f.Log
	before := AppendN(t, l, 4, 2)
	var waiting func() error
	if f.Waiting != nil {
		waiting = f.Waiting(t, 5)
	}
	type result struct {
		got map[int][]partlog.Entry
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := l.Read(context.Background(), map[int]string{4: before[len(before)-1].ID, 5: "0"}, 10, time.Minute)
		done <- result{got, err}
	}()
	if waiting != nil {
		testserver.Eventually(t, 20*time.Second, waiting)
	}
	added := AppendN(t, l, 5, 1)
	r := <-done
	if r.err != nil {
		t.Fatalf("read: %v", r.err)
	}
	if len(r.got) != 1 || !EqualEntries(r.got[5], added) {
		t.Fatalf("waiting read returned %v, want partition 5: %v", r.got, added)
	}
}

// testNothingNew: a Read with nothing to return returns an empty map, not
// nil, whether it blocks or not, once its block has passed.
func testNothingNew(t *testing.T, f Fixture) {
	ctx := context.Background()
	es := AppendN(t, f.Log, 0, 3)
	for _, tc := range []struct {
		name  string
		after map[int]string
		block time.Duration
	}{
		{"no block, caught up", map[int]string{0: es[2].ID}, 0},
		{"no block, empty partitions", map[int]string{1: "0", 2: "", 3: "0"}, 0},
		{"block times out", map[int]string{0: es[2].ID, 1: "0"}, 50 * time.Millisecond},
		{"sub-millisecond block times out", map[int]string{0: es[2].ID}, time.Microsecond},
		{"no partitions", map[int]string{}, time.Second},
		{"no partitions, no block", map[int]string{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.Log.Read(ctx, tc.after, 10, tc.block)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if got == nil || len(got) != 0 {
				t.Fatalf("read returned %#v, want an empty map", got)
			}
		})
	}
}

func testCancel(t *testing.T, f Fixture) {
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.Log.Read(cctx, map[int]string{0: "0", 1: "0"}, 10, time.Hour)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v, want context.Canceled", err)
	}
}

// testLag: the entries after an offset, exact for a short log, and the
// ID of the last entry.
func testLag(t *testing.T, f Fixture) {
	ctx := context.Background()
	l := f.Log
	n, last, err := l.Lag(ctx, 0, "0")
	if err != nil || n != 0 || last != "" {
		t.Fatalf("lag of empty partition = %d, %q, %v; want 0, \"\", nil", n, last, err)
	}
	const total = 10
	es := AppendN(t, l, 0, total)
	lastID := es[total-1].ID
	type lagCase struct {
		name  string
		after string
		want  int64
	}
	cases := []lagCase{
		{"from the start", "0", total},
		{"empty after", "", total},
		{"caught up", lastID, 0},
		{"past the end", fmt.Sprintf("%d-0", 1<<62), 0},
	}
	for i, e := range es {
		cases = append(cases, lagCase{fmt.Sprintf("after entry %d", i), e.ID, int64(total - 1 - i)})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, last, err := l.Lag(ctx, 0, tc.after)
			if err != nil {
				t.Fatalf("lag: %v", err)
			}
			if n != tc.want || last != lastID {
				t.Fatalf("lag = %d, %q; want %d, %q", n, last, tc.want, lastID)
			}
		})
	}
}

// testLagBeyondExactBound: Lag is exact within partlog.LagExactBound
// entries of either end of the log, and an estimate within the bounds
// those counts prove in between.
func testLagBeyondExactBound(t *testing.T, f Fixture) {
	ctx := context.Background()
	l := f.Log
	const b = partlog.LagExactBound
	total := 3*b + 7
	items := make([]partlog.Append, total)
	for i := range items {
		items[i] = partlog.Append{Partition: 0, Data: []byte{byte(i)}}
	}
	ids, err := l.Append(ctx, items)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	last := ids[total-1]
	lag := func(after string) int64 {
		t.Helper()
		n, gotLast, err := l.Lag(ctx, 0, after)
		if err != nil {
			t.Fatalf("lag: %v", err)
		}
		if gotLast != last {
			t.Fatalf("last = %q, want %q", gotLast, last)
		}
		return n
	}
	for _, i := range []int{0, b - 1, total - 1 - b, total - 2, total - 1} {
		if got, want := lag(ids[i]), int64(total-1-i); got != want {
			t.Errorf("lag after entry %d = %d, want exactly %d", i, got, want)
		}
	}
	if got := lag("0"); got != int64(total) {
		t.Errorf("lag from start = %d, want %d", got, total)
	}
	for _, i := range []int{b, total / 2, total - 2 - b} {
		got := lag(ids[i])
		if got <= b || got >= int64(total-b) {
			t.Errorf("estimated lag after entry %d = %d, want in (%d, %d)", i, got, b, total-b)
		}
	}
}

// testTrim: after a trim, Read from the start returns what remains, and an
// offset trimmed away is behind everything that remains.
func testTrim(t *testing.T, f Fixture) {
	ctx := context.Background()
	es := AppendN(t, f.Log, 3, 8)
	f.Trim(t, 3, es[5].ID)
	got, err := f.Log.Read(ctx, map[int]string{3: "0"}, 0, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !EqualEntries(got[3], es[5:]) {
		t.Fatalf("read after trim %v, want %v", got[3], es[5:])
	}
	n, last, err := f.Log.Lag(ctx, 3, es[2].ID)
	if err != nil {
		t.Fatalf("lag: %v", err)
	}
	if n != 3 || last != es[7].ID {
		t.Fatalf("lag after trimmed offset = %d, %q; want 3, %q", n, last, es[7].ID)
	}
}
