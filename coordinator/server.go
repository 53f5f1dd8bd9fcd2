package coordinator

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// server adapts a Coordinator to CoordinatorService.
type server struct {
	clickaggv1.UnimplementedCoordinatorServiceServer
	c *Coordinator
}

// NewServer returns the gRPC admin API of c. Reads (ListMembers,
// GetAssignment, GetClusterStatus, GetLoad, GetHotKeys, GetHandoffs) are
// answered by any coordinator, leader or not, from etcd and the
// aggregators. Mutations (MovePartition, DrainMember, Rebalance, SplitKey,
// UnsplitKey, dry runs included) are executed by the leader only: a
// follower forwards them to the leader's advertised address, marking the
// call as forwarded; a forwarded call that reaches a coordinator that does
// not lead (leadership moved in between) fails with FAILED_PRECONDITION
// naming the leader, rather than bouncing between coordinators.
func NewServer(c *Coordinator) clickaggv1.CoordinatorServiceServer {
	return &server{c: c}
}

// forwardedBy is the metadata key that marks a forwarded mutation; its
// value is the forwarding coordinator's ID.
const forwardedBy = "clickagg-forwarded-by"

// forward sends a mutation to the leader with call, bounded by
// -coordinator.forward-timeout: a stopped leader (SIGSTOP, a frozen VM)
// keeps its connection open and its election key until its session
// expires, and the follower would otherwise wait on it as long as the
// caller does, for ever without a deadline. Past the bound the caller
// learns that the outcome is unknown, not that the call failed.
func forward[R any](ctx context.Context, s *server, call func(context.Context, clickaggv1.CoordinatorServiceClient) (R, error)) (R, error) {
	var none R
	cl, fctx, cand, err := s.leader(ctx)
	if err != nil {
		return none, err
	}
	d := s.c.cfg.forwardTimeout()
	fctx, cancel := context.WithTimeout(fctx, d)
	defer cancel()
	resp, err := call(fctx, cl)
	if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil {
		return none, status.Errorf(codes.DeadlineExceeded, "the leader %s at %s did not answer the forwarded call within %v (-coordinator.forward-timeout): it may or may not have applied it; read GetAssignment or GetHotKeys before retrying", cand.ID, cand.Addr, d)
	}
	return resp, err
}

// leader returns a client of the leader, the context to call it with and
// the leader, or the status to answer when the call cannot be forwarded.
func (s *server) leader(ctx context.Context) (clickaggv1.CoordinatorServiceClient, context.Context, cluster.Candidate, error) {
	cand, err := s.c.cl.LeaderCandidate(ctx)
	if err != nil {
		return nil, nil, cand, toStatus(err)
	}
	self := s.c.self.ID
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedBy)) > 0 {
		return nil, nil, cand, status.Errorf(codes.FailedPrecondition, "coordinator %s does not lead (the call was forwarded by %s); the leader is %q at %q: call it",
			self, md.Get(forwardedBy)[0], cand.ID, cand.Addr)
	}
	switch {
	case cand.ID == "":
		return nil, nil, cand, status.Error(codes.Unavailable, "no coordinator leads now; retry shortly")
	case cand.ID == self:
		return nil, nil, cand, status.Errorf(codes.Unavailable, "coordinator %s is taking over the leadership; retry shortly", self)
	case cand.Addr == "":
		return nil, nil, cand, status.Errorf(codes.FailedPrecondition, "coordinator %s does not lead and the leader %q has no address to forward to: call it", self, cand.ID)
	}
	cc, err := s.c.conn(cand.Addr)
	if err != nil {
		return nil, nil, cand, status.Errorf(codes.Unavailable, "forward to the leader %s: %v", cand.ID, err)
	}
	return clickaggv1.NewCoordinatorServiceClient(cc), metadata.AppendToOutgoingContext(ctx, forwardedBy, self), cand, nil
}

