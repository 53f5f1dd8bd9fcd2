package grpcserver

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Options returns the server options of cfg: the codec with its
// interceptors, the bound on unary calls, the stream caps and the
// keepalive policy. Append them to
// the caller's own options; interceptors chain in the order given, so that
// a metrics interceptor before these sees their refusals.
func Options(cfg Config) []grpc.ServerOption {
	c := newCodec()
	l := &limiter{perConn: int64(cfg.MaxStreamsPerConn), total: int64(cfg.MaxStreams)}
	ka := keepalive.ServerParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout}
	// grpc reads 0 as infinite, as the flags do.
	if cfg.MaxConnectionIdle > 0 {
		ka.MaxConnectionIdle = cfg.MaxConnectionIdle
	}
	if cfg.MaxConnectionAge > 0 {
		ka.MaxConnectionAge = cfg.MaxConnectionAge
		ka.MaxConnectionAgeGrace = cfg.MaxConnectionAgeGrace
	}
	unary := []grpc.UnaryServerInterceptor{c.unaryInterceptor}
	if cfg.CallTimeout > 0 {
		unary = append(unary, callTimeout(cfg.CallTimeout))
	}
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(c),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(l.streamInterceptor, c.streamInterceptor),
		grpc.StatsHandler(l),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(ka),
	}
}

// callTimeout bounds each unary call's context by d. A client without a
// deadline (grpcurl without -max-time) waiting on a call whose own call
// waits on a hung peer (etcd stopped, its connection open) would
// otherwise hold the handler's goroutine for as long as the peer hangs.
// When the bound, not the client's deadline, ended the call, its
// DEADLINE_EXCEEDED names the flag.
func callTimeout(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		cctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		resp, err := handler(cctx, req)
		if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, status.Errorf(codes.DeadlineExceeded, "the server did not answer within -grpc.call-timeout=%v: %v", d, status.Convert(err).Message())
		}
		return resp, err
	}
}

// limiter counts the open streaming RPCs per connection and in all. As a
// stats.Handler it gives each connection its counter (TagConn), which the
// contexts of the connection's RPCs carry.
type limiter struct {
	perConn, total int64
	open           atomic.Int64
}

type connKey struct{}

// connStreams is the number of streaming RPCs open on one connection.
type connStreams struct{ open atomic.Int64 }

func (l *limiter) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	conn, _ := ss.Context().Value(connKey{}).(*connStreams)
	if conn == nil {
		// Not served through a connection this limiter tagged (ServeHTTP):
		// count it in the total only.
		conn = &connStreams{}
	}
	if conn.open.Add(1) > l.perConn {
		conn.open.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "too many streams open on this connection, at most %d allowed (-grpc.max-streams-per-conn): end one, or open another connection", l.perConn)
	}
	defer conn.open.Add(-1)
	if l.open.Add(1) > l.total {
		l.open.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "too many streams open on this server, at most %d allowed (-grpc.max-streams): retry later or at another server", l.total)
	}
	defer l.open.Add(-1)
	return handler(srv, ss)
}

func (l *limiter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connKey{}, &connStreams{})
}

func (*limiter) HandleConn(context.Context, stats.ConnStats) {}

func (*limiter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (*limiter) HandleRPC(context.Context, stats.RPCStats) {}
