package aggregator

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/clickagg/clickagg/history"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tally"
)

// server adapts an Aggregator to clickaggv1.AggregatorServiceServer.
type server struct {
	clickaggv1.UnimplementedAggregatorServiceServer
	a *Aggregator
}

// NewServer returns the internal gRPC service of a: queryd and the
// coordinator call it. Queries and Release are refused (UNAVAILABLE) as
// soon as the membership lease is not certainly alive, before anything is
// read: a process that wakes from a pause longer than its lease must not
// answer for partitions that may have moved while it slept.
func NewServer(a *Aggregator) clickaggv1.AggregatorServiceServer {
	return &server{a: a}
}

func (s *server) Count(ctx context.Context, req *clickaggv1.CountRequest) (*clickaggv1.CountResponse, error) {
	if err := s.a.checkLease(); err != nil {
		return nil, toStatus(err)
	}
	ans, err := s.a.Count(ctx, int(req.GetPartition()), req.GetAdId(), window(req.GetFromMinute(), req.GetToMinute()), filter(req.GetFilter()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.CountResponse{Count: ans.Count, WatermarkMs: ans.Watermark,
		HistoryRevision: int64(ans.Revision), HistoryApplied: int64(ans.Applied)}, nil
}

func (s *server) TopAds(ctx context.Context, req *clickaggv1.TopAdsRequest) (*clickaggv1.TopAdsResponse, error) {
	if err := s.a.checkLease(); err != nil {
		return nil, toStatus(err)
	}
	ps := make([]int, len(req.GetPartitions()))
	for i, p := range req.GetPartitions() {
		ps[i] = int(p)
	}
	ans, err := s.a.TopAdsSplit(ctx, ps, window(req.GetFromMinute(), req.GetToMinute()), int(req.GetCount()), filter(req.GetFilter()), req.GetSplitAds())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.TopAdsResponse{Ads: make([]*clickaggv1.AdCount, len(ans.Top)), MinWatermarkMs: ans.Watermark,
		HistoryRevision: int64(ans.Revision), HistoryApplied: int64(ans.Applied)}
	for i, t := range ans.Top {
		resp.Ads[i] = &clickaggv1.AdCount{AdId: t.AdID, Count: t.Count}
	}
	for _, t := range ans.SplitCounts {
		resp.SplitCounts = append(resp.SplitCounts, &clickaggv1.AdCount{AdId: t.AdID, Count: t.Count})
	}
	return resp, nil
}

func (s *server) MinuteRevisions(_ context.Context, req *clickaggv1.MinuteRevisionsRequest) (*clickaggv1.MinuteRevisionsResponse, error) {
	if err := s.a.checkLease(); err != nil {
		return nil, toStatus(err)
	}
	ps := make([]int, len(req.GetPartitions()))
	for i, p := range req.GetPartitions() {
		ps[i] = int(p)
	}
	revs, wm, err := s.a.MinuteRevisions(ps, window(req.GetFromMinute(), req.GetToMinute()))
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.MinuteRevisionsResponse{Minutes: make([]*clickaggv1.MinuteRevision, len(revs)), MinWatermarkMs: wm}
	for i, r := range revs {
		resp.Minutes[i] = &clickaggv1.MinuteRevision{Minute: r.Minute, Revision: r.Revision}
	}
	return resp, nil
}

func (s *server) PartitionStatus(ctx context.Context, _ *clickaggv1.PartitionStatusRequest) (*clickaggv1.PartitionStatusResponse, error) {
	member, ps, err := s.a.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	loads, err := s.a.loads(ctx, ps)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &clickaggv1.PartitionStatusResponse{Member: member, Partitions: make([]*clickaggv1.PartitionStatus, len(ps))}
	for i, p := range ps {
		st := &clickaggv1.PartitionStatus{
			Partition:         int32(p.Partition),
			Member:            member,
			Epoch:             p.Epoch,
			State:             p.State,
			Offset:            p.Offset,
			Lag:               p.Lag,
			EventsApplied:     p.Stats.EventsApplied,
			DuplicatesDropped: p.Stats.Duplicates,
			LateEvents:        p.Stats.Late,
		}
		if p.Watermark != 0 {
			st.Watermark = timestamppb.New(time.UnixMilli(p.Watermark))
		}
		if !p.LastSnapshot.IsZero() {
			st.LastSnapshot = timestamppb.New(p.LastSnapshot)
		}
		if l, ok := loads[p.Partition]; ok {
			st.EventsPerSecond = l.EventsPerSecond
			st.LagSeconds = l.LagSeconds
			if !l.ServingSince.IsZero() {
				st.ServingSince = timestamppb.New(l.ServingSince)
			}
			for _, h := range l.Heavy {
				st.Heavy = append(st.Heavy, &clickaggv1.AdCount{AdId: h.AdID, Count: h.PerMinute})
			}
		}
		resp.Partitions[i] = st
	}
	return resp, nil
}

func (s *server) Release(ctx context.Context, req *clickaggv1.ReleaseRequest) (*clickaggv1.ReleaseResponse, error) {
	r, err := s.a.Release(ctx, int(req.GetPartition()), req.GetEpoch())
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.ReleaseResponse{Offset: r.Offset, Stopped: timestamppb.New(r.Stopped)}, nil
}

func window(from, to int64) Window { return Window{From: from, To: to} }

func filter(f *clickaggv1.Filter) tally.Filter {
	return tally.Filter{Country: f.GetCountry(), IP: f.GetIp(), UserID: f.GetUserId()}
}

// toStatus maps the errors of the query methods to gRPC status codes; it is
// the one place where that happens.
func toStatus(err error) error {
	var code codes.Code
	switch {
	case errors.Is(err, ErrNotServing):
		code = codes.Unavailable
	case errors.Is(err, ErrOutOfRange):
		code = codes.OutOfRange
	case errors.Is(err, history.ErrHole), errors.Is(err, history.ErrCorrupt):
		// Minutes that left memory and are missing from, or unreadable
		// in, the history: a recount from the raw archive restores them.
		code = codes.DataLoss
	case errors.Is(err, ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrWrongEpoch), errors.Is(err, snapshot.ErrStaleEpoch):
		// Release: the caller's view of the owner is not this one's.
		code = codes.FailedPrecondition
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		// Redis could not be asked (PartitionStatus's lag).
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}
