package coordinator

import (
	"flag"
	"fmt"
	"time"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/ring"
)

// Config configures a coordinator.
type Config struct {
	// Load bounds an aggregator's partitions at Load times the mean.
	Load float64
	// SessionTTL is the lease of the leader's election key: a leader that
	// dies without resigning is replaced after about this long.
	SessionTTL time.Duration
	// StatusTimeout bounds each aggregator's answer in GetClusterStatus,
	// GetLoad and the handoff tracking, and each router's in
	// GetClusterStatus.
	StatusTimeout time.Duration
	// ReleaseTimeout bounds the old owner's answer to Release in a live
	// handoff; past it the move goes ahead unplanned.
	ReleaseTimeout time.Duration
	// ForwardTimeout bounds the leader's answer to a mutation a follower
	// forwards to it; 0 means DefaultForwardTimeout.
	ForwardTimeout time.Duration
	// JoinDelay is how long a change that only adds aggregators waits for
	// another join before it is planned (at most 5 times this in all); 0
	// plans at once.
	JoinDelay time.Duration
}

// DefaultForwardTimeout is -coordinator.forward-timeout's default: the
// leader answers a mutation once it is written to etcd, in milliseconds.
const DefaultForwardTimeout = 10 * time.Second

// forwardTimeout is ForwardTimeout or its default.
func (c *Config) forwardTimeout() time.Duration {
	if c.ForwardTimeout <= 0 {
		return DefaultForwardTimeout
	}
	return c.ForwardTimeout
}

// RegisterFlags registers the coordinator's flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Float64Var(&c.Load, "coordinator.load", ring.DefaultLoad, "bounded-load factor, above 1: no aggregator owns more than this times the mean number of partitions")
	fs.DurationVar(&c.SessionTTL, "coordinator.session-ttl", 10*time.Second, "whole seconds, at least 2s: how long a crashed leader keeps leadership before another coordinator takes over")
	fs.DurationVar(&c.StatusTimeout, "coordinator.status-timeout", 2*time.Second, "how long GetClusterStatus and GetLoad wait for each aggregator, and GetClusterStatus for each router; partitions of an aggregator that does not answer in time, and such routers, are reported as unavailable")
	fs.DurationVar(&c.JoinDelay, "coordinator.join-delay", time.Second, "new aggregators get partitions once none has joined for this long (at most 5 times this after the first); 0: at every join")
	fs.DurationVar(&c.ForwardTimeout, "coordinator.forward-timeout", DefaultForwardTimeout, "how long a coordinator that does not lead waits for the leader's answer to a mutation it forwards (MovePartition, DrainMember, Rebalance, SplitKey, UnsplitKey); past it the call fails with DEADLINE_EXCEEDED, its outcome unknown")
	fs.DurationVar(&c.ReleaseTimeout, "coordinator.release-timeout", 5*time.Second, "how long a live handoff waits for the old owner's final snapshot before moving the partition anyway; keep it well below -aggregator.release-timeout")
}

// Validate checks c.
func (c *Config) Validate() error {
	// Load 1 would only work when the partitions divide evenly among the
	// aggregators, which membership changes break at any time.
	if !(c.Load > 1) || c.Load > 100 {
		return fmt.Errorf("-coordinator.load %v: must be above 1 and at most 100", c.Load)
	}
	if c.SessionTTL < cluster.MinLeaseTTL || c.SessionTTL%time.Second != 0 {
		return fmt.Errorf("-coordinator.session-ttl %v: must be whole seconds, at least %v", c.SessionTTL, cluster.MinLeaseTTL)
	}
	if c.StatusTimeout <= 0 {
		return fmt.Errorf("-coordinator.status-timeout %v: must be positive", c.StatusTimeout)
	}
	if c.JoinDelay < 0 || c.JoinDelay > time.Minute {
		return fmt.Errorf("-coordinator.join-delay %v: must be in [0, 1m]", c.JoinDelay)
	}
	if c.ReleaseTimeout <= 0 {
		return fmt.Errorf("-coordinator.release-timeout %v: must be positive", c.ReleaseTimeout)
	}
	if c.ForwardTimeout < 0 {
		return fmt.Errorf("-coordinator.forward-timeout %v: must not be negative (0 means %v)", c.ForwardTimeout, DefaultForwardTimeout)
	}
	return nil
}
