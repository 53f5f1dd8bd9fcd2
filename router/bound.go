package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/clickagg/clickagg/partlog"
)

// Memory is the memory of the log store as the router's bound needs it;
// *partlog.Log satisfies it.
type Memory interface {
	// Memory returns, for every Redis server that takes the logs' writes
	// (each primary of a Redis Cluster), the bytes it counts against its
	// limit and the limit (0: none).
	Memory(ctx context.Context) ([]partlog.NodeMemory, error)
}

// ErrLogOverBound: the log store uses more memory than the router lets
// the logs take (-router.max-redis-memory-fraction of Redis's maxmemory).
// Logs are trimmed only below what is snapshotted and archived, so this
// means an archiver or the snapshots are behind, typically because the
// object store is unreachable. The client retries later; nothing it sent
// was appended.
var ErrLogOverBound = errors.New("router: partition log store is over its memory bound because archiving or snapshots are behind (logs are trimmed only once archived), retry later")

// WithMemoryBound makes Run read m's memory every
// -router.redis-memory-check-interval, export it per node
// (clickagg_redis_used_memory_bytes, clickagg_redis_maxmemory_bytes), and
// makes the router refuse clicks with ErrLogOverBound while any node uses
// at least -router.max-redis-memory-fraction of its limit, as last read.
// Ticks are still appended. Without it, with a fraction of 0, or for a
// node without limit, nothing is refused before Redis itself refuses
// writes (ErrLogFull).
func WithMemoryBound(m Memory) Option {
	return func(r *Router) { r.mem = m }
}

// memoryBound keeps whether the log store is over the router's bound, from
// one reading of its memory per interval: Ingest only loads an atomic.
//
// On a Redis Cluster the bound is the fullest primary's: every primary
// holds partitions, a request's clicks usually go to partitions on every
// primary, and the one that fills up first refuses its appends and fails
// the whole request anyway (ErrLogFull). Refusing while any primary is
// over the bound keeps that primary's remaining memory for the snapshot
// and archived-offset writes that let its logs be trimmed.
//
// The state changes only on a successful reading; while Redis cannot be
// read, appends fail on their own.
//
//	        some node: used >= fraction*limit
//	under -----------------------------------> over (Ingest refuses)
//	      <-----------------------------------
//	       every node: used < fraction*limit, or no limit
type memoryBound struct {
	mem      Memory
	fraction float64
	interval time.Duration
	lg       *slog.Logger
	m        *metrics

	// over holds the refusal while the store is over the bound, nil
	// otherwise.
	over atomic.Pointer[error]
	// unlimited remembers the nodes that had no maxmemory at the last
	// reading, so that the warning is logged once per change.
	unlimited string
	// nodes remembers the nodes of the last reading, so that the gauges
	// of a node gone (a failover, a primary removed) are dropped.
	nodes string
}

// refusal returns the error that fails a request while the store is over
// the bound, nil otherwise. A nil bound refuses nothing.
func (b *memoryBound) refusal() error {
	if b == nil {
		return nil
	}
	if err := b.over.Load(); err != nil {
		return *err
	}
	return nil
}

// run checks the memory now and then every interval until ctx ends.
func (b *memoryBound) run(ctx context.Context) {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	failed := false
	for {
		err := b.check(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failed:
			// Once per outage: the appends fail and say so as well.
			b.lg.Warn("read redis memory for the log bound", "err", err)
			failed = true
		case err == nil:
			failed = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check reads the store's memory once and updates the state, the gauges
// and, on a change, the log.
func (b *memoryBound) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(b.interval, time.Second))
	defer cancel()
	nodes, err := b.mem.Memory(ctx)
	if err != nil {
		return err
	}
	b.export(nodes)
	var unlimited []string
	for _, n := range nodes {
		if n.Limit == 0 {
			unlimited = append(unlimited, n.Node)
		}
	}
	if names := strings.Join(unlimited, ","); names != b.unlimited {
		if names != "" {
			b.lg.Warn("redis has no maxmemory: the router does not bound the memory of the partition logs there; set maxmemory (with maxmemory-policy noeviction) so that ingest stops before Redis runs out of memory", "nodes", names)
		}
		b.unlimited = names
	}
	f, ok := fullest(nodes)
	bound := int64(b.fraction * float64(f.Limit))
	b.m.redisUsed.Set(float64(f.Used))
	b.m.redisBound.Set(float64(bound))
	if !ok || b.fraction == 0 || f.Used < bound {
		if b.over.Swap(nil) != nil {
			b.m.logOverBound.Set(0)
			b.lg.Info("partition log store is under its memory bound again: accepting clicks", "node", f.Node, "used_bytes", f.Used, "bound_bytes", bound)
		}
		return nil
	}
	refusal := fmt.Errorf("%w: Redis %s uses %s, at least %.0f%% (-router.max-redis-memory-fraction) of its maxmemory %s",
		ErrLogOverBound, f.Node, bytesIEC(f.Used), 100*b.fraction, bytesIEC(f.Limit))
	if b.over.Swap(&refusal) == nil {
		b.m.logOverBound.Set(1)
		b.lg.Error("partition log store is over its memory bound: refusing clicks with UNAVAILABLE until the logs are trimmed; check that archiving and snapshots progress (clickagg_archive_archived_time_seconds, clickagg_archive_errors_total, clickagg_aggregator_snapshot_failures_total)",
			"node", f.Node, "used_bytes", f.Used, "bound_bytes", bound, "maxmemory_bytes", f.Limit)
	}
	return nil
}

// fullest returns the node with a limit that uses the largest share of
// it, and false when no node has a limit (then the first node, if any).
func fullest(nodes []partlog.NodeMemory) (partlog.NodeMemory, bool) {
	var f partlog.NodeMemory
	found := false
	for _, n := range nodes {
		if n.Limit == 0 {
			continue
		}
		// Compared as used_n/limit_n > used_f/limit_f, in floats: the
		// products of two byte counts may overflow int64.
		if !found || float64(n.Used)*float64(f.Limit) > float64(f.Used)*float64(n.Limit) {
			f, found = n, true
		}
	}
	if !found && len(nodes) > 0 {
		f = nodes[0]
	}
	return f, found
}

// export sets the per-node gauges, and drops those of nodes no longer
// read.
func (b *memoryBound) export(nodes []partlog.NodeMemory) {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Node
	}
	if joined := strings.Join(names, ","); joined != b.nodes {
		b.m.redisNodeUsed.Reset()
		b.m.redisNodeLimit.Reset()
		b.nodes = joined
	}
	for _, n := range nodes {
		b.m.redisNodeUsed.WithLabelValues(n.Node).Set(float64(n.Used))
		b.m.redisNodeLimit.WithLabelValues(n.Node).Set(float64(n.Limit))
	}
}

// bytesIEC spells n bytes for a person: 1.5 GiB.
func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
