package partlog_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/partlog"
	"github.com/clickagg/clickagg/testserver"
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

// TestOnCluster runs the log on a Redis Cluster of 3 primaries with a
// replica each, with partitions spread over every primary: Read must not
// send one XREAD over streams of several hash slots, which the cluster
// refuses (CROSSSLOT).
func TestOnCluster(t *testing.T) {
	ctx := context.Background()
	rdb := testserver.RedisClusterClient(t)
	const parts = 12

	t.Run("read every partition in order", func(t *testing.T) {
		const prefix = "order"
		l := partlog.New(rdb, prefix)
		primaries := map[string]bool{}
		for p := range parts {
			primaries[primaryOf(t, rdb, prefix, p)] = true
		}
		if len(primaries) != 3 {
			t.Fatalf("partitions 0..%d are on %d primaries, want all 3", parts-1, len(primaries))
		}
		// Interleaved batches: each Append spans every partition.
		want := map[int][]partlog.Entry{}
		for i := range 20 {
			var items []partlog.Append
			for p := range parts {
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
		for p := range parts {
			after[p] = "0"
		}
		got := map[int][]partlog.Entry{}
		for read := 0; read < parts*20; {
			// Pages of 7, every other one with a block that must not be
			// waited for while entries are there.
			res, err := l.Read(ctx, after, 7, time.Minute*time.Duration(read%2))
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if len(res) == 0 {
				t.Fatalf("read nothing after %d of %d entries", read, parts*20)
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
		for p := range parts {
			if !equalEntries(got[p], want[p]) {
				t.Errorf("partition %d: read %v, want %v", p, got[p], want[p])
			}
		}
	})

	t.Run("read waits for an append", func(t *testing.T) {
		const prefix = "wait"
		l := partlog.New(rdb, prefix)
		before := appendN(t, l, 4, 2)
		addr := primaryOf(t, rdb, prefix, 5)
		calls, err := xreadCalls(ctx, rdb, addr)
		if err != nil {
			t.Fatal(err)
		}
		// Append only once the reader has found partition 5 empty at least
		// twice, so the test proves it waits and then sees the append.
		readsAppendAfterWait(t, l, before, func() error {
			n, err := xreadCalls(ctx, rdb, addr)
			if err != nil {
				return err
			}
			if n < calls+2 {
				return fmt.Errorf("%d XREADs on %s, want %d", n, addr, calls+2)
			}
			return nil
		})
	})

	t.Run("nothing new", func(t *testing.T) {
		l := partlog.New(rdb, "none")
		es := appendN(t, l, 0, 3)
		for _, block := range []time.Duration{0, time.Microsecond, 50 * time.Millisecond} {
			got, err := l.Read(ctx, map[int]string{0: es[2].ID, 1: "0", 2: "", 3: "0"}, 10, block)
			if err != nil {
				t.Fatalf("read with block %v: %v", block, err)
			}
			if got == nil || len(got) != 0 {
				t.Fatalf("read with block %v returned %#v, want an empty map", block, got)
			}
			got, err = l.Read(ctx, map[int]string{}, 10, block)
			if err != nil {
				t.Fatalf("read with block %v: %v", block, err)
			}
			if got == nil || len(got) != 0 {
				t.Fatalf("read with block %v returned %#v, want an empty map", block, got)
			}
		}
	})

	t.Run("cancel ends the wait", func(t *testing.T) {
		l := partlog.New(rdb, "cancel")
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := l.Read(cctx, map[int]string{0: "0", 1: "0"}, 10, time.Hour)
			done <- err
		}()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("read after cancel: %v, want context.Canceled", err)
		}
	})

	t.Run("range, untrimmed and lag", func(t *testing.T) {
		l := partlog.New(rdb, "range")
		for p := range parts {
			es := appendN(t, l, p, 5)
			got, err := l.Range(ctx, p, es[1].ID, 10)
			if err != nil {
				t.Fatalf("range: %v", err)
			}
			if !equalEntries(got, es[2:]) {
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
