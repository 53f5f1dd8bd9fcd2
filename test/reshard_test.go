package test

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/partlog"
)

// TestPipelineExactThroughReshard is issue 14's resharding test: while
// clicks flow, the hash slots of the busiest partitions move to another
// primary, and then on to the third (`redis-cli --cluster reshard`). The
// processes follow MOVED and ASK, the scripts that meet a migrating slot
// retry TRYAGAIN, and every count is exact.
func TestPipelineExactThroughReshard(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test on a Redis Cluster being resharded")
	}
	pipelineExact(t, onRedisCluster(pipelineSpec()), 300_000, reshardBusiest)
}

// primaryRange is one primary's contiguous range of slots.
type primaryRange struct {
	addr        string
	first, last int64
}

// primaryRanges returns the slot ranges of the cluster's primaries, in
// slot order.
func primaryRanges(t *testing.T, rdb *redis.ClusterClient) []primaryRange {
	t.Helper()
	shards, err := rdb.ClusterShards(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []primaryRange
	for _, s := range shards {
		for _, n := range s.Nodes {
			if n.Role != "master" {
				continue
			}
			for _, r := range s.Slots {
				out = append(out, primaryRange{net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10)), r.Start, r.End})
			}
		}
	}
	slices.SortFunc(out, func(a, b primaryRange) int { return cmp.Compare(a.first, b.first) })
	return out
}

// ownerOf returns the primary that serves slot.
func ownerOf(t *testing.T, rdb *redis.ClusterClient, slot int64) string {
	t.Helper()
	for _, r := range primaryRanges(t, rdb) {
		if r.first <= slot && slot <= r.last {
			return r.addr
		}
	}
	t.Fatalf("no primary serves slot %d", slot)
	return ""
}

// reshardBusiest moves, from 25% of the requests on, the slots from the
// start of a primary's range up to those of one of the 4 busiest
// partitions and the two after it to the primary of the next range, and from 55% on moves the
// same slots on to the third primary. `redis-cli --cluster reshard`
// takes a primary's lowest slots, which is why the partition is the one
// of the 4 nearest the start of its primary's range (the fewest other
// slots move) and why the first move goes to the next range: the moved
// slots are then that primary's lowest, the ones the second move takes.
func reshardBusiest(t *testing.T, c *testCluster, w *workload) (func(int, *ingestResult), func()) {
	ctx := context.Background()
	rdb := c.redisClient().(*redis.ClusterClient)
	ps := parts(t, pipelinePartitions)
	clicks := make([]int, pipelinePartitions)
	for _, cl := range w.unique {
		clicks[ps.Partition(cl.ev.AdId)]++
	}
	slotOf := make([]int64, pipelinePartitions)
	for p := range pipelinePartitions {
		s, err := rdb.ClusterKeySlot(ctx, partlog.Key("clickagg", p)).Result()
		if err != nil {
			t.Fatal(err)
		}
		slotOf[p] = s
	}
	busiest := make([]int, pipelinePartitions)
	for p := range busiest {
		busiest[p] = p
	}
	slices.SortFunc(busiest, func(a, b int) int { return cmp.Compare(clicks[b], clicks[a]) })

	ranges := primaryRanges(t, rdb)
	if len(ranges) != 3 {
		t.Fatalf("primaries' slot ranges %v, want 3", ranges)
	}
	// The last range has no next one to move to.
	target, from := -1, 0
	for _, p := range busiest[:4] {
		for i, r := range ranges[:2] {
			if r.first <= slotOf[p] && slotOf[p] <= r.last && (target < 0 || slotOf[p]-r.first < slotOf[target]-ranges[from].first) {
				target, from = p, i
			}
		}
	}
	if target < 0 {
		t.Fatalf("none of the 4 busiest partitions %v is on the first two primaries %v", busiest[:4], ranges[:2])
	}
	src, dst, third := ranges[from], ranges[from+1], ranges[(from+2)%3]
	// Up to the slot of the second partition after it on its primary, so
	// that several partitions move, the busy one first among them.
	var after []int64
	for _, s := range slotOf {
		if s >= slotOf[target] && s <= src.last {
			after = append(after, s)
		}
	}
	slices.Sort(after)
	end := after[min(2, len(after)-1)]
	slots := int(end - src.first + 1)
	var moved []string
	for p, s := range slotOf {
		if src.first <= s && s <= end {
			moved = append(moved, fmt.Sprintf("%d (%d clicks)", p, clicks[p]))
		}
	}
	t.Logf("busiest partitions %v; moving slots %d..%d, partitions %v, from %s to %s, then to %s",
		busiest[:4], src.first, end, moved, src.addr, dst.addr, third.addr)

	var sent atomic.Int64
	move := func(from, to string, want string) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			start, at := time.Now(), sent.Load()
			if err := c.rcluster.Reshard(ctx, from, to, slots); err != nil {
				t.Errorf("reshard: %v", err)
				return
			}
			if got := ownerOf(t, rdb, slotOf[target]); got != want {
				t.Errorf("after the reshard partition %d's slot %d is on %s, want %s", target, slotOf[target], got, want)
			}
			t.Logf("moved %d slots from %s to %s in %v, from request %d to %d", slots, from, to, time.Since(start).Round(time.Millisecond), at, sent.Load())
		}()
		return done
	}
	var first, second chan struct{}
	n := len(w.batches)
	hook := func(i int, res *ingestResult) {
		sent.Store(res.sent.Load())
		switch i {
		case n / 4:
			first = move(src.addr, dst.addr, dst.addr)
		case n * 55 / 100:
			<-first
			second = move(dst.addr, third.addr, third.addr)
		}
	}
	return hook, func() { <-second }
}
