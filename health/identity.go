package health

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/redisconf"
	"github.com/clickagg/clickagg/retry"
)

// ErrWrongRedis means the member's Redis is not its cluster's Redis:
// joining would write clicks and snapshots where nobody reads them.
var ErrWrongRedis = errors.New("not the cluster's redis")

// IDStore is where the cluster keeps the identity of its Redis
// (cluster.Client).
type IDStore interface {
	RedisID(ctx context.Context) (string, error)
	EnsureRedisID(ctx context.Context, id string) (string, error)
}

// RedisIDKey is the Redis key of the cluster's identity under prefix.
func RedisIDKey(prefix string) string { return prefix + ":cluster-id" }

// VerifyRedis checks that rdb is the Redis of the cluster in ids.
//
// The first member of a new cluster (no identity in etcd yet) writes a
// random identity to Redis unless one is there (SET NX), then stores what
// Redis holds in etcd unless another member stored one first. From then
// on, a Redis that holds another identity, or none, is not the cluster's:
// ErrWrongRedis. A Redis that lost its data looks the same, and is just as
// unable to serve the cluster's counts. Any other error (Redis or etcd
// unreachable) may pass, and the caller retries.
func VerifyRedis(ctx context.Context, ids IDStore, rdb redis.Cmdable, prefix, addr string) error {
	key := RedisIDKey(prefix)
	want, err := ids.RedisID(ctx)
	if err != nil {
		return err
	}
	if want == "" {
		b := make([]byte, 16)
		_, _ = crand.Read(b) // never fails
		if err := rdb.SetNX(ctx, key, hex.EncodeToString(b), 0).Err(); err != nil {
			return fmt.Errorf("redis %s: store cluster id: %w", addr, err)
		}
		got, err := rdb.Get(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("redis %s: get cluster id: %w", addr, err)
		}
		if want, err = ids.EnsureRedisID(ctx, got); err != nil {
			return err
		}
	}
	got, err := rdb.Get(ctx, key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return fmt.Errorf("redis %s holds no cluster id under %q while the cluster's redis holds %s: it is another redis, or it lost its data: %w", addr, key, want, ErrWrongRedis)
	case err != nil:
		return fmt.Errorf("redis %s: get cluster id: %w", addr, err)
	case got != want:
		return fmt.Errorf("redis %s holds cluster id %s under %q, the cluster's redis holds %s: it is another cluster's redis: %w", addr, got, key, want, ErrWrongRedis)
	}
	return nil
}

// Gate is passed once VerifyRedis succeeded.
type Gate struct {
	once   sync.Once
	passed chan struct{}
}

// NewGate returns a closed gate.
func NewGate() *Gate { return &Gate{passed: make(chan struct{})} }

// Pass passes the gate without a check, for a process that uses no Redis.
func (g *Gate) Pass() { g.once.Do(func() { close(g.passed) }) }

// Passed is closed once the Redis is verified.
func (g *Gate) Passed() <-chan struct{} { return g.passed }

// Check returns nil once the Redis is verified; it is a readiness check.
func (g *Gate) Check(context.Context) error {
	select {
	case <-g.passed:
		return nil
	default:
		return errors.New("redis identity not verified yet")
	}
}

// Wait waits until the Redis is verified; it returns ctx's error if ctx
// ends first.
func (g *Gate) Wait(ctx context.Context) error {
	select {
	case <-g.passed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// verifyPause paces the attempts to verify a Redis that cannot be reached.
var verifyPause = retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// attemptTimeout bounds one verification, so that a Redis that does not
// answer is reported and retried rather than waited on.
const attemptTimeout = 5 * time.Second

// Run calls verify until it succeeds, then passes the gate and returns
// nil. An ErrWrongRedis, or a redisconf.ErrCredentials (Redis answers but
// refuses the password), is final and returned: no retry fixes either.
// Any other error is retried with jittered backoff until ctx ends (then
// Run returns nil).
func (g *Gate) Run(ctx context.Context, verify func(ctx context.Context) error, lg *slog.Logger) error {
	err := retry.Do(ctx, verifyPause, func(_ int, err error, next time.Duration) {
		lg.Warn("verify redis identity", "err", err, "retry_in", next)
	}, func() error {
		vctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		err := verify(vctx)
		switch {
		case err == nil || ctx.Err() != nil:
			return err
		case errors.Is(err, ErrWrongRedis):
			lg.Error("refusing to join: wrong redis", "err", err)
			return retry.Permanent(err)
		case errors.Is(err, redisconf.ErrCredentials):
			lg.Error("refusing to join: redis refused the credentials", "err", err)
			return retry.Permanent(err)
		}
		return err
	})
	switch {
	case err == nil:
		g.Pass()
		lg.Info("redis identity verified")
		return nil
	case ctx.Err() != nil:
		return nil
	}
	return err
}
