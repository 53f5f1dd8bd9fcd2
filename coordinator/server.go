package coordinator

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/cluster"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// server adapts a Coordinator to CoordinatorService.
type server struct {
	clickaggv1.UnimplementedCoordinatorServiceServer
	c *Coordinator
}

// NewServer returns the gRPC admin API of c. It answers on any coordinator,
// leader or not, because everything it reports is read from etcd and the
// aggregators.
func NewServer(c *Coordinator) clickaggv1.CoordinatorServiceServer {
	return &server{c: c}
}

func (s *server) ListMembers(ctx context.Context, req *clickaggv1.ListMembersRequest) (*clickaggv1.ListMembersResponse, error) {
	ms, err := s.c.cl.Members(ctx, req.GetRole())
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.ListMembersResponse{Members: membersProto(ms)}, nil
}

func (s *server) GetAssignment(ctx context.Context, _ *clickaggv1.GetAssignmentRequest) (*clickaggv1.GetAssignmentResponse, error) {
	a, err := s.c.cl.Assignment(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.GetAssignmentResponse{Version: a.Version}
	for p, o := range a.Owners {
		resp.Partitions = append(resp.Partitions, &clickaggv1.PartitionAssignment{Partition: int32(p), Member: o.Member, Epoch: o.Epoch})
	}
	return resp, nil
}

func (s *server) GetClusterStatus(ctx context.Context, _ *clickaggv1.GetClusterStatusRequest) (*clickaggv1.GetClusterStatusResponse, error) {
	st, err := s.c.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.GetClusterStatusResponse{
		Leader:         st.Leader,
		PartitionCount: int32(st.Partitions),
		Members:        membersProto(st.Members),
		Partitions:     st.Reports,
	}
	for _, p := range st.Unavailable {
		resp.Unavailable = append(resp.Unavailable, int32(p))
	}
	if !st.MinWatermark.IsZero() {
		resp.MinWatermark = timestamppb.New(st.MinWatermark)
	}
	return resp, nil
}

func membersProto(ms []cluster.Member) []*clickaggv1.Member {
	out := make([]*clickaggv1.Member, len(ms))
	for i, m := range ms {
		out[i] = &clickaggv1.Member{Id: m.ID, Role: m.Role, Addr: m.Addr, RegisteredAt: timestamppb.New(m.RegisteredAt)}
	}
	return out
}

// toStatus maps the errors of the domain to gRPC codes. Everything not
// named is a failure to reach etcd, which clients should retry.
func toStatus(err error) error {
	code := codes.Unavailable
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, cluster.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, cluster.ErrMalformed):
		code = codes.Internal
	}
	return status.Error(code, err.Error())
}
