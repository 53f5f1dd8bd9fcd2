package testserver_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/testserver"
)

// slots is the number of hash slots of a Redis Cluster.
const slots = 16384

// keySlot is Redis Cluster's HASH_SLOT of a key without a hash tag:
// CRC16-XMODEM of the key, mod 16384.
func keySlot(key string) int {
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % slots
}

// TestRedisCluster starts 3 primaries with a replica each and writes and
// reads one key in every hash slot through a cluster client: every slot
// is served, and the client reaches every node with the password.
func TestRedisCluster(t *testing.T) {
	ctx := context.Background()
	c := testserver.RedisCluster(t, 3, 1)
	if len(c.Nodes) != 6 {
		t.Fatalf("%d nodes, want 6", len(c.Nodes))
	}
	rdb := redis.NewClusterClient(testserver.RedisClusterOptions(c))
	defer rdb.Close()

	keys := make([]string, slots)
	found := 0
	for i := 0; found < slots; i++ {
		k := fmt.Sprintf("k%d", i)
		if s := keySlot(k); keys[s] == "" {
			keys[s] = k
			found++
		}
	}
	// keySlot must agree with the server's, or "every slot" proves nothing.
	for _, s := range []int{0, 5460, 5461, 10922, 10923, slots - 1} {
		got, err := rdb.ClusterKeySlot(ctx, keys[s]).Result()
		if err != nil {
			t.Fatal(err)
		}
		if int(got) != s {
			t.Fatalf("CLUSTER KEYSLOT %s = %d, want %d", keys[s], got, s)
		}
	}
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s, k := range keys {
			p.Set(ctx, k, s, 0)
		}
		return nil
	}); err != nil {
		t.Fatalf("set: %v", err)
	}
	gets := make([]*redis.StringCmd, slots)
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s, k := range keys {
			gets[s] = p.Get(ctx, k)
		}
		return nil
	}); err != nil {
		t.Fatalf("get: %v", err)
	}
	for s, g := range gets {
		if v, err := g.Int(); err != nil || v != s {
			t.Fatalf("GET %s = %d, %v; want %d", keys[s], v, err, s)
		}
	}
	// Each primary holds its third of the slots, so of the keys.
	held := func() map[string]int64 {
		t.Helper()
		var mu sync.Mutex
		out := map[string]int64{}
		if err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			n, err := m.DBSize(ctx).Result()
			mu.Lock()
			out[m.Options().Addr] = n
			mu.Unlock()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := held()
	for addr, n := range before {
		if n < slots/3-1 || n > slots/3+1 {
			t.Fatalf("primary %s holds %d keys, want about %d", addr, n, slots/3)
		}
	}

	// Resharding moves 1000 slots, with their keys, to another primary;
	// the client follows, and every key still reads back.
	from, to := c.Nodes[0].Addr, c.Nodes[1].Addr
	if err := c.Reshard(ctx, from, to, 1000); err != nil {
		t.Fatal(err)
	}
	after := held()
	if after[from] != before[from]-1000 || after[to] != before[to]+1000 {
		t.Fatalf("after moving 1000 slots from %s to %s, the primaries hold %v keys; before %v", from, to, after, before)
	}
	for s, k := range keys {
		if v, err := rdb.Get(ctx, k).Int(); err != nil || v != s {
			t.Fatalf("GET %s after reshard = %d, %v; want %d", k, v, err, s)
		}
	}
}
