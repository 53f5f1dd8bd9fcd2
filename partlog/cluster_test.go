package partlog_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/partlog/partlogtest"
	"github.com/clickagg/clickagg/router"
	"github.com/clickagg/clickagg/testserver"
)

// The suite's Log holds every method the roles use: a method a role
// starts to use does not compile here until the suite covers it.
var (
	_ router.Log     = partlogtest.Log(nil)
	_ aggregator.Log = partlogtest.Log(nil)
)

// primaryOf returns the address of the primary that serves partition p's
// stream.
func primaryOf(t *testing.T, rdb *redis.ClusterClient, prefix string, p int) string {
	t.Helper()
	owner, _ := testserver.RedisClusterPrimaries(t, rdb, partlog.Key(prefix, p))
	return owner
}

// xreadCalls returns how many XREADs the node at addr has served.
func xreadCalls(ctx context.Context, rdb *redis.ClusterClient, addr string) (int, error) {
	var calls = -1
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		if m.Options().Addr != addr {
			return nil
		}
		info, err := m.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		calls = 0
		for line := range strings.Lines(info) {
			if rest, ok := strings.CutPrefix(line, "cmdstat_xread:calls="); ok {
				calls, err = strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
				return err
			}
		}
		return nil
	})
	if err == nil && calls < 0 {
		err = fmt.Errorf("no primary %s", addr)
	}
	return calls, err
}

// TestOnCluster runs the contract suite and Range and Untrimmed on a
// Redis Cluster of 3 primaries with a replica each, with partitions spread
// over every primary: Read must not send one XREAD over streams of several
// hash slots, which the cluster refuses (CROSSSLOT).
func TestOnCluster(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClusterClient(t)
	const parts = partlogtest.Partitions
	primaries := map[string]bool{}
	for p := range parts {
		primaries[primaryOf(t, rdb, "spread", p)] = true
	}
	if len(primaries) != 3 {
		t.Fatalf("partitions 0..%d are on %d primaries, want all 3", parts-1, len(primaries))
	}

	var prefixes int
	t.Run("contract", func(t *testing.T) {
		partlogtest.Run(t, func(t *testing.T) partlogtest.Fixture {
			prefixes++
			prefix := fmt.Sprintf("contract%d", prefixes)
			return partlogtest.Fixture{
				Log:  partlog.New(rdb, prefix),
				Trim: trim(rdb, prefix),
				// The reader polls an empty partition's primary: it waits
				// once it has found the partition empty twice.
				Waiting: func(t *testing.T, p int) func() error {
					addr := primaryOf(t, rdb, prefix, p)
					calls, err := xreadCalls(ctx, rdb, addr)
					if err != nil {
						t.Fatal(err)
					}
					return func() error {
						n, err := xreadCalls(ctx, rdb, addr)
						if err != nil {
							return err
						}
						if n < calls+2 {
							return fmt.Errorf("%d XREADs on %s, want %d", n, addr, calls+2)
						}
						return nil
					}
				},
			}
		})
	})

	t.Run("range, untrimmed and lag", func(t *testing.T) {
		l := partlog.New(rdb, "range")
		for p := range parts {
			es := partlogtest.AppendN(t, l, p, 5)
			got, err := l.Range(ctx, p, es[1].ID, 10)
			if err != nil {
				t.Fatalf("range: %v", err)
			}
			if !partlogtest.EqualEntries(got, es[2:]) {
				t.Fatalf("partition %d: range %v, want %v", p, got, es[2:])
			}
			if ok, err := l.Untrimmed(ctx, p); err != nil || !ok {
				t.Fatalf("partition %d: untrimmed = %v, %v; want true", p, ok, err)
			}
			n, last, err := l.Lag(ctx, p, es[1].ID)
			if err != nil || n != 3 || last != es[4].ID {
				t.Fatalf("partition %d: lag = %d, %s, %v; want 3, %s", p, n, last, err, es[4].ID)
			}
		}
		if ok, err := l.Untrimmed(ctx, parts); err != nil || !ok {
			t.Fatalf("untrimmed of a partition never written = %v, %v; want true", ok, err)
		}
	})
}
