package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// admin issues the admin call of kind k through a coordinator (a
// follower forwards it to the leader). Drain's heal cancels the drain;
// the others need no undoing (unsplit is a fault of its own).
func (c *Cluster) admin(ctx context.Context, k Kind, targets []string) (func(context.Context) error, error) {
	noop := func(context.Context) error { return nil }
	switch k {
	case Rebalance:
		return noop, c.callCoordinator(ctx, func(ctx context.Context, cl clickaggv1.CoordinatorServiceClient) error {
			_, err := cl.Rebalance(ctx, &clickaggv1.RebalanceRequest{})
			return err
		})
	case Drain:
		drain := func(ctx context.Context, cancel bool) error {
			return c.callCoordinator(ctx, func(ctx context.Context, cl clickaggv1.CoordinatorServiceClient) error {
				_, err := cl.DrainMember(ctx, &clickaggv1.DrainMemberRequest{Member: targets[0], Cancel: cancel})
				return err
			})
		}
		if err := drain(ctx, false); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return drain(ctx, true) }, nil
	case Split:
		return noop, c.callCoordinator(ctx, func(ctx context.Context, cl clickaggv1.CoordinatorServiceClient) error {
			_, err := cl.SplitKey(ctx, &clickaggv1.SplitKeyRequest{AdId: targets[0]})
			return err
		})
	case Unsplit:
		return noop, c.callCoordinator(ctx, func(ctx context.Context, cl clickaggv1.CoordinatorServiceClient) error {
			_, err := cl.UnsplitKey(ctx, &clickaggv1.UnsplitKeyRequest{AdId: targets[0]})
			return err
		})
	}
	return nil, fmt.Errorf("not an admin call: %s", k)
}

// callCoordinator runs call on each coordinator in turn, directly, until
// one succeeds; an Unavailable or DeadlineExceeded answer from all (no
// leader yet, one being elected, a coordinator down or paused) is tried
// again for up to a minute. Other errors are returned at once.
func (c *Cluster) callCoordinator(ctx context.Context, call func(context.Context, clickaggv1.CoordinatorServiceClient) error) error {
	var last error
	err := waitFor(ctx, time.Minute, func() error {
		for _, addr := range c.CoordinatorAddrs() {
			conn, err := grpcDial(addr)
			if err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = call(cctx, clickaggv1.NewCoordinatorServiceClient(conn))
			cancel()
			conn.Close()
			if err == nil {
				last = nil
				return nil
			}
			last = err
			if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
				return nil
			}
		}
		return last
	})
	return errors.Join(err, last)
}
