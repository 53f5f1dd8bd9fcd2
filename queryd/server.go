package queryd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// server adapts Queryd to the QueryService: it parses requests, calls
// Queryd and maps errors to status codes in statusOf, nowhere else.
type server struct {
	clickaggv1.UnimplementedQueryServiceServer
	q *Queryd
}

// NewServer returns the gRPC QueryService of q.
func NewServer(q *Queryd) clickaggv1.QueryServiceServer { return &server{q: q} }

func (s *server) GetAggregatedCount(ctx context.Context, req *clickaggv1.GetAggregatedCountRequest) (*clickaggv1.GetAggregatedCountResponse, error) {
	start := time.Now()
	cq, err := s.q.parseCount(req)
	if err != nil {
		return nil, statusOf(err)
	}
	r, err := s.q.Count(ctx, cq.adID, cq.from, cq.to, cq.filter)
	s.q.m.observe(rpcCount, start, err)
	if err != nil {
		return nil, statusOf(err)
	}
	return &clickaggv1.GetAggregatedCountResponse{
		AdId:            r.AdID,
		Count:           r.Count,
		From:            minuteTime(r.From),
		To:              minuteTime(r.To),
		Complete:        r.Complete,
		HistoryRevision: r.HistoryRevision,
	}, nil
}

func (s *server) GetPopularAds(ctx context.Context, req *clickaggv1.GetPopularAdsRequest) (*clickaggv1.GetPopularAdsResponse, error) {
	start := time.Now()
	tq, err := s.q.parseTop(req)
	if err != nil {
		return nil, statusOf(err)
	}
	r, err := s.q.Top(ctx, tq.from, tq.to, tq.n, tq.filter)
	s.q.m.observe(rpcTop, start, err)
	if err != nil {
		return nil, statusOf(err)
	}
	return topResponse(r), nil
}

func (s *server) WatchPopularAds(req *clickaggv1.WatchPopularAdsRequest, stream grpc.ServerStreamingServer[clickaggv1.GetPopularAdsResponse]) error {
	n, f, err := s.q.parseWatch(req)
	if err != nil {
		return statusOf(err)
	}
	err = s.q.Watch(stream.Context(), n, f, func(r TopResult) error {
		return stream.Send(topResponse(r))
	})
	s.q.m.observe(rpcWatch, time.Time{}, err)
	return statusOf(err)
}

// statusOf is the one place where errors become status codes.
func statusOf(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrStopped):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, ErrTooSlow):
		return status.Error(codes.ResourceExhausted, "watcher fell behind the published minutes: read faster, or watch again to resume from the newest minute")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if s, ok := status.FromError(err); ok {
		return s.Err() // a stream's own error, already a status
	}
	return status.Error(codes.Internal, err.Error())
}

// NewHTTPHandler serves the QueryService's HTTP mapping
// (GET /v1/ads/{ad_id}/aggregated_count, GET /v1/ads/popular_ads) by calling
// srv in process. JSON answers include zero values, so that "complete":
// false and "count": "0" are spelled out.
func NewHTTPHandler(ctx context.Context, srv clickaggv1.QueryServiceServer) (http.Handler, error) {
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}))
	if err := clickaggv1.RegisterQueryServiceHandlerServer(ctx, mux, srv); err != nil {
		return nil, fmt.Errorf("register query HTTP handlers: %w", err)
	}
	return mux, nil
}

// invalid is a refused request; its text is the message the caller gets.
type invalid string

func (e invalid) Error() string        { return string(e) }
func (e invalid) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error { return invalid(fmt.Sprintf(format, args...)) }

type countQuery struct {
	adID     string
	from, to int64
	filter   Filter
}

// parseCount checks a count request and resolves its window to minutes.
func (q *Queryd) parseCount(req *clickaggv1.GetAggregatedCountRequest) (countQuery, error) {
	maxW := q.cfg.maxWindowMinutes()
	if req.GetAdId() == "" {
		return countQuery{}, invalidf("ad_id is required")
	}
	if err := checkID("ad_id", req.GetAdId(), q.maxIDLength()); err != nil {
		return countQuery{}, err
	}
	f, err := q.canonicalFilter(req.GetFilter())
	if err != nil {
		return countQuery{}, err
	}
	cq := countQuery{adID: req.GetAdId(), filter: f}
	hasFrom, hasTo, last := req.GetFrom() != nil, req.GetTo() != nil, req.GetLastMinutes()
	switch {
	case last != 0 && (hasFrom || hasTo):
		return countQuery{}, invalidf("set either from and to, or last_minutes, not both")
	case last != 0:
		if last < 0 || int64(last) > maxW {
			return countQuery{}, invalidf("last_minutes %d: must be in [1, %d]", last, maxW)
		}
		cur := q.now().Unix() / 60
		cq.from, cq.to = cur-int64(last)+1, cur+1
		return cq, nil
	case !hasFrom && !hasTo:
		return countQuery{}, invalidf("set from and to, or last_minutes")
	case !hasFrom || !hasTo:
		return countQuery{}, invalidf("from and to must be set together")
	}
	if cq.from, err = minuteOf("from", req.GetFrom()); err != nil {
		return countQuery{}, err
	}
	if cq.to, err = minuteOf("to", req.GetTo()); err != nil {
		return countQuery{}, err
	}
	if cq.from >= cq.to {
		return countQuery{}, invalidf("from %s must be before to %s", timeText(cq.from), timeText(cq.to))
	}
	if w := cq.to - cq.from; w > maxW {
		return countQuery{}, invalidf("window from %s to %s is %d minutes long, at most %d allowed", timeText(cq.from), timeText(cq.to), w, maxW)
	}
	return cq, nil
}

