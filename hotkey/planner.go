package hotkey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/tally"
)

// AdRate is one ad's events per second.
type AdRate struct {
	AdID string
	Rate float64
}

// PartitionLoad is one partition's load as its owner reports it.
type PartitionLoad struct {
	Partition int
	Member    string
	// Rate is the partition's events per second over the last minute.
	Rate float64
	// Heavy are the partition's heaviest ads (Sketch.Top).
	Heavy []AdRate
}

// Observation is the cluster's load at one moment.
type Observation struct {
	// Partitions are the reports of the partitions whose owner answered;
	// a partition missing here is unknown, not idle.
	Partitions []PartitionLoad
	// Members are the aggregators that may take a sub-key: live and not
	// draining.
	Members []string
}

// Decision is a change the Planner wants, and why.
type Decision struct {
	Change
	// Rate is the ad's events per second over all its partitions.
	Rate float64
}

// Planner decides which ads to split and unsplit, and where sub-keys go.
// It is a pure function of its inputs.
type Planner struct {
	cfg   Config
	parts *ring.Partitioner
}

// NewPlanner returns a planner for a cluster partitioned by parts.
func NewPlanner(cfg Config, parts *ring.Partitioner) *Planner {
	return &Planner{cfg: cfg, parts: parts}
}

// Plan returns the changes the table t needs at now under the load obs:
//
//   - an unsplit of every open split that has lasted MinSplit, whose
//     partitions all reported, and whose ad's rate over them is below
//     UnsplitRate;
//   - a split of every ad not split now whose rate is at least SplitRate,
//     hottest first, over Ways(rate) partitions placed by Place; each
//     placement counts the load the earlier ones move.
//
// An ad's rate is the sum of its Heavy entries over the reported
// partitions; an ad missing from a partition's Heavy list counts as 0
// there (the sketch reports every ad above 1/SketchCapacity of a
// partition's events).
func (p *Planner) Plan(now time.Time, t *Table, obs Observation) []Decision {
	rates := map[string]float64{}
	reported := map[int]bool{}
	for _, pl := range obs.Partitions {
		reported[pl.Partition] = true
		for _, h := range pl.Heavy {
			rates[h.AdID] += h.Rate
		}
	}
	var out []Decision
	nowMinute := tally.MinuteOf(now.UnixMilli())
	for _, iv := range t.Splits() {
		if !iv.Open() || iv.FromMinute > nowMinute || now.Sub(iv.From()) < p.cfg.MinSplit {
			continue
		}
		all := reported[p.parts.Partition(iv.AdID)]
		for _, q := range iv.Partitions {
			all = all && reported[q]
		}
		if all && rates[iv.AdID] < p.cfg.UnsplitRate {
			out = append(out, Decision{Change: Change{AdID: iv.AdID, Unsplit: true}, Rate: rates[iv.AdID]})
		}
	}

	var hot []AdRate
	for ad, r := range rates {
		if r >= p.cfg.SplitRate {
			if _, split := t.Open(ad); !split {
				hot = append(hot, AdRate{AdID: ad, Rate: r})
			}
		}
	}
	slices.SortFunc(hot, func(a, b AdRate) int {
		return cmp.Or(cmp.Compare(b.Rate, a.Rate), cmp.Compare(a.AdID, b.AdID))
	})
	obs = cloneObservation(obs)
	for _, h := range hot {
		c, err := p.Place(h.AdID, p.Ways(h.Rate, obs), obs)
		if err != nil {
			continue // fewer than two aggregators can take a sub-key
		}
		out = append(out, Decision{Change: c, Rate: h.Rate})
		moveLoad(&obs, p.parts.Partition(h.AdID), c.Partitions, h.Rate)
	}
	return out
}

func cloneObservation(o Observation) Observation {
	o.Partitions = slices.Clone(o.Partitions)
	o.Members = slices.Clone(o.Members)
	return o
}

// moveLoad moves rate from partition from to an even share of each of to.
func moveLoad(o *Observation, from int, to []int, rate float64) {
	for i := range o.Partitions {
		pl := &o.Partitions[i]
		if pl.Partition == from {
			pl.Rate -= rate
		}
		if slices.Contains(to, pl.Partition) {
			pl.Rate += rate / float64(len(to))
		}
	}
}

// Ways is the number of partitions an ad of rate events/s is split over:
// enough that each share is at most a quarter of the mean aggregator's
// load, at least 2, at most MaxWays and the number of aggregators that can
// take a sub-key.
func (p *Planner) Ways(rate float64, obs Observation) int {
	loads := memberLoads(obs)
	var total float64
	for _, l := range loads {
		total += l
	}
	k := 2
	if total > 0 && len(loads) > 0 {
		mean := total / float64(len(loads))
		k = max(k, int(math.Ceil(4*rate/mean)))
	}
	return min(k, p.cfg.MaxWays, max(len(loads), 2))
}

