package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
)

const (
	minBackoff    = 100 * time.Millisecond
	maxBackoff    = 5 * time.Second
	resignTimeout = 5 * time.Second
)

// errLeadershipLost ends a term whose election lease is gone.
var errLeadershipLost = errors.New("leadership lost: election lease expired")

// fatalError is an error that campaigning again cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Coordinator assigns partitions to aggregators while it is the leader, and
// answers the admin API from etcd.
type Coordinator struct {
	cfg        Config
	cl         *cluster.Client
	partitions int
	dial       func(addr string) (clickaggv1.AggregatorServiceClient, error)
	log        *slog.Logger

	mu      sync.Mutex
	clients map[string]clickaggv1.AggregatorServiceClient // by address
}

// New returns a coordinator of a cluster of partitions partitions. dial
// returns a client of the aggregator at addr; it is called once per address
// and its result reused, and the caller owns (and closes) the connections.
// New does no I/O.
func New(cfg Config, cl *cluster.Client, partitions int, dial func(addr string) (clickaggv1.AggregatorServiceClient, error), log *slog.Logger) *Coordinator {
	return &Coordinator{
		cfg:        cfg,
		cl:         cl,
		partitions: partitions,
		dial:       dial,
		log:        log,
		clients:    map[string]clickaggv1.AggregatorServiceClient{},
	}
}

// Run campaigns for leadership and assigns partitions while leader, until
// ctx ends; then it resigns, so that another coordinator takes over at
// once, and returns nil. It returns early only for errors that campaigning
// again cannot fix (an invalid configuration, a stored assignment of another
// partition count).
func (c *Coordinator) Run(ctx context.Context) error {
	if c.cfg.ID == "" {
		return errors.New("coordinator: empty ID")
	}
	if c.partitions < 1 || c.partitions > ring.MaxPartitions {
		return fmt.Errorf("coordinator: partition count %d: must be in [1, %d]", c.partitions, ring.MaxPartitions)
	}
	if err := c.cfg.Validate(); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	backoff := minBackoff
	for {
		start := time.Now()
		err := c.lead(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fe := (*fatalError)(nil); errors.As(err, &fe) {
			return fmt.Errorf("coordinator: %w", err)
		}
		if time.Since(start) > time.Minute {
			backoff = minBackoff
		}
		c.log.Warn("leadership ended, campaigning again", "member", c.cfg.ID, "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// lead runs one term: campaign, then assign until the term ends.
func (c *Coordinator) lead(ctx context.Context) error {
	l, err := c.cl.Campaign(ctx, c.cfg.ID, c.cfg.SessionTTL)
	if err != nil {
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resignTimeout)
		defer cancel()
		if err := l.Resign(rctx); err != nil {
			c.log.Warn("resign", "member", c.cfg.ID, "err", err)
		}
	}()
	// Elected after the previous leader's key was deleted, so this read
	// sees every write the previous leader made.
	cur, err := c.cl.Assignment(ctx)
	if err != nil {
		return fmt.Errorf("read assignment: %w", err)
	}
	if n := len(cur.Owners); n != 0 && n != c.partitions {
		return &fatalError{fmt.Errorf("stored assignment has %d partitions, this coordinator was started with %d", n, c.partitions)}
	}
	c.log.Info("elected leader", "member", c.cfg.ID, "version", cur.Version)

	g, gctx := errgroup.WithContext(ctx)
	// One slot, latest wins: a plan only needs the newest member list.
	updates := make(chan []cluster.Member, 1)
	g.Go(func() error {
		select {
		case <-l.Done():
			return errLeadershipLost
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error {
		return c.cl.WatchMembers(gctx, cluster.RoleAggregator, func(ms []cluster.Member) {
			select {
			case <-updates:
			default:
			}
			updates <- ms
		})
	})
	g.Go(func() error { return c.assign(gctx, l, cur, updates) })
	return g.Wait()
}

// assign writes a new assignment for each member list that changes it.
func (c *Coordinator) assign(ctx context.Context, l *cluster.Leadership, cur cluster.Assignment, updates <-chan []cluster.Member) error {
	var (
		members []cluster.Member
		pending bool // members not yet reflected in a written assignment
		stale   bool // cur may be behind etcd after a write with unknown outcome
		retry   <-chan time.Time
		backoff = minBackoff
	)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case members = <-updates:
			pending = true
		case <-retry:
			retry = nil
		}
		if !pending || retry != nil {
			continue
		}
		if stale {
			a, err := c.cl.Assignment(ctx)
			if err != nil {
				c.log.Warn("read assignment", "err", err, "retry_in", backoff)
				retry, backoff = time.After(backoff), min(2*backoff, maxBackoff)
				continue
			}
			cur, stale = a, false
		}
		next, moved, changed, err := plan(cur, members, c.partitions, c.cfg.Load)
		if err != nil {
			return &fatalError{err}
		}
		if !changed {
			pending = false
			continue
		}
		if err := l.WriteAssignment(ctx, next); err != nil {
			if errors.Is(err, cluster.ErrNotLeader) || ctx.Err() != nil {
				return err
			}
			c.log.Warn("write assignment", "version", next.Version, "err", err, "retry_in", backoff)
			stale = true
			retry, backoff = time.After(backoff), min(2*backoff, maxBackoff)
			continue
		}
		pending, backoff = false, minBackoff
		unassigned := 0
		for _, o := range next.Owners {
			if o.Member == "" {
				unassigned++
			}
		}
		c.log.Info("assignment changed", "version", next.Version, "moved", moved, "aggregators", len(members), "unassigned", unassigned)
		if len(members) > c.partitions {
			c.log.Warn("more aggregators than partitions, some stay idle", "aggregators", len(members), "partitions", c.partitions)
		}
		cur = next
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// aggregator returns the client of the aggregator at addr.
func (c *Coordinator) aggregator(addr string) (clickaggv1.AggregatorServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[addr]; ok {
		return cl, nil
	}
	cl, err := c.dial(addr)
	if err != nil {
		return nil, err
	}
	c.clients[addr] = cl
	return cl, nil
}
