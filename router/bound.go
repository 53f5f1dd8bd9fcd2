package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Memory is the memory of the log store as the router's bound needs it;
// *partlog.Log satisfies it.
type Memory interface {
	// Memory returns the bytes the store counts against its limit, and
	// the limit (0: none).
	Memory(ctx context.Context) (used, limit int64, err error)
}

// ErrLogOverBound: the log store uses more memory than the router lets
// the logs take (-router.max-redis-memory-fraction of Redis's maxmemory).
// Logs are trimmed only below what is snapshotted and archived, so this
// means an archiver or the snapshots are behind, typically because the
// object store is unreachable. The client retries later; nothing it sent
// was appended.
var ErrLogOverBound = errors.New("router: partition log store is over its memory bound because archiving or snapshots are behind (logs are trimmed only once archived), retry later")

// WithMemoryBound makes the router refuse clicks with ErrLogOverBound
// while m uses at least -router.max-redis-memory-fraction of its limit,
// as last read (every -router.redis-memory-check-interval, by Run). Ticks
// are still appended. Without it, or with a limit of 0, nothing is
// refused before Redis itself refuses writes (ErrLogFull).
func WithMemoryBound(m Memory) Option {
	return func(r *Router) { r.mem = m }
}

// memoryBound keeps whether the log store is over the router's bound, from
// one reading of its memory per interval: Ingest only loads an atomic.
//
// The state changes only on a successful reading; while Redis cannot be
// read, appends fail on their own.
//
//	        used >= fraction*limit
//	under ---------------------------> over (Ingest refuses)
//	      <---------------------------
//	       used < fraction*limit, or no limit
type memoryBound struct {
	mem      Memory
	fraction float64
	interval time.Duration
	lg       *slog.Logger
	m        *metrics

	// over holds the refusal while the store is over the bound, nil
	// otherwise.
	over atomic.Pointer[error]
	// unlimited remembers that Redis had no maxmemory at the last
	// reading, so that the warning is logged once per change.
	unlimited bool
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
	used, limit, err := b.mem.Memory(ctx)
	if err != nil {
		return err
	}
	bound := int64(b.fraction * float64(limit))
	b.m.redisUsed.Set(float64(used))
	b.m.redisBound.Set(float64(bound))
	if limit == 0 && !b.unlimited {
		b.lg.Warn("redis has no maxmemory: the router does not bound the memory of the partition logs; set maxmemory (with maxmemory-policy noeviction) so that ingest stops before Redis runs out of memory")
	}
	b.unlimited = limit == 0
	if limit == 0 || used < bound {
		if b.over.Swap(nil) != nil {
			b.m.logOverBound.Set(0)
			b.lg.Info("partition log store is under its memory bound again: accepting clicks", "used_bytes", used, "bound_bytes", bound)
		}
		return nil
	}
	refusal := fmt.Errorf("%w: Redis uses %s, at least %.0f%% (-router.max-redis-memory-fraction) of its maxmemory %s",
		ErrLogOverBound, bytesIEC(used), 100*b.fraction, bytesIEC(limit))
	if b.over.Swap(&refusal) == nil {
		b.m.logOverBound.Set(1)
		b.lg.Error("partition log store is over its memory bound: refusing clicks with UNAVAILABLE until the logs are trimmed; check that archiving and snapshots progress (clickagg_archive_archived_time_seconds, clickagg_archive_errors_total, clickagg_aggregator_snapshot_failures_total)",
			"used_bytes", used, "bound_bytes", bound, "maxmemory_bytes", limit)
	}
	return nil
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