// memberLoads sums the reported partition rates of each eligible member
// that owns at least one reported partition: only those can take a sub-key.
func memberLoads(obs Observation) map[string]float64 {
	loads := map[string]float64{}
	for _, pl := range obs.Partitions {
		if slices.Contains(obs.Members, pl.Member) {
			loads[pl.Member] += pl.Rate
		}
	}
	return loads
}

// Place returns the split of adID over ways partitions on ways distinct
// aggregators: the least loaded eligible members, each with its least
// loaded partition. It refuses (ErrInvalid) when fewer than ways members
// own a reported partition, or ways is below 2.
func (p *Planner) Place(adID string, ways int, obs Observation) (Change, error) {
	if adID == "" {
		return Change{}, fmt.Errorf("%w: empty ad_id", ErrInvalid)
	}
	loads := memberLoads(obs)
	if ways < 2 || ways > len(loads) {
		return Change{}, fmt.Errorf("%w: cannot split %s %d ways: %d aggregators own partitions and may take a sub-key, and a split needs at least 2", ErrInvalid, adID, ways, len(loads))
	}
	members := make([]string, 0, len(loads))
	for m := range loads {
		members = append(members, m)
	}
	slices.SortFunc(members, func(a, b string) int { return cmp.Or(cmp.Compare(loads[a], loads[b]), cmp.Compare(a, b)) })
	members = members[:ways]
	type pick struct {
		partition int
		member    string
	}
	picks := make([]pick, 0, ways)
	for _, m := range members {
		best := PartitionLoad{Partition: -1}
		for _, pl := range obs.Partitions {
			if pl.Member == m && (best.Partition < 0 || pl.Rate < best.Rate || pl.Rate == best.Rate && pl.Partition < best.Partition) {
				best = pl
			}
		}
		picks = append(picks, pick{best.Partition, m})
	}
	slices.SortFunc(picks, func(a, b pick) int { return cmp.Compare(a.partition, b.partition) })
	c := Change{AdID: adID}
	for _, pk := range picks {
		c.Partitions = append(c.Partitions, pk.partition)
		c.Members = append(c.Members, pk.member)
	}
	return c, nil
}

// Observer reports the cluster's load; the coordinator implements it with
// the aggregators' PartitionStatus.
type Observer interface {
	Observe(ctx context.Context) (Observation, error)
}

// Outcome is what became of one Decision.
type Outcome struct {
	Decision
	// Interval is the interval created or closed, when Err is nil.
	Interval Interval
	Err      error
}

// Controller splits and unsplits ads without an operator: every
// CheckInterval it observes the load, plans, and applies each decision
// through the Publisher.
type Controller struct {
	cfg     Config
	planner *Planner
	pub     *Publisher
	obs     Observer
	lg      *slog.Logger
	now     func() time.Time
}

// NewController returns a controller. now is the clock the planner judges
// split ages with (nil: time.Now); lg nil discards logs. It does no I/O.
func NewController(cfg Config, planner *Planner, pub *Publisher, obs Observer, lg *slog.Logger, now func() time.Time) *Controller {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Controller{cfg: cfg, planner: planner, pub: pub, obs: obs, lg: lg, now: now}
}

// Step observes, plans and applies every decision in turn, and returns the
// outcomes. It stops at the first ErrFenced (returned as its error too): a
// deposed leader must not go on.
func (c *Controller) Step(ctx context.Context, fence clientv3.Cmp) ([]Outcome, error) {
	obs, err := c.obs.Observe(ctx)
	if err != nil {
		return nil, fmt.Errorf("observe load: %w", err)
	}
	t, _, err := c.pub.store.Load(ctx)
	if err != nil {
		return nil, err
	}
	var out []Outcome
	for _, d := range c.planner.Plan(c.now(), t, obs) {
		iv, err := c.pub.Apply(ctx, fence, d.Change)
		out = append(out, Outcome{Decision: d, Interval: iv, Err: err})
		switch {
		case err == nil:
			c.lg.Info("hot key change", "change", d.String(), "rate", d.Rate, "from_minute", iv.FromMinute, "to_minute", iv.ToMinute)
		case errors.Is(err, ErrFenced):
			return out, err
		default:
			c.lg.Warn("hot key change failed", "change", d.String(), "rate", d.Rate, "err", err)
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// Run calls Step every CheckInterval until ctx ends (it returns nil then)
// or the fence is lost (it returns ErrFenced). The coordinator runs it for
// the length of each term, with the term's fence.
func (c *Controller) Run(ctx context.Context, fence clientv3.Cmp) error {
	t := time.NewTicker(c.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, err := c.Step(ctx, fence)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrFenced):
			return err
		case err != nil:
			c.lg.Warn("hot key check", "err", err)
		}
	}
}
