package coordinator

import (
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// statusParallelism bounds the aggregators asked at once.
const statusParallelism = 32

// ClusterStatus is the state of the cluster as etcd and the owners report it.
type ClusterStatus struct {
	Leader     string // "" when no coordinator leads
	Partitions int
	Members    []cluster.Member // every role, sorted by ID
	// Owners are the assigned owners, by partition (Member "" where none).
	Owners []cluster.Owner
	// Reports are the owners' reports on their partitions, by partition.
	Reports []*clickaggv1.PartitionStatus
	// Unavailable are the partitions that have no owner or whose owner did
	// not report on them, in order.
	Unavailable []int
	// MinWatermark is the smallest partition watermark; zero unless every
	// partition reported one.
	MinWatermark time.Time
	// Routers are the live routers' answers, and UnavailableRouters the
	// live routers that gave none, both by ID.
	Routers            []*clickaggv1.RouterStatus
	UnavailableRouters []string
}

// Status reads the leader, the members and the assignment from etcd, and asks
// every owner about its partitions and every router about what it
// ingested, all at once. An owner that fails or times out makes its
// partitions unavailable, not the call, and a router that does so is
// listed as unavailable: the status of a cluster in trouble is what an
// operator needs most.
func (c *Coordinator) Status(ctx context.Context) (ClusterStatus, error) {
	leader, err := c.cl.Leader(ctx)
	if err != nil {
		return ClusterStatus{}, err
	}
	members, err := c.cl.Members(ctx, "")
	if err != nil {
		return ClusterStatus{}, err
	}
	a, err := c.cl.Assignment(ctx)
	if err != nil {
		return ClusterStatus{}, err
	}
	st := ClusterStatus{Leader: leader, Partitions: c.partitions, Members: members, Owners: make([]cluster.Owner, c.partitions)}
	copy(st.Owners, a.Owners)

	var reported []*clickaggv1.PartitionStatus
	var g errgroup.Group
	g.Go(func() error {
		reported = c.reports(ctx, a, members)
		return nil
	})
	g.Go(func() error {
		st.Routers, st.UnavailableRouters = c.routerStatuses(ctx, members)
		return nil
	})
	_ = g.Wait() // neither fails: they report what did not answer
	allWatermarks := true
	for p, ps := range reported {
		if ps == nil {
			st.Unavailable = append(st.Unavailable, p)
			continue
		}
		st.Reports = append(st.Reports, ps)
		if ps.GetWatermark() == nil {
			allWatermarks = false
			continue
		}
		if w := ps.GetWatermark().AsTime(); st.MinWatermark.IsZero() || w.Before(st.MinWatermark) {
			st.MinWatermark = w
		}
	}
	if len(st.Unavailable) > 0 || !allWatermarks {
		st.MinWatermark = time.Time{}
	}
	return st, nil
}

// reports asks every owner in a about its partitions, in parallel, and
// returns the reports by partition; nil where the owner did not answer.
// Only the owner at the assigned epoch speaks for a partition.
func (c *Coordinator) reports(ctx context.Context, a cluster.Assignment, members []cluster.Member) []*clickaggv1.PartitionStatus {
	addr := map[string]string{}
	for _, m := range members {
		if m.Role == cluster.RoleAggregator {
			addr[m.ID] = m.Addr
		}
	}
	// The partitions of each owner, by owner ID, in partition order.
	owned := map[string][]int{}
	var owners []string
	for p := range c.partitions {
		if p >= len(a.Owners) || a.Owners[p].Member == "" {
			continue
		}
		id := a.Owners[p].Member
		if _, ok := owned[id]; !ok {
			owners = append(owners, id)
		}
		owned[id] = append(owned[id], p)
	}

	answers := make([]*clickaggv1.PartitionStatusResponse, len(owners))
	var g errgroup.Group
	g.SetLimit(statusParallelism)
	for i, id := range owners {
		g.Go(func() error {
			resp, err := c.partitionStatus(ctx, addr[id])
			if err != nil {
				c.log.Warn("partition status", "member", id, "addr", addr[id], "err", err)
				return nil
			}
			answers[i] = resp
			return nil
		})
	}
	_ = g.Wait() // the calls report failures through answers

	reported := make([]*clickaggv1.PartitionStatus, c.partitions)
	for i, id := range owners {
		resp := answers[i]
		if resp == nil || resp.GetMember() != id {
			continue
		}
		mine := owned[id]
		for _, ps := range resp.GetPartitions() {
			p := int(ps.GetPartition())
			// Anything else is a report from before or after a move.
			if _, ok := slices.BinarySearch(mine, p); ok && ps.GetEpoch() == a.Owners[p].Epoch {
				reported[p] = ps
			}
		}
	}
	return reported
}

func (c *Coordinator) partitionStatus(ctx context.Context, addr string) (*clickaggv1.PartitionStatusResponse, error) {
	return statusCall(ctx, c, addr, func(ctx context.Context, cc grpc.ClientConnInterface) (*clickaggv1.PartitionStatusResponse, error) {
		return clickaggv1.NewAggregatorServiceClient(cc).PartitionStatus(ctx, &clickaggv1.PartitionStatusRequest{})
	})
}

// statusCall makes call on the connection to the member at addr, bounded
// by -coordinator.status-timeout: the status calls to aggregators and
// routers, which must never hold up the answer to an operator for long.
func statusCall[T any](ctx context.Context, c *Coordinator, addr string, call func(context.Context, grpc.ClientConnInterface) (T, error)) (T, error) {
	var zero T
	if addr == "" {
		return zero, fmt.Errorf("not registered")
	}
	cc, err := c.conn(addr)
	if err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StatusTimeout)
	defer cancel()
	return call(ctx, cc)
}
