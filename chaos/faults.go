package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// Kind is a kind of fault, as the schedule and the summary print it.
type Kind string

// The fault kinds. Targets are process names ("aggregator-2"), link
// names (a process with a proxy, "redis", "etcd", "etcd-1", "redis-0")
// or, for split and unsplit, an ad id.
const (
	KillOne         Kind = "kill"             // SIGKILL one clickagg process of any role; heal restarts it
	KillSeveral     Kind = "kill-several"     // SIGKILL 2–3 processes of different roles at once
	Pause           Kind = "pause"            // SIGSTOP; heal sends SIGCONT (a pause may outlast the lease TTL)
	RedisRestart    Kind = "redis-restart"    // SIGKILL the Redis primary; heal restarts it from its AOF, before the sentinels fail it over
	RedisFailover   Kind = "redis-failover"   // SIGKILL the primary, wait for the sentinels to promote a replica; heal brings the old one back as a replica
	EtcdMemberKill  Kind = "etcd-member-kill" // SIGKILL an etcd follower; heal restarts it from its data dir
	EtcdLeaderKill  Kind = "etcd-leader-kill" // SIGKILL the etcd leader, wait for a new one; heal restarts it
	EtcdUnreachable Kind = "etcd-unreachable" // every etcd proxy down (connections closed, new ones refused); heal brings them up
	NetLatency      Kind = "net-latency"      // latency toxic (Param, default 100ms) each way on a link
	NetReset        Kind = "net-reset"        // every connection on a link reset (TCP RST) as soon as data flows
	NetOneWay       Kind = "net-oneway"       // one direction of a link stops (Param upstream, the default, or downstream); connections stay open
	Rebalance       Kind = "rebalance"        // admin Rebalance
	Drain           Kind = "drain"            // DrainMember an aggregator; heal cancels the drain
	Split           Kind = "split"            // SplitKey an ad (Targets[0])
	Unsplit         Kind = "unsplit"          // UnsplitKey an ad (Targets[0])
)

// Kinds are every fault kind, in the order above.
var Kinds = []Kind{KillOne, KillSeveral, Pause, RedisRestart, RedisFailover, EtcdMemberKill, EtcdLeaderKill,
	EtcdUnreachable, NetLatency, NetReset, NetOneWay, Rebalance, Drain, Split, Unsplit}

// Fault is one fault of a schedule.
type Fault struct {
	// At is when it starts, from the start of the workload.
	At   time.Duration
	Kind Kind
	// Targets are what it hits: process names, link names or an ad id,
	// by Kind. Empty picks what Targets(Kind) returns first.
	Targets []string
	// Duration is how long it lasts: when the caller heals it.
	Duration time.Duration
	// Param is a kind's parameter, e.g. a latency "200ms".
	Param string
}

// String is the fault on one line, as the printed schedule shows it:
// "+12.0s pause aggregator-2 for 7s".
func (f Fault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%.1fs %s", f.At.Seconds(), f.Kind)
	if len(f.Targets) > 0 {
		fmt.Fprintf(&b, " %s", strings.Join(f.Targets, ","))
	}
	if f.Param != "" {
		fmt.Fprintf(&b, " %s", f.Param)
	}
	if f.Duration > 0 {
		fmt.Fprintf(&b, " for %s", f.Duration)
	}
	return b.String()
}

// Symbolic targets, resolved when the fault is injected: the schedule is
// drawn before the run, and which Redis node is the primary or which etcd
// member leads changes during it.
const (
	// TargetPrimary is the Redis primary the sentinels name.
	TargetPrimary = "primary"
	// TargetLeader is the etcd leader; TargetFollower an etcd member
	// that runs and does not lead.
	TargetLeader   = "leader"
	TargetFollower = "follower"
	// LinkRedis is the link to the Redis primary (its node's proxy);
	// LinkEtcd the links to every etcd member.
	LinkRedis = "redis"
	LinkEtcd  = "etcd"
)

