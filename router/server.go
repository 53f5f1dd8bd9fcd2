package router

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// IngestStream answers each request in order. A request that fails as a
// whole ends the stream with its status: the client cannot tell which of its
// in-flight requests were appended, so it must resend from the first
// unanswered one anyway.
func (s *server) IngestStream(stream grpc.BidiStreamingServer[clickaggv1.IngestStreamRequest, clickaggv1.IngestStreamResponse]) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		accepted, rejected, err := s.r.Ingest(ctx, req.GetEvents())
		if err != nil {
			return toStatus(err)
		}
		if err := stream.Send(&clickaggv1.IngestStreamResponse{Accepted: accepted, Rejected: rejected}); err != nil {
			return err
		}
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
	case errors.Is(err, ErrLogUnavailable), errors.Is(err, ErrSplitsUnavailable):
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}
