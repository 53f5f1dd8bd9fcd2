package partlog_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

const prefix = "test"

func TestKey(t *testing.T) {
	if got, want := partlog.Key("clickagg", 7), "clickagg:{p7}:log"; got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
}

// appendN appends n entries to partition p, one Append call each so that
// the IDs come from separate round trips too, and returns what it wrote.
func appendN(t *testing.T, l *partlog.Log, p, n int) []partlog.Entry {
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

func equalEntries(a, b []partlog.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y partlog.Entry) bool {
		return x.ID == y.ID && string(x.Data) == string(y.Data)
	})
}

func TestAppendReadRoundTrip(t *testing.T) {
	ctx := context.Background()
	l := partlog.New(testserver.RedisClient(t), prefix)

	// Interleave three partitions in one pipelined Append; data includes a
	// zero byte and a non-UTF-8 byte to prove the payload is binary-safe.
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

	got, err := l.Read(ctx, map[int]string{0: "0", 1: "", 2: "0", 3: "0"}, 0, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("read returned partitions %v, want 0, 1, 2", slices.Sorted(maps.Keys(got)))
	}
	for p := range 3 {
		if !equalEntries(got[p], want[p]) {
			t.Errorf("partition %d: read %v, want %v", p, got[p], want[p])
		}
	}

	// Paging with count: after the 4th entry of partition 1, at most 3.
	got, err = l.Read(ctx, map[int]string{1: want[1][3].ID}, 3, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !equalEntries(got[1], want[1][4:7]) {
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

func TestReadBlocksUntilAppend(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	l := partlog.New(rdb, prefix)
	before := appendN(t, l, 4, 2)
	// Append only once Redis reports the XREAD as blocked, so the test
	// proves the wake-up rather than a read of data that was already there.
	readsAppendAfterWait(t, l, before, func() error {
		info, err := rdb.Info(ctx, "clients").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "blocked_clients:1\r\n") {
			return fmt.Errorf("reader not blocked yet: %q", info)
		}
		return nil
	})
}

// readsAppendAfterWait starts a Read of partition 4 after before, its
// entries, and of the empty partition 5, with a long block; once waiting
// reports the reader waits, it appends one entry to partition 5 and checks
// that Read returns just that entry.
func readsAppendAfterWait(t *testing.T, l *partlog.Log, before []partlog.Entry, waiting func() error) {
	t.Helper()
	type result struct {
		got map[int][]partlog.Entry
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := l.Read(context.Background(), map[int]string{4: before[len(before)-1].ID, 5: "0"}, 10, time.Minute)
		done <- result{got, err}
	}()
	testserver.Eventually(t, 20*time.Second, waiting)
	added := appendN(t, l, 5, 1)
	r := <-done
	if r.err != nil {
		t.Fatalf("read: %v", r.err)
	}
	if len(r.got) != 1 || !equalEntries(r.got[5], added) {
		t.Fatalf("waiting read returned %v, want partition 5: %v", r.got, added)
	}
}

func TestReadNothingNew(t *testing.T) {
	ctx := context.Background()
	l := partlog.New(testserver.RedisClient(t), prefix)
	es := appendN(t, l, 0, 3)
	for _, tc := range []struct {
		name  string
		after map[int]string
		block time.Duration
	}{
		{"no block, caught up", map[int]string{0: es[2].ID}, 0},
		{"no block, empty stream", map[int]string{1: "0"}, 0},
		{"block times out", map[int]string{0: es[2].ID, 1: "0"}, 50 * time.Millisecond},
		{"sub-millisecond block times out", map[int]string{0: es[2].ID}, time.Microsecond},
		{"no partitions", map[int]string{}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.Read(ctx, tc.after, 10, tc.block)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if got == nil || len(got) != 0 {
				t.Fatalf("read returned %#v, want an empty map", got)
			}
		})
	}
}

func TestLag(t *testing.T) {
	ctx := context.Background()
	l := partlog.New(testserver.RedisClient(t), prefix)

	n, last, err := l.Lag(ctx, 0, "0")
	if err != nil || n != 0 || last != "" {
		t.Fatalf("lag of empty stream = %d, %q, %v; want 0, \"\", nil", n, last, err)
	}

	const total = 10
	es := appendN(t, l, 0, total)
	lastID := es[total-1].ID
	cases := []struct {
		name  string
		after string
		want  int64
	}{
		{"from the start", "0", total},
		{"empty after", "", total},
		{"caught up", lastID, 0},
		{"past the end", fmt.Sprintf("%d-0", 1<<62), 0},
	}
	for i, e := range es {
		cases = append(cases, struct {
			name  string
			after string
			want  int64
		}{fmt.Sprintf("after entry %d", i), e.ID, int64(total - 1 - i)})
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

func TestLagBeyondExactBound(t *testing.T) {
	ctx := context.Background()
	l := partlog.New(testserver.RedisClient(t), prefix)
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
	// Exact where at most b entries are at or before the offset, or at most
	// b after it.
	for _, i := range []int{0, b - 1, total - 1 - b, total - 2, total - 1} {
		if got, want := lag(ids[i]), int64(total-1-i); got != want {
			t.Errorf("lag after entry %d = %d, want exactly %d", i, got, want)
		}
	}
	if got := lag("0"); got != int64(total) {
		t.Errorf("lag from start = %d, want %d", got, total)
	}
	// In the middle it is an estimate within the bounds the counts proved.
	for _, i := range []int{b, total / 2, total - 2 - b} {
		got := lag(ids[i])
		if got <= b || got >= int64(total-b) {
			t.Errorf("estimated lag after entry %d = %d, want in (%d, %d)", i, got, b, total-b)
		}
	}
}

func TestReadAndLagAfterTrim(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	l := partlog.New(rdb, prefix)
	es := appendN(t, l, 3, 8)
	// Production trims only through snapshot.Store.Save; the command is the same.
	if err := rdb.XTrimMinID(ctx, partlog.Key(prefix, 3), es[5].ID).Err(); err != nil {
		t.Fatalf("xtrim: %v", err)
	}
	got, err := l.Read(ctx, map[int]string{3: "0"}, 0, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !equalEntries(got[3], es[5:]) {
		t.Fatalf("read after trim %v, want %v", got[3], es[5:])
	}
	// An offset that was trimmed away is behind everything that remains.
	n, _, err := l.Lag(ctx, 3, es[2].ID)
	if err != nil {
		t.Fatalf("lag: %v", err)
	}
	if n != 3 {
		t.Fatalf("lag after trimmed offset = %d, want 3", n)
	}
}

func TestAppendError(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	l := partlog.New(rdb, prefix)
	// A key of the wrong type makes that partition's XADD fail; the whole
	// Append must report it.
	if err := rdb.Set(ctx, partlog.Key(prefix, 1), "x", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	_, err := l.Append(ctx, []partlog.Append{{Partition: 0, Data: []byte("a")}, {Partition: 1, Data: []byte("b")}})
	if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("append = %v, want a WRONGTYPE error", err)
	}
	ids, err := l.Append(ctx, nil)
	if err != nil || len(ids) != 0 {
		t.Fatalf("empty append = %v, %v", ids, err)
	}
}

func TestCompareIDs(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "0", 0},
		{"0", "0-0", 0},
		{"", "0-1", -1},
		{"0-1", "0", 1},
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"2-0", "1-9", 1},
		{"9-0", "10-0", -1}, // numeric, not lexicographic
		{"1-9", "1-10", -1},
		{"1700000000000-5", "1700000000000-12", -1},
		{"1700000000001-0", "1700000000000-99", 1},
		{"18446744073709551615-18446744073709551615", "18446744073709551615-18446744073709551614", 1},
		{"5", "5-0", 0},
		{"garbage", "0-1", -1},
	} {
		t.Run(tc.a+"_vs_"+tc.b, func(t *testing.T) {
			if got := partlog.CompareIDs(tc.a, tc.b); got != tc.want {
				t.Errorf("CompareIDs(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
			if got := partlog.CompareIDs(tc.b, tc.a); got != -tc.want {
				t.Errorf("CompareIDs(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
			}
		})
	}
}

// TestMemory reads a real Redis's memory and limit, and sees the memory
// grow with a log and shrink when the log is trimmed, which is what the
// router's bound relies on.
func TestMemory(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClient(t)
	l := partlog.New(rdb, prefix)
	one := func() partlog.NodeMemory {
		t.Helper()
		nodes, err := l.Memory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) != 1 || nodes[0].Node != rdb.Options().Addr {
			t.Fatalf("Memory() = %+v, want one node %s", nodes, rdb.Options().Addr)
		}
		return nodes[0]
	}
	m0 := one()
	if m0.Used <= 0 || m0.Limit != 0 {
		t.Fatalf("Memory() = %+v; want used > 0 and no limit", m0)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("x", 64<<10))
	for range 64 {
		if _, err := l.Append(ctx, []partlog.Append{{Partition: 0, Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	m := one()
	if m.Limit != 64<<20 || m.Used < m0.Used+4<<20 {
		t.Fatalf("Memory() after 4 MiB appended = %+v; want used at least %d and limit %d", m, m0.Used+4<<20, 64<<20)
	}
	if err := rdb.XTrimMaxLen(ctx, partlog.Key(prefix, 0), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if after := one(); after.Used > m.Used-4<<20 {
		t.Fatalf("Memory() after the trim = %+v; want used at most %d", after, m.Used-4<<20)
	}
}

// TestMemoryCluster reads every primary of a real Redis Cluster: one entry
// per primary, named by its address, each with its own maxmemory, and the
// memory of the logs on the primary that holds their partition only.
func TestMemoryCluster(t *testing.T) {
	ctx := context.Background()
	rc := testserver.RedisCluster(t, 3, 0)
	rdb := redis.NewClusterClient(testserver.RedisClusterOptions(rc))
	t.Cleanup(func() { _ = rdb.Close() })
	l := partlog.New(rdb, prefix)
	// Partition 0's primary gets a maxmemory of its own.
	owner, err := rdb.MasterForKey(ctx, partlog.Key(prefix, 0))
	if err != nil {
		t.Fatal(err)
	}
	host := owner.Options().Addr
	if err := owner.ConfigSet(ctx, "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	read := func() map[string]partlog.NodeMemory {
		t.Helper()
		nodes, err := l.Memory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]partlog.NodeMemory{}
		for _, n := range nodes {
			got[n.Node] = n
		}
		want := slices.Sorted(slices.Values(rc.Addrs()))
		if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, want) || len(nodes) != len(want) {
			t.Fatalf("Memory() = %+v, want one entry per primary %v", nodes, want)
		}
		for _, n := range nodes {
			if wantLimit := map[bool]int64{true: 64 << 20}[n.Node == host]; n.Limit != wantLimit || n.Used <= 0 {
				t.Fatalf("Memory() of %s = %+v, want used > 0 and limit %d", n.Node, n, wantLimit)
			}
		}
		return got
	}
	before := read()
	data := []byte(strings.Repeat("x", 64<<10))
	for range 64 {
		if _, err := l.Append(ctx, []partlog.Append{{Partition: 0, Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	after := read()
	for node, m := range after {
		grew := m.Used - before[node].Used
		if node == host && grew < 4<<20 {
			t.Errorf("%s holds partition 0: used grew by %d after 4 MiB appended, want at least %d", node, grew, 4<<20)
		}
		if node != host && grew > 1<<20 {
			t.Errorf("%s does not hold partition 0: used grew by %d, want less than 1 MiB", node, grew)
		}
	}
}

// TestMemorySentinel: behind Sentinel the client has no address of its
// own; the primary is named by the address the connection reaches.
func TestMemorySentinel(t *testing.T) {
	master := testserver.Redis(t)
	sentinel := testserver.Sentinel(t, "mymaster", master)
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: []string{sentinel}, Password: master.Password})
	t.Cleanup(func() { _ = rdb.Close() })
	nodes, err := partlog.New(rdb, prefix).Memory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Node != master.Addr || nodes[0].Used <= 0 {
		t.Fatalf("Memory() = %+v, want one node %s", nodes, master.Addr)
	}
}
