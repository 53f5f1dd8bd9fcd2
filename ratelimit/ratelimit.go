package ratelimit

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// minSweepEvery is the least time between two sweeps by age, so that a
// short fill time does not make every new caller sweep the whole map.
const minSweepEvery = time.Minute

// maxFill caps the fill time and the retry delay of a tiny rate, where
// burst/rate would overflow a Duration.
const maxFill = 100 * 365 * 24 * time.Hour

// minSweepSize is the least size of the map that makes it swept for its
// size.
const minSweepSize = 1024

// Limiter keeps a token bucket per caller.
type Limiter struct {
	rate  rate.Limit
	burst int
	fill  time.Duration // burst/rate: a bucket idle this long is full
	key   func(context.Context) string
	now   func() time.Time

	mu        sync.Mutex
	callers   map[string]*bucket
	lastSweep time.Time
	nextSweep int // sweep for size when the map reaches it

	refusedRequests, refusedClicks prometheus.Counter
}

// Option configures a Limiter.
type Option func(*Limiter)

// WithMetrics registers the limiter's metrics on reg: the requests and
// clicks refused, and the callers' buckets kept. No caller label: callers
// are unbounded; the refused client reads its name in the status.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(l *Limiter) {
		reg.MustRegister(l.refusedRequests, l.refusedClicks, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "clickagg_router_caller_buckets",
			Help: "Callers whose -router.caller-rate bucket is kept: those seen lately.",
		}, func() float64 { return float64(l.Callers()) }))
	}
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time // when it was last asked: it is full fill after it
}

// New returns a limiter of perSecond clicks per caller, at most burst at
// once, the caller of a call named by key. perSecond must be positive and
// burst at least 1.
func New(perSecond float64, burst int, key func(context.Context) string, now func() time.Time, opts ...Option) *Limiter {
	fill := maxFill
	if f := float64(burst) / perSecond * float64(time.Second); f < float64(maxFill) {
		fill = time.Duration(f)
	}
	l := &Limiter{
		rate: rate.Limit(perSecond), burst: burst, fill: fill, key: key, now: now,
		callers: map[string]*bucket{}, lastSweep: now(), nextSweep: minSweepSize,
		refusedRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_router_caller_refused_requests_total",
			Help: "Ingest requests (unary calls and stream messages) refused for their caller's -router.caller-rate.",
		}),
		refusedClicks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_router_caller_refused_clicks_total",
			Help: "Clicks of the requests refused for their caller's -router.caller-rate.",
		}),
	}
	for _, o := range opts {
		o(l)
	}
	return l
}

// PeerIP names the caller by the IP address of the call's peer: every
// connection from one host is one caller. Without a TCP peer it is the
// peer's address as it is written, or "unknown".
func PeerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return p.Addr.String()
}

// Allow charges n clicks to the caller of ctx and returns nil, or, when
// the caller's rate does not allow them now, charges nothing and returns
// the RESOURCE_EXHAUSTED status to answer.
func (l *Limiter) Allow(ctx context.Context, n int) error {
	if n <= 0 || n > l.burst {
		// Empty and oversized requests are the router's to refuse.
		return nil
	}
	caller := l.key(ctx)
	now := l.now()
	r := l.bucket(caller, now).ReserveN(now, n)
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	r.CancelAt(now)
	l.refusedRequests.Inc()
	l.refusedClicks.Add(float64(n))
	d = retryAfter(d)
	st := status.New(codes.ResourceExhausted, fmt.Sprintf(
		"caller %s sends more than -router.caller-rate=%s clicks/s (bursts of up to -router.caller-burst=%d): this request of %s is refused, none of it counted; retry in %v",
		caller, strconv.FormatFloat(float64(l.rate), 'f', -1, 64), l.burst, clicks(n), d))
	if ds, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); err == nil {
		st = ds
	}
	return st.Err()
}

func clicks(n int) string {
	if n == 1 {
		return "1 click"
	}
	return strconv.Itoa(n) + " clicks"
}

// retryAfter rounds d up to a tenth of a second, for a hint a person can
// read; the request passes then if the caller sends nothing meanwhile.
func retryAfter(d time.Duration) time.Duration {
	const step = 100 * time.Millisecond
	return (min(d, maxFill) + step - 1).Truncate(step)
}

// bucket returns caller's bucket, marked used at now, and sweeps the map
// when it is due.
func (l *Limiter) bucket(caller string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.callers[caller]
	if !ok {
		if len(l.callers) >= l.nextSweep || now.Sub(l.lastSweep) >= max(l.fill, minSweepEvery) {
			l.sweep(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.callers[caller] = b
	}
	b.last = now
	return b.lim
}

// sweep drops the buckets idle for the fill time: they are full, as a
// new one would be.
func (l *Limiter) sweep(now time.Time) {
	for k, b := range l.callers {
		if now.Sub(b.last) >= l.fill {
			delete(l.callers, k)
		}
	}
	l.lastSweep = now
	l.nextSweep = max(2*len(l.callers), minSweepSize)
}

// Callers returns how many callers' buckets are kept, for tests.
func (l *Limiter) Callers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.callers)
}

// batch is an IngestRequest or an IngestStreamRequest.
type batch interface {
	GetEvents() []*clickaggv1.ClickEvent
}

var ingestPrefix = "/" + clickaggv1.IngestService_ServiceDesc.ServiceName + "/"

// UnaryServerInterceptor charges each unary Ingest its events.
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if b, ok := req.(batch); ok && strings.HasPrefix(info.FullMethod, ingestPrefix) {
			if err := l.Allow(ctx, len(b.GetEvents())); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor charges each IngestStream message its events
// as it is received.
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, ingestPrefix) {
			return handler(srv, ss)
		}
		return handler(srv, &limitedStream{ServerStream: ss, l: l})
	}
}

// limitedStream refuses a received message over the caller's rate.
type limitedStream struct {
	grpc.ServerStream
	l *Limiter
}

func (s *limitedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if b, ok := m.(batch); ok {
		return s.l.Allow(s.Context(), len(b.GetEvents()))
	}
	return nil
}

// ServerOptions returns the interceptors as gRPC server options.
func (l *Limiter) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(l.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(l.StreamServerInterceptor()),
	}
}
