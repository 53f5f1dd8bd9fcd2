package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/ring"
)

// Option configures a Coordinator beyond its Config.
type Option func(*Coordinator)

// WithHotKeys makes the coordinator split hot ads: while it leads, a
// hotkey.Controller splits and unsplits ads by the aggregators' reports,
// and SplitKey, UnsplitKey and GetHotKeys work. store is the cluster's
// split table, cfg the -hotkey.* settings (with MaxSkew set), now the clock
// that picks effective minutes and judges split ages (nil: time.Now).
// Without it those calls fail with ErrNoHotKeys: right only for a cluster
// that never splits (tests).
func WithHotKeys(store *hotkey.Store, cfg hotkey.Config, now func() time.Time) Option {
	return func(c *Coordinator) {
		if now == nil {
			now = time.Now
		}
		c.hk = &hotKeys{cfg: cfg, store: store, now: now}
	}
}

// hotKeys is the coordinator's part in hot-key splitting.
type hotKeys struct {
	cfg   hotkey.Config
	store *hotkey.Store
	now   func() time.Time
	// parts and planner are set by New when the partition count is valid;
	// Run refuses to start otherwise.
	parts   *ring.Partitioner
	planner *hotkey.Planner
}

// validate checks what Run needs of the hot-key settings.
func (h *hotKeys) validate(partitions int) error {
	if err := h.cfg.Validate(); err != nil {
		return err
	}
	if h.store.Partitions() != partitions {
		return fmt.Errorf("split table store of %d partitions, the cluster has %d", h.store.Partitions(), partitions)
	}
	return nil
}

// Observe reports the cluster's load for the hot-key planner, from the same
// reports as GetLoad: every partition whose owner answered at the assigned
// epoch, with its rate and heaviest ads (PartitionStatus.heavy, a count
// over the last minute, divided by 60 again), and the aggregators that may
// take a share of a split: live, not draining, not leaving. A partition
// whose owner did not answer is left out (unknown, not idle).
func (c *Coordinator) Observe(ctx context.Context) (hotkey.Observation, error) {
	members, err := c.cl.Members(ctx, cluster.RoleAggregator)
	if err != nil {
		return hotkey.Observation{}, err
	}
	draining, err := c.cl.Draining(ctx)
	if err != nil {
		return hotkey.Observation{}, err
	}
	a, err := c.cl.Assignment(ctx)
	if err != nil {
		return hotkey.Observation{}, err
	}
	var obs hotkey.Observation
	for _, m := range members {
		if _, d := draining[m.ID]; !d && !m.Leaving {
			obs.Members = append(obs.Members, m.ID)
		}
	}
	for p, ps := range c.reports(ctx, a, members) {
		if ps == nil {
			continue
		}
		pl := hotkey.PartitionLoad{Partition: p, Member: a.Owners[p].Member, Rate: ps.GetEventsPerSecond()}
		for _, h := range ps.GetHeavy() {
			pl.Heavy = append(pl.Heavy, hotkey.AdRate{AdID: h.GetAdId(), Rate: float64(h.GetCount()) / 60})
		}
		obs.Partitions = append(obs.Partitions, pl)
	}
	return obs, nil
}

// runHotKeys runs the term's hot-key Controller: every CheckInterval a
// Step (observe, plan, apply), until the term ends (nil) or a split table
// write is refused because this coordinator no longer leads, which ends
// the term like any other refused leader write. It is Controller.Run with
// the outcomes counted in Stats.
func (c *Coordinator) runHotKeys(ctx context.Context, h *termHandle) error {
	lg := c.log.With("component", "hotkey")
	ctl := hotkey.NewController(c.hk.cfg, c.hk.planner, h.pub, c, lg, c.hk.now)
	tick := time.NewTicker(c.hk.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		outs, err := ctl.Step(ctx, h.fence)
		for _, o := range outs {
			c.countChange(o.Err)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, hotkey.ErrFenced):
			return c.deposed(err)
		case err != nil:
			lg.Warn("hot key check", "err", err)
		}
	}
}

// countChange counts the outcome of one split table change.
func (c *Coordinator) countChange(err error) {
	switch {
	case err == nil:
		c.splitChanges.Add(1)
	case errors.Is(err, hotkey.ErrWithdrawn):
		c.withdrawnChanges.Add(1)
	}
}

// deposed counts and logs a leader write that etcd refused, and returns the
// error that ends the term.
func (c *Coordinator) deposed(err error) error {
	c.refusedWrites.Add(1)
	c.log.Warn("deposed: split table write refused, another coordinator leads", "member", c.self.ID, "err", err)
	return fmt.Errorf("%w: %w", cluster.ErrNotLeader, err)
}

// termHotKeys is what a term holds for hot-key changes; zero when the
// coordinator has no WithHotKeys.
type termHotKeys struct {
	// pub carries out every split table change of the term, the
	// Controller's and the operators' alike, one at a time.
	pub *hotkey.Publisher
	// fence is the term's leadership, checked by etcd with every write.
	fence clientv3.Cmp
	// fenced receives the refusal of an operator's change: the term ends
	// with it.
	fenced chan error
	// gate is held shared by each operator's change while it runs; the
	// end of the term takes it, waiting for them and refusing new ones.
	gate sync.RWMutex
}

// depose ends the term after a refused split table write made outside the
// term's goroutines (an operator's SplitKey or UnsplitKey).
func (h *termHandle) depose(err error) {
	select {
	case h.fenced <- err:
	default: // the term is already ending
	}
}