type topQueryReq struct {
	n        int
	from, to int64
	filter   Filter
}

// parseTop checks a popular-ads request and applies its defaults.
func (q *Queryd) parseTop(req *clickaggv1.GetPopularAdsRequest) (topQueryReq, error) {
	n, err := q.count(req.GetCount())
	if err != nil {
		return topQueryReq{}, err
	}
	maxW := q.cfg.maxWindowMinutes()
	w := int64(req.GetWindowMinutes())
	if w == 0 {
		w = 1
	}
	if w < 0 || w > maxW {
		return topQueryReq{}, invalidf("window_minutes %d: must be in [1, %d] (0 means 1)", req.GetWindowMinutes(), maxW)
	}
	end := q.now().Unix()/60 + 1
	if req.GetEnd() != nil {
		if end, err = minuteOf("end", req.GetEnd()); err != nil {
			return topQueryReq{}, err
		}
	}
	f, err := q.canonicalFilter(req.GetFilter())
	if err != nil {
		return topQueryReq{}, err
	}
	return topQueryReq{n: n, from: end - w, to: end, filter: f}, nil
}

func (q *Queryd) parseWatch(req *clickaggv1.WatchPopularAdsRequest) (int, Filter, error) {
	n, err := q.count(req.GetCount())
	if err != nil {
		return 0, Filter{}, err
	}
	f, err := q.canonicalFilter(req.GetFilter())
	if err != nil {
		return 0, Filter{}, err
	}
	return n, f, nil
}

func (q *Queryd) count(c int32) (int, error) {
	if c == 0 {
		return q.cfg.DefaultCount, nil
	}
	if c < 0 || int(c) > q.cfg.MaxCount {
		return 0, invalidf("count %d: must be in [1, %d] (0 means %d)", c, q.cfg.MaxCount, q.cfg.DefaultCount)
	}
	return int(c), nil
}

// minuteOf returns the Unix minute that ts starts.
func minuteOf(field string, ts *timestamppb.Timestamp) (int64, error) {
	if err := ts.CheckValid(); err != nil {
		// CheckValid's own text prints the message in protobuf text format,
		// whose spacing is randomized on purpose; say it in stable words.
		if n := ts.GetNanos(); n < 0 || n > 999_999_999 {
			return 0, invalidf("%s is not a valid timestamp: nanos %d is outside [0, 999999999]", field, n)
		}
		return 0, invalidf("%s is not a valid timestamp: seconds %d is outside the years 0001 to 9999", field, ts.GetSeconds())
	}
	if ts.GetSeconds()%60 != 0 || ts.GetNanos() != 0 {
		return 0, invalidf("%s %s is not minute-aligned: seconds and fractions must be zero", field, ts.AsTime().Format(time.RFC3339Nano))
	}
	return ts.GetSeconds() / 60, nil
}

func timeText(minute int64) string {
	return time.Unix(minute*60, 0).UTC().Format(time.RFC3339)
}

// canonicalFilter returns f in the form the router stores events in, so
// that a filter matches however the caller spelled it.
func (q *Queryd) canonicalFilter(f *clickaggv1.Filter) (Filter, error) {
	out := Filter{UserID: f.GetUserId()}
	if u := f.GetUserId(); u != "" {
		if err := checkID("filter.user_id", u, q.maxIDLength()); err != nil {
			return Filter{}, err
		}
	}
	if c := f.GetCountry(); c != "" {
		if len(c) != 2 || !asciiLetter(c[0]) || !asciiLetter(c[1]) {
			return Filter{}, invalidf("filter.country %s is not an ISO 3166-1 alpha-2 code (two letters, such as \"US\")", quote(c))
		}
		out.Country = strings.ToUpper(c)
	}
	if s := f.GetIp(); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return Filter{}, invalidf("filter.ip %s is not a valid IPv4 or IPv6 address", quote(s))
		}
		if a.Zone() != "" {
			return Filter{}, invalidf("filter.ip %s has an IPv6 zone (%s), which events never have", quote(s), quote(a.Zone()))
		}
		// The router writes IPv4-mapped IPv6 addresses as IPv4.
		out.IP = a.Unmap().String()
	}
	return out, nil
}

// checkID applies the routers' rules for ids (package router) to a
// non-empty id of a query. An id the routers would refuse was never
// counted; refused here, it gets INVALID_ARGUMENT at once instead of a
// fan-out that answers 0, or that fails UNAVAILABLE after -queryd.move-wait
// because invalid UTF-8 cannot be sent on to the aggregators.
func checkID(field, s string, maxLen int) error {
	if len(s) > maxLen {
		return invalidf("%s is %d bytes long, at most %d allowed", field, len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return invalidf("%s is not valid UTF-8", field)
	}
	for i, c := range s {
		if unicode.IsControl(c) {
			return invalidf("%s contains control character %U at byte %d", field, c, i)
		}
	}
	return nil
}

func asciiLetter(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
}

// quoteMax bounds how much of a caller's value a message repeats.
const quoteMax = 64

func quote(s string) string {
	if len(s) <= quoteMax {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:quoteMax], len(s))
}
