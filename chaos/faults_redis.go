package chaos

import (
	"context"
	"fmt"
	"time"
)

// redisRestart SIGKILLs the Redis primary; heal starts it again from its
// AOF (appendfsync always: it has every write it acknowledged). When the
// sentinels have failed it over meanwhile (heal came after their
// down-after), it comes back as a replica of the new primary instead of
// as a second primary.
func (c *Cluster) redisRestart(ctx context.Context) (func(context.Context) error, error) {
	p, err := c.redis.primary(ctx)
	if err != nil {
		return nil, err
	}
	p.kill()
	return func(ctx context.Context) error { return c.redisBack(ctx, p) }, nil
}

// redisBack starts node n again: as the primary when the sentinels still
// name it, else as a replica of the one they name. A node that runs
// already (two overlapping faults on it, the other healed first) is left
// alone.
func (c *Cluster) redisBack(ctx context.Context, n *redisNode) error {
	if n.running() {
		return nil
	}
	var now *redisNode
	err := waitFor(ctx, time.Minute, func() (err error) {
		now, err = c.redis.primary(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if now == n {
		return n.start(ctx, nil)
	}
	return n.start(ctx, now)
}

// redisFailover SIGKILLs the Redis primary and returns once a majority of
// the sentinels names another node, which answers as a primary; heal
// brings the old primary back as a replica of the new one.
func (c *Cluster) redisFailover(ctx context.Context) (func(context.Context) error, error) {
	old, err := c.redis.primary(ctx)
	if err != nil {
		return nil, err
	}
	old.kill()
	err = waitFor(ctx, 2*time.Minute, func() error {
		now, err := c.redis.primary(ctx)
		if err != nil {
			return err
		}
		if now == old {
			return fmt.Errorf("the sentinels still name %s", old.name)
		}
		cl := c.redis.client(now)
		defer cl.Close()
		info, err := infoMap(ctx, cl, "replication")
		if err != nil {
			return err
		}
		if info["role"] != "master" {
			return fmt.Errorf("%s promoted but role %s", now.name, info["role"])
		}
		return nil
	})
	if err != nil {
		return func(ctx context.Context) error { return c.redisBack(ctx, old) }, fmt.Errorf("no failover: %w", err)
	}
	return func(ctx context.Context) error { return c.redisBack(ctx, old) }, nil
}
