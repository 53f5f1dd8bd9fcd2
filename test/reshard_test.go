package test

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
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
	pipelineExact(t, onRedisCluster(pipelineSpec()), 500_000, reshardBusiest)
}

// primaryRange is one primary's contiguous range of slots.
type primaryRange struct {
	addr        string
	first, last int64
}

// primaryRanges returns the slot ranges of the cluster's primaries, in
// slot order.
func primaryRanges(rdb *redis.ClusterClient) ([]primaryRange, error) {
	shards, err := rdb.ClusterShards(context.Background()).Result()
	if err != nil {
		return nil, err
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
	return out, nil
}

// ownerOf returns the primary that serves slot.
func ownerOf(rdb *redis.ClusterClient, slot int64) (string, error) {
	ranges, err := primaryRanges(rdb)
	if err != nil {
		return "", err
	}
	for _, r := range ranges {
		if r.first <= slot && slot <= r.last {
			return r.addr, nil
		}
	}
	return "", fmt.Errorf("no primary serves slot %d", slot)
}

// reshardBusiest moves, from 5% of the requests on, the slots from the
// start of a primary's range up to those of one of the 4 busiest
// partitions and the two after it to the primary of the next range, and
// then the same slots on to the third primary. `redis-cli --cluster reshard`
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

	ranges, err := primaryRanges(rdb)
	if err != nil {
		t.Fatal(err)
	}
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

	// sent reads how many requests ingest has had answered so far.
	var ingested atomic.Pointer[ingestResult]
	sent := func() int64 {
		if r := ingested.Load(); r != nil {
			return r.sent.Load()
		}
		return 0
	}
	move := func(from, to, want string) {
		start, at := time.Now(), sent()
		if err := c.rcluster.Reshard(ctx, from, to, slots); err != nil {
			t.Errorf("reshard: %v", err)
			return
		}
		if got, err := ownerOf(rdb, slotOf[target]); err != nil || got != want {
			t.Errorf("after the reshard partition %d's slot %d is on %s (%v), want %s", target, slotOf[target], got, err, want)
		}
		t.Logf("moved %d slots from %s to %s in %v, from request %d to %d of %d", slots, from, to, time.Since(start).Round(time.Millisecond), at, sent(), len(w.batches))
	}
	// Unpaced, ingest outruns a move (a few seconds): while the slots
	// move, requests are handed out one per 10ms, so that clicks flow
	// through both moves rather than having ended before them.
	var moving atomic.Bool
	done := make(chan struct{})
	hook := func(i int, res *ingestResult) {
		ingested.Store(res)
		if i == len(w.batches)/20 {
			moving.Store(true)
			go func() {
				defer close(done)
				defer moving.Store(false)
				move(src.addr, dst.addr, dst.addr)
				move(dst.addr, third.addr, third.addr)
			}()
		}
		if moving.Load() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return hook, func() {
		<-done
		logRedisWarnings(t, c)
	}
}

// logRedisWarnings logs how many warnings each process logged during the
// reshards, and the distinct Redis errors among them (TRYAGAIN, ASK,
// MOVED, CLUSTERDOWN): what the client did not absorb by itself, and the
// processes retried.
func logRedisWarnings(t *testing.T, c *testCluster) {
	t.Helper()
	redisErr := regexp.MustCompile(`TRYAGAIN|ASK|MOVED|CLUSTERDOWN|CROSSSLOT`)
	for _, p := range slices.Concat(c.aggregators, c.routers, []*proc{c.queryd}) {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		warns, kinds, last := 0, map[string]int{}, ""
		for line := range strings.Lines(string(b)) {
			if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
				continue
			}
			warns++
			_, last, _ = strings.Cut(strings.TrimSpace(line), "msg=")
			for _, k := range redisErr.FindAllString(line, 1) {
				kinds[k]++
			}
		}
		t.Logf("%s: %d warnings, Redis errors among them %v; the last: %.200s", p.name, warns, kinds, last)
	}
}
