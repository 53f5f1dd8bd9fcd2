package coordinator

import (
	"cmp"
	"context"
	"slices"

	"github.com/clickagg/clickagg/cluster"
)

// Load is the load of the cluster as the owners report it.
type Load struct {
	// Members are the live aggregators and any other owner the assignment
	// names, by ID.
	Members []MemberLoad
	// Partitions are the partitions whose owner reported, in order.
	Partitions []PartitionLoad
	// Unavailable are the partitions with no owner, or whose owner did not
	// report on them.
	Unavailable []int
}

// MemberLoad sums the reported loads of one aggregator's partitions.
type MemberLoad struct {
	Member          string
	Partitions      int // assigned, reported or not
	EventsPerSecond float64
	LagEntries      int64
	// Draining: an operator drains it, or it is shutting down (leaving);
	// either way it is being emptied.
	Draining bool
}

// PartitionLoad is one partition's load as its owner reports it.
type PartitionLoad struct {
	Partition       int
	Member          string
	EventsPerSecond float64
	LagEntries      int64
	LagSeconds      float64
}

// Load reads the members, drains and assignment from etcd and asks every
// owner about its partitions, like Status.
func (c *Coordinator) Load(ctx context.Context) (Load, error) {
	members, err := c.cl.Members(ctx, cluster.RoleAggregator)
	if err != nil {
		return Load{}, err
	}
	draining, err := c.cl.Draining(ctx)
	if err != nil {
		return Load{}, err
	}
	a, err := c.cl.Assignment(ctx)
	if err != nil {
		return Load{}, err
	}
	reported := c.reports(ctx, a, members)

	byMember := map[string]*MemberLoad{}
	for _, m := range members {
		_, d := draining[m.ID]
		byMember[m.ID] = &MemberLoad{Member: m.ID, Draining: d || m.Leaving}
	}
	var out Load
	for p := range c.partitions {
		var o cluster.Owner
		if p < len(a.Owners) {
			o = a.Owners[p]
		}
		if o.Member == "" {
			out.Unavailable = append(out.Unavailable, p)
			continue
		}
		ml := byMember[o.Member]
		if ml == nil {
			_, d := draining[o.Member]
			ml = &MemberLoad{Member: o.Member, Draining: d}
			byMember[o.Member] = ml
		}
		ml.Partitions++
		ps := reported[p]
		if ps == nil {
			out.Unavailable = append(out.Unavailable, p)
			continue
		}
		ml.EventsPerSecond += ps.GetEventsPerSecond()
		ml.LagEntries += ps.GetLag()
		out.Partitions = append(out.Partitions, PartitionLoad{
			Partition:       p,
			Member:          o.Member,
			EventsPerSecond: ps.GetEventsPerSecond(),
			LagEntries:      ps.GetLag(),
			LagSeconds:      ps.GetLagSeconds(),
		})
	}
	for _, ml := range byMember {
		out.Members = append(out.Members, *ml)
	}
	slices.SortFunc(out.Members, func(x, y MemberLoad) int { return cmp.Compare(x.Member, y.Member) })
	return out, nil
}
