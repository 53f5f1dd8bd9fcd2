package toplist

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key is the Redis key of minute's published list.
func Key(prefix string, minute int64) string {
	return prefix + ":top:" + strconv.FormatInt(minute, 10)
}

// Channel is the Redis channel on which every published list is announced.
func Channel(prefix string) string { return prefix + ":top" }

// Store is the published lists of a cluster whose keys start with prefix,
// in rdb: a single server, a Sentinel-managed primary or a Redis Cluster.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

// New returns the Store of the lists under prefix in rdb. It does no I/O.
func New(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix}
}

// Publish stores list as minute's list, replacing any earlier one, for
// ttl (0: for ever), and announces it. After an error the list may be
// stored but not announced (see the package documentation).
func (s *Store) Publish(ctx context.Context, minute int64, list []byte, ttl time.Duration) error {
	key, channel := Key(s.prefix, minute), Channel(s.prefix)
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		if err := cc.Set(ctx, key, list, ttl).Err(); err != nil {
			return fmt.Errorf("store top of minute %d: %w", minute, err)
		}
		node, err := cc.MasterForKey(ctx, channel)
		if err == nil {
			err = node.Publish(ctx, channel, list).Err()
		}
		if err != nil {
			return fmt.Errorf("announce top of minute %d: %w", minute, err)
		}
		return nil
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, list, ttl)
		p.Publish(ctx, channel, list)
		return nil
	})
	if err != nil {
		return fmt.Errorf("publish top of minute %d: %w", minute, err)
	}
	return nil
}

// Load returns the stored list of each of minutes, in their order, nil for
// a minute that has none.
func (s *Store) Load(ctx context.Context, minutes []int64) ([][]byte, error) {
	cmds := make([]*redis.StringCmd, len(minutes))
	// The pipeline's own error may be a missing key's redis.Nil: each
	// command is checked below.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range minutes {
			cmds[i] = p.Get(ctx, Key(s.prefix, m))
		}
		return nil
	})
	out := make([][]byte, len(minutes))
	for i, c := range cmds {
		v, err := c.Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, fmt.Errorf("load top of minute %d: %w", minutes[i], err)
		default:
			out[i] = v
		}
	}
	return out, nil
}