// Inject applies f and returns once it has been applied, with heal,
// which undoes it (restart, SIGCONT, toxic removed, drain cancelled) and
// returns once that is done; heal is never nil when err is nil, and does
// nothing for kinds that need no undoing. Inject does not wait f.Duration:
// the caller heals when the fault has lasted long enough (a redis-restart
// must heal within the sentinels' down-after, 5s, or it becomes a
// failover). An error is the harness failing, not a fault.
func (c *Cluster) Inject(ctx context.Context, f Fault) (heal func(context.Context) error, err error) {
	targets := f.Targets
	switch {
	case len(targets) > 0 || f.Kind == Rebalance:
	case f.Kind == KillSeveral:
		targets = c.severalRoles()
	default:
		if targets = c.Targets(f.Kind); len(targets) > 0 {
			targets = targets[:1]
		}
	}
	if len(targets) == 0 && f.Kind != Rebalance {
		return nil, fmt.Errorf("inject %s: nothing to target", f.Kind)
	}
	// f as applied, for the errors and the log: the targets resolved.
	f.Targets = targets
	switch f.Kind {
	case KillOne, KillSeveral:
		heal, err = c.kill(targets)
	case Pause:
		heal, err = c.pause(targets)
	case RedisRestart:
		heal, err = c.redisRestart(ctx)
	case RedisFailover:
		heal, err = c.redisFailover(ctx)
	case EtcdMemberKill, EtcdLeaderKill:
		heal, err = c.etcdKill(ctx, f.Kind, targets[0])
	case EtcdUnreachable:
		heal, err = c.etcdUnreachable()
	case NetLatency, NetReset, NetOneWay:
		heal, err = c.netToxic(ctx, f, targets)
	case Rebalance, Drain, Split, Unsplit:
		heal, err = c.admin(ctx, f.Kind, targets)
	default:
		return nil, fmt.Errorf("inject: unknown fault kind %q", f.Kind)
	}
	if err != nil {
		// Half applied (a primary killed that the sentinels never
		// replaced, a leader killed and none elected): undo what was
		// done, so the cluster is not left broken by the harness.
		if heal != nil {
			if herr := heal(ctx); herr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", herr))
			}
		}
		return nil, fmt.Errorf("inject %s: %w", f, err)
	}
	c.cfg.Log.Info("fault injected", "fault", f.String())
	return heal, nil
}

// Targets returns what a fault of kind k may target now, in a stable
// order: for kill and pause the clickagg processes that run (KillSeveral
// names 2–3 of them, of different roles); for the Redis and etcd kinds
// the symbolic target resolved at injection; for the network kinds the
// links: "redis", "etcd" and every aggregator, coordinator and router
// (the members others dial). Drain targets the aggregators; rebalance,
// split and unsplit none (the caller names the ad).
func (c *Cluster) Targets(k Kind) []string {
	var out []string
	switch k {
	case KillOne, KillSeveral, Pause:
		for _, p := range c.Processes() {
			if p.Role != "etcd" && p.Running() && !p.Paused() {
				out = append(out, p.Name)
			}
		}
	case RedisRestart, RedisFailover:
		out = []string{TargetPrimary}
	case EtcdMemberKill:
		out = []string{TargetFollower}
	case EtcdLeaderKill:
		out = []string{TargetLeader}
	case EtcdUnreachable:
		out = []string{LinkEtcd}
	case NetLatency, NetReset, NetOneWay:
		out = []string{LinkRedis, LinkEtcd}
		for _, p := range c.Processes() {
			if p.Role == "aggregator" || p.Role == "coordinator" || p.Role == "router" {
				out = append(out, p.Name)
			}
		}
	case Drain:
		for _, p := range c.Processes() {
			if p.Role == "aggregator" {
				out = append(out, p.Name)
			}
		}
	}
	return out
}

// severalRoles returns KillSeveral's default targets: the first running
// aggregator, router and coordinator.
func (c *Cluster) severalRoles() []string {
	var out []string
	seen := map[string]bool{}
	for _, name := range c.Targets(KillSeveral) {
		p, _ := c.process(name)
		if p != nil && !seen[p.Role] && (p.Role == "aggregator" || p.Role == "router" || p.Role == "coordinator") {
			seen[p.Role] = true
			out = append(out, name)
		}
	}
	return out
}

// processes returns the processes called names.
func (c *Cluster) processes(names []string) ([]*Process, error) {
	var out []*Process
	for _, n := range names {
		p, err := c.process(n)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// kill SIGKILLs the processes called names, all at once; heal restarts
// them, together, and waits until each serves. Like every fault below,
// it returns heal with an error too when it applied part of the fault,
// for Inject to undo.
func (c *Cluster) kill(names []string) (func(context.Context) error, error) {
	ps, err := c.processes(names)
	if err != nil {
		return nil, err
	}
	heal := func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		for _, p := range ps {
			g.Go(func() error { return p.Start(gctx) })
		}
		return g.Wait()
	}
	var g errgroup.Group
	for _, p := range ps {
		g.Go(p.Kill)
	}
	return heal, g.Wait()
}

// pause SIGSTOPs the processes called names; heal SIGCONTs them.
func (c *Cluster) pause(names []string) (func(context.Context) error, error) {
	ps, err := c.processes(names)
	if err != nil {
		return nil, err
	}
	heal := func(context.Context) error {
		var errs []error
		for _, p := range ps {
			errs = append(errs, p.Resume())
		}
		return errors.Join(errs...)
	}
	for _, p := range ps {
		if err := p.Pause(); err != nil {
			return heal, err
		}
	}
	return heal, nil
}
