package partlog

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// NodeMemory is the memory of one Redis server that holds partition logs.
type NodeMemory struct {
	// Node names the server: its address as the client reaches it
	// (host:port).
	Node string
	// Used is the memory Redis counts against its maxmemory: used_memory
	// less mem_not_counted_for_evict (replication and AOF buffers), the
	// number Redis compares with maxmemory when it decides to refuse a
	// write.
	Used int64
	// Limit is maxmemory; 0: no limit.
	Limit int64
}

// Memory returns the memory of every Redis server that takes the
// partition logs' writes, sorted by Node: each primary of a Redis Cluster,
// or the one server (the current primary under Sentinel). Replicas are
// left out: they do not refuse their primary's writes
// (replica-ignore-maxmemory), and what a primary holds they hold too.
//
// It sends one INFO memory to each primary, which costs O(1) on the server
// whatever the size of the logs. A primary that does not answer fails the
// whole call: a partial answer could hide the fullest node.
func (l *Log) Memory(ctx context.Context) ([]NodeMemory, error) {
	cc, ok := l.rdb.(*redis.ClusterClient)
	if !ok {
		m, err := nodeMemory(ctx, l.rdb, serverName(ctx, l.rdb))
		if err != nil {
			return nil, err
		}
		return []NodeMemory{m}, nil
	}
	var (
		mu  sync.Mutex
		out []NodeMemory
	)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		m, err := nodeMemory(ctx, c, c.Options().Addr)
		if err != nil {
			return err
		}
		mu.Lock()
		out = append(out, m)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b NodeMemory) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}

// failoverAddr is the address go-redis gives a Sentinel-managed client in
// place of the primary's, which it resolves per connection.
const failoverAddr = "FailoverClient"

// serverName names the one server behind a non-cluster client: the
// address it was given, or, behind Sentinel, the address the server sees
// the connection arrive at (CLIENT INFO laddr), which follows failovers.
func serverName(ctx context.Context, rdb redis.UniversalClient) string {
	c, ok := rdb.(*redis.Client)
	if !ok {
		return "redis"
	}
	if addr := c.Options().Addr; addr != failoverAddr {
		return addr
	}
	if info, err := c.ClientInfo(ctx).Result(); err == nil && info.LAddr != "" {
		return info.LAddr
	}
	return "sentinel primary"
}

// nodeMemory reads one server's INFO memory.
func nodeMemory(ctx context.Context, c redis.Cmdable, node string) (NodeMemory, error) {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return NodeMemory{}, fmt.Errorf("redis memory of %s: %w", node, err)
	}
	fields := map[string]int64{}
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			fields[k] = n
		}
	}
	used, ok := fields["used_memory"]
	if !ok {
		return NodeMemory{}, fmt.Errorf("redis memory of %s: no used_memory in INFO memory", node)
	}
	limit, ok := fields["maxmemory"]
	if !ok {
		return NodeMemory{}, fmt.Errorf("redis memory of %s: no maxmemory in INFO memory", node)
	}
	return NodeMemory{Node: node, Used: max(used-fields["mem_not_counted_for_evict"], 0), Limit: limit}, nil
}
