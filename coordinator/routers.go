package coordinator

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// routerStatuses asks every live router what it ingested
// (RouterService.RouterStatus), in parallel, each call bounded by
// -coordinator.status-timeout as the aggregators' are. It returns the
// answers by member ID and the routers that did not answer, or answered
// under another name: an ingest total that silently missed a router would
// read as a drop in traffic, so they are listed instead.
func (c *Coordinator) routerStatuses(ctx context.Context, members []cluster.Member) (answered []*clickaggv1.RouterStatus, unavailable []string) {
	var routers []cluster.Member
	for _, m := range members {
		if m.Role == cluster.RoleRouter {
			routers = append(routers, m)
		}
	}
	answers := make([]*clickaggv1.RouterStatus, len(routers))
	var g errgroup.Group
	g.SetLimit(statusParallelism)
	for i, m := range routers {
		g.Go(func() error {
			st, err := c.routerStatus(ctx, m.Addr)
			if err == nil && st.GetMember() != m.ID {
				err = fmt.Errorf("answered as %q", st.GetMember())
			}
			if err != nil {
				c.log.Warn("router status", "member", m.ID, "addr", m.Addr, "err", err)
				return nil
			}
			answers[i] = st
			return nil
		})
	}
	_ = g.Wait() // the calls report failures through answers
	// members are sorted by ID, so both lists are.
	for i, m := range routers {
		if answers[i] == nil {
			unavailable = append(unavailable, m.ID)
			continue
		}
		answered = append(answered, answers[i])
	}
	return answered, unavailable
}

func (c *Coordinator) routerStatus(ctx context.Context, addr string) (*clickaggv1.RouterStatus, error) {
	resp, err := statusCall(ctx, c, addr, func(ctx context.Context, cc grpc.ClientConnInterface) (*clickaggv1.RouterStatusResponse, error) {
		return clickaggv1.NewRouterServiceClient(cc).RouterStatus(ctx, &clickaggv1.RouterStatusRequest{})
	})
	if err != nil {
		return nil, err
	}
	return resp.GetStatus(), nil
}