func (s *server) MovePartition(ctx context.Context, req *clickaggv1.MovePartitionRequest) (*clickaggv1.MovePartitionResponse, error) {
	moves, err := s.c.MovePartition(ctx, int(req.GetPartition()), req.GetToMember(), req.GetDryRun())
	if errors.Is(err, ErrNotLeading) {
		return forward(ctx, s, func(fctx context.Context, cl clickaggv1.CoordinatorServiceClient) (*clickaggv1.MovePartitionResponse, error) {
			return cl.MovePartition(fctx, req)
		})
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.MovePartitionResponse{Moves: movesProto(moves), DryRun: req.GetDryRun()}, nil
}

func (s *server) DrainMember(ctx context.Context, req *clickaggv1.DrainMemberRequest) (*clickaggv1.DrainMemberResponse, error) {
	moves, err := s.c.DrainMember(ctx, req.GetMember(), req.GetCancel(), req.GetDryRun())
	if errors.Is(err, ErrNotLeading) {
		return forward(ctx, s, func(fctx context.Context, cl clickaggv1.CoordinatorServiceClient) (*clickaggv1.DrainMemberResponse, error) {
			return cl.DrainMember(fctx, req)
		})
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.DrainMemberResponse{Moves: movesProto(moves), DryRun: req.GetDryRun()}, nil
}

func (s *server) Rebalance(ctx context.Context, req *clickaggv1.RebalanceRequest) (*clickaggv1.RebalanceResponse, error) {
	moves, err := s.c.Rebalance(ctx, req.GetDryRun())
	if errors.Is(err, ErrNotLeading) {
		return forward(ctx, s, func(fctx context.Context, cl clickaggv1.CoordinatorServiceClient) (*clickaggv1.RebalanceResponse, error) {
			return cl.Rebalance(fctx, req)
		})
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.RebalanceResponse{Moves: movesProto(moves), DryRun: req.GetDryRun()}, nil
}

func (s *server) SplitKey(ctx context.Context, req *clickaggv1.SplitKeyRequest) (*clickaggv1.SplitKeyResponse, error) {
	iv, err := s.c.SplitKey(ctx, req.GetAdId(), int(req.GetWays()), req.GetDryRun())
	if errors.Is(err, ErrNotLeading) {
		return forward(ctx, s, func(fctx context.Context, cl clickaggv1.CoordinatorServiceClient) (*clickaggv1.SplitKeyResponse, error) {
			return cl.SplitKey(fctx, req)
		})
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.SplitKeyResponse{Split: splitProto(iv), DryRun: req.GetDryRun()}, nil
}

func (s *server) UnsplitKey(ctx context.Context, req *clickaggv1.UnsplitKeyRequest) (*clickaggv1.UnsplitKeyResponse, error) {
	iv, err := s.c.UnsplitKey(ctx, req.GetAdId(), req.GetDryRun())
	if errors.Is(err, ErrNotLeading) {
		return forward(ctx, s, func(fctx context.Context, cl clickaggv1.CoordinatorServiceClient) (*clickaggv1.UnsplitKeyResponse, error) {
			return cl.UnsplitKey(fctx, req)
		})
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.UnsplitKeyResponse{Split: splitProto(iv), DryRun: req.GetDryRun()}, nil
}

// defaultHotKeys is GetHotKeysRequest.count's default.
const defaultHotKeys = 20

func (s *server) GetHotKeys(ctx context.Context, req *clickaggv1.GetHotKeysRequest) (*clickaggv1.GetHotKeysResponse, error) {
	n := int(req.GetCount())
	if n == 0 {
		n = defaultHotKeys
	}
	hk, err := s.c.HotKeys(ctx, n)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.GetHotKeysResponse{}
	for _, k := range hk.Keys {
		resp.Keys = append(resp.Keys, &clickaggv1.HotKey{AdId: k.AdID, Partition: int32(k.Partition), EventsPerSecond: k.Rate, Share: k.Share})
	}
	for _, iv := range hk.Splits {
		resp.Splits = append(resp.Splits, splitProto(iv))
	}
	return resp, nil
}

func splitProto(iv hotkey.Interval) *clickaggv1.Split {
	out := &clickaggv1.Split{AdId: iv.AdID, From: timestamppb.New(iv.From()), Members: iv.Members}
	for _, p := range iv.Partitions {
		out.Partitions = append(out.Partitions, int32(p))
	}
	if !iv.Open() {
		out.To = timestamppb.New(iv.To())
	}
	return out
}

func movesProto(moves []Move) []*clickaggv1.PartitionMove {
	out := make([]*clickaggv1.PartitionMove, len(moves))
	for i, m := range moves {
		out[i] = &clickaggv1.PartitionMove{Partition: int32(m.Partition), FromMember: m.From, ToMember: m.To}
	}
	return out
}

func (s *server) GetLoad(ctx context.Context, _ *clickaggv1.GetLoadRequest) (*clickaggv1.GetLoadResponse, error) {
	l, err := s.c.Load(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.GetLoadResponse{}
	for _, m := range l.Members {
		resp.Members = append(resp.Members, &clickaggv1.MemberLoad{
			Member: m.Member, Partitions: int32(m.Partitions), EventsPerSecond: m.EventsPerSecond, LagEntries: m.LagEntries, Draining: m.Draining,
		})
	}
	for _, p := range l.Partitions {
		resp.Partitions = append(resp.Partitions, &clickaggv1.PartitionLoad{
			Partition: int32(p.Partition), Member: p.Member, EventsPerSecond: p.EventsPerSecond, LagEntries: p.LagEntries, LagSeconds: p.LagSeconds,
		})
	}
	for _, p := range l.Unavailable {
		resp.Unavailable = append(resp.Unavailable, int32(p))
	}
	return resp, nil
}

func (s *server) GetHandoffs(ctx context.Context, _ *clickaggv1.GetHandoffsRequest) (*clickaggv1.GetHandoffsResponse, error) {
	hs, err := s.c.cl.Handoffs(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.GetHandoffsResponse{Handoffs: make([]*clickaggv1.Handoff, len(hs))}
	for i, h := range hs {
		ph := &clickaggv1.Handoff{
			Partition:  int32(h.Partition),
			FromMember: h.From,
			ToMember:   h.To,
			Epoch:      h.Epoch,
			Planned:    h.Planned,
			Stopped:    timestamppb.New(h.Stopped),
		}
		if !h.Serving.IsZero() {
			ph.Serving = timestamppb.New(h.Serving)
			ph.Pause = durationpb.New(h.Pause())
		}
		resp.Handoffs[i] = ph
	}
	return resp, nil
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
	pins, err := s.c.cl.Pins(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	draining, err := s.c.cl.Draining(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.GetAssignmentResponse{Version: a.Version}
	for p, o := range a.Owners {
		resp.Partitions = append(resp.Partitions, &clickaggv1.PartitionAssignment{Partition: int32(p), Member: o.Member, Epoch: o.Epoch, PinnedTo: pins[p]})
	}
	for _, id := range slices.Sorted(maps.Keys(draining)) {
		resp.Draining = append(resp.Draining, &clickaggv1.Drain{Member: id, Since: timestamppb.New(draining[id])})
	}
	return resp, nil
}

func (s *server) GetClusterStatus(ctx context.Context, req *clickaggv1.GetClusterStatusRequest) (*clickaggv1.GetClusterStatusResponse, error) {
	if req.GetSummary() {
		sum, err := s.c.Summary(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		resp := clusterStatusProto(sum.ClusterStatus)
		resp.Partitions = nil
		now := s.c.now()
		for _, o := range sum.Owners {
			resp.Owners = append(resp.Owners, ownerProto(o, now))
		}
		resp.Totals = totalsProto(sum.Totals, sum.MinWatermark, now)
		return resp, nil
	}
	st, err := s.c.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := clusterStatusProto(st)
	if !req.GetIncludeHeavy() {
		// The reports are this call's own, fresh from the owners.
		for _, ps := range resp.Partitions {
			ps.Heavy = nil
		}
	}
	return resp, nil
}

func clusterStatusProto(st ClusterStatus) *clickaggv1.GetClusterStatusResponse {
	resp := &clickaggv1.GetClusterStatusResponse{
		Leader:         st.Leader,
		PartitionCount: int32(st.Partitions),
		Members:        membersProto(st.Members),
		Partitions:     st.Reports,
		Routers:        st.Routers,

		UnavailableRouters: st.UnavailableRouters,
	}
	for _, p := range st.Unavailable {
		resp.Unavailable = append(resp.Unavailable, int32(p))
	}
	if !st.MinWatermark.IsZero() {
		resp.MinWatermark = timestamppb.New(st.MinWatermark)
	}
	return resp
}

func ownerProto(o OwnerSummary, now time.Time) *clickaggv1.OwnerStatus {
	out := &clickaggv1.OwnerStatus{
		Member:            o.Member,
		Partitions:        int32(o.Partitions),
		Serving:           int32(o.Serving),
		Restoring:         int32(o.Restoring),
		Unavailable:       int32(o.Unavailable),
		Lag:               o.Lag,
		MaxLagSeconds:     o.MaxLagSeconds,
		EventsPerSecond:   o.EventsPerSecond,
		EventsApplied:     o.EventsApplied,
		DuplicatesDropped: o.DuplicatesDropped,
		LateEvents:        o.LateEvents,
		Draining:          o.Draining,
	}
	if !o.MinWatermark.IsZero() {
		out.MinWatermark = timestamppb.New(o.MinWatermark)
		out.WatermarkDelay = durationpb.New(watermarkDelay(now, o.MinWatermark))
	}
	return out
}

// watermarkDelay is how far w is behind now, to the millisecond: the
// nanoseconds of two clocks say nothing and clutter the JSON.
func watermarkDelay(now, w time.Time) time.Duration {
	return now.Sub(w).Round(time.Millisecond)
}

func totalsProto(t Totals, minWatermark, now time.Time) *clickaggv1.ClusterTotals {
	out := &clickaggv1.ClusterTotals{
		Serving:            int32(t.Serving),
		Restoring:          int32(t.Restoring),
		Unavailable:        int32(t.Unavailable),
		Lag:                t.Lag,
		MaxLagSeconds:      t.MaxLagSeconds,
		EventsPerSecond:    t.EventsPerSecond,
		EventsApplied:      t.EventsApplied,
		DuplicatesDropped:  t.DuplicatesDropped,
		LateEvents:         t.LateEvents,
		HandoffsInProgress: int32(t.HandoffsInProgress),
		Splits:             int32(t.Splits),

		IngestAccepted:          t.IngestAccepted,
		IngestRejected:          t.IngestRejected,
		IngestAcceptedPerSecond: t.IngestPerSecond,
		RoutersUnavailable:      int32(t.RoutersUnavailable),
	}
	if !minWatermark.IsZero() {
		out.WatermarkDelay = durationpb.New(watermarkDelay(now, minWatermark))
	}
	return out
}

func membersProto(ms []cluster.Member) []*clickaggv1.Member {
	out := make([]*clickaggv1.Member, len(ms))
	for i, m := range ms {
		out[i] = &clickaggv1.Member{Id: m.ID, Role: m.Role, Addr: m.Addr, RegisteredAt: timestamppb.New(m.RegisteredAt), Version: m.Version, HttpAddr: m.HTTPAddr}
	}
	return out
}

// toStatus maps the errors of the domain to gRPC codes. Everything not
// named is a failure to reach etcd (or a leadership that ended under the
// call: hotkey.ErrFenced), which clients should retry.
func toStatus(err error) error {
	code := codes.Unavailable
	switch {
	case errors.Is(err, hotkey.ErrWithdrawn), errors.Is(err, hotkey.ErrConflict):
		// Before the context errors: a change withdrawn because the caller
		// gave up or the term ended wraps them.
		code = codes.Aborted
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, cluster.ErrInvalid), errors.Is(err, ErrInvalid), errors.Is(err, hotkey.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrUnknownMember):
		code = codes.NotFound
	case errors.Is(err, ErrLastMember), errors.Is(err, ErrDraining), errors.Is(err, ErrAlreadyOwner),
		errors.Is(err, hotkey.ErrAlreadySplit), errors.Is(err, hotkey.ErrNotSplit), errors.Is(err, ErrNoHotKeys):
		code = codes.FailedPrecondition
	case errors.Is(err, cluster.ErrMalformed), errors.Is(err, hotkey.ErrMalformed), fatal(err):
		code = codes.Internal
	}
	return status.Error(code, refusalMessage(err))
}

// refusals are the errors whose detail says all their name says: a client
// reads "aggregator-3 is draining; cancel the drain first", not the same
// thing twice, and the gRPC code carries the kind.
var refusals = []error{
	ErrInvalid, ErrUnknownMember, ErrLastMember, ErrDraining, ErrAlreadyOwner,
	hotkey.ErrInvalid, hotkey.ErrAlreadySplit, hotkey.ErrNotSplit,
}

// refusalMessage is err's message without the name of a refusal it starts
// with.
func refusalMessage(err error) string {
	msg := err.Error()
	for _, r := range refusals {
		if detail, ok := strings.CutPrefix(msg, r.Error()+": "); ok && errors.Is(err, r) {
			return detail
		}
	}
	return msg
}
