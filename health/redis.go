package health

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// probeTTL keeps the probe keys of processes that are gone from piling up.
const probeTTL = time.Minute

// RedisWritable returns a check that Redis accepts a write: a small SET
// with an expiry at key. A Redis that is reachable but full under
// noeviction refuses it, as it refuses appends and snapshots.
func RedisWritable(rdb redis.Cmdable, key string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		err := rdb.Set(ctx, key, time.Now().UTC().Format(time.RFC3339Nano), probeTTL).Err()
		if err != nil && strings.HasPrefix(err.Error(), "OOM") {
			return fmt.Errorf("redis is full and refuses writes: %w", err)
		}
		return err
	}
}

// RedisWritableOrFull returns a check like RedisWritable that also passes
// when Redis refuses the write only for lack of memory: for a router,
// which answers every click with UNAVAILABLE naming Redis memory while
// Redis is full, and resumes by itself when it is not. Taking every
// router out of its Service would replace that answer with a bare
// connection failure, and steer clients nowhere: all routers share the
// full Redis.
func RedisWritableOrFull(rdb redis.Cmdable, key string) func(ctx context.Context) error {
	writable := RedisWritable(rdb, key)
	return func(ctx context.Context) error {
		if err := writable(ctx); err != nil && !redis.IsOOMError(err) {
			return err
		}
		return nil
	}
}

// RedisReachable returns a check that Redis answers PING.
func RedisReachable(rdb redis.Cmdable) func(ctx context.Context) error {
	return func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
}

// ProbeKey is the key a process's write probe sets.
func ProbeKey(prefix, role, id string) string {
	return prefix + ":health:" + role + ":" + id
}
