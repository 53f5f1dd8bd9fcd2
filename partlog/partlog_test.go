package partlog_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/partlog/partlogtest"
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

// trim trims as snapshot.Store.Save does (in its Lua script, with the same
// command).
func trim(rdb redis.UniversalClient, prefix string) func(t *testing.T, p int, minID string) {
	return func(t *testing.T, p int, minID string) {
		t.Helper()
		if err := rdb.XTrimMinID(context.Background(), partlog.Key(prefix, p), minID).Err(); err != nil {
			t.Fatalf("xtrim: %v", err)
		}
	}
}

// TestContractRedis runs the contract suite on one redis-server per
// subtest, so that its blocked_clients counts only the suite's reader.
func TestContractRedis(t *testing.T) {
	partlogtest.Run(t, func(t *testing.T) partlogtest.Fixture {
		rdb := testserver.RedisClient(t)
		return partlogtest.Fixture{
			Log:  partlog.New(rdb, prefix),
			Trim: trim(rdb, prefix),
			Waiting: func(t *testing.T, p int) func() error {
				return func() error {
					info, err := rdb.Info(context.Background(), "clients").Result()
					if err != nil {
						return err
					}
					if !strings.Contains(info, "blocked_clients:1\r\n") {
						return fmt.Errorf("reader not blocked yet: %q", info)
					}
					return nil
				}
			},
		}
	})
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
