package router

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// NewServer returns the gRPC IngestService backed by r.
func NewServer(r *Router) clickaggv1.IngestServiceServer {
	return &server{r: r}
}

type server struct {
	clickaggv1.UnimplementedIngestServiceServer
	r *Router
}

func (s *server) Ingest(ctx context.Context, req *clickaggv1.IngestRequest) (*clickaggv1.IngestResponse, error) {
	accepted, rejected, err := s.r.Ingest(ctx, req.GetEvents())
	if err != nil {
		return nil, toStatus(err)
	}
	return &clickaggv1.IngestResponse{Accepted: accepted, Rejected: rejected}, nil
}

// NewStatusServer returns the gRPC RouterService backed by r: its
// counters, for the coordinator's GetClusterStatus.
func NewStatusServer(r *Router) clickaggv1.RouterServiceServer {
	return &statusServer{r: r}
}

type statusServer struct {
	clickaggv1.UnimplementedRouterServiceServer
	r *Router
}

func (s *statusServer) RouterStatus(context.Context, *clickaggv1.RouterStatusRequest) (*clickaggv1.RouterStatusResponse, error) {
	st := s.r.Stats()
	return &clickaggv1.RouterStatusResponse{Status: &clickaggv1.RouterStatus{
		Member:            st.ID,
		Started:           timestamppb.New(st.Started),
		Requests:          st.Requests,
		Accepted:          st.Accepted,
		Rejected:          st.Rejected,
		AppendFailures:    st.AppendFailures,
		AcceptedPerSecond: st.AcceptedPerSecond,
	}}, nil
}

// IngestStream answers each request in order. Up to StreamWindow requests
// of one stream are ingested at once, so that a client that keeps several
// in flight gets them appended together (group commit) instead of one
// append round trip after another. A request that fails as a whole ends
// the stream with its status once the requests before it are answered:
// the client cannot tell which of its later in-flight requests were
// appended, so it must resend from the first unanswered one anyway.
func (s *server) IngestStream(stream grpc.BidiStreamingServer[clickaggv1.IngestStreamRequest, clickaggv1.IngestStreamResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	type result struct {
		resp *clickaggv1.IngestStreamResponse
		err  error
	}
	// pending holds, in request order, where each request's result will
	// be; its capacity bounds the requests in flight.
	pending := make(chan chan result, s.r.cfg.StreamWindow-1)
	recvErr := make(chan error, 1)
	go func() {
		defer close(pending)
		for {
			req, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					recvErr <- err
				}
				return
			}
			res := make(chan result, 1)
			select {
			case pending <- res:
			case <-ctx.Done():
				return
			}
			go func() {
				accepted, rejected, err := s.r.Ingest(ctx, req.GetEvents())
				res <- result{&clickaggv1.IngestStreamResponse{Accepted: accepted, Rejected: rejected}, err}
			}()
		}
	}()
	for res := range pending {
		r := <-res
		if r.err != nil {
			return toStatus(r.err)
		}
		if err := stream.Send(r.resp); err != nil {
			return err
		}
	}
	select {
	case err := <-recvErr:
		return err
	default:
		return nil
	}
}

// toStatus maps the router's errors to gRPC codes, the only place that
// does. Context errors come first: an append cut short by the caller's
// deadline is the caller's deadline, not an unavailable log.
func toStatus(err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, ErrNoEvents):
		code = codes.InvalidArgument
	case errors.Is(err, ErrTooManyEvents):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrLogUnavailable), errors.Is(err, ErrLogFull), errors.Is(err, ErrLogOverBound), errors.Is(err, ErrSplitsUnavailable):
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}
