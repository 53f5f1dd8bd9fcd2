package grpcserver

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Options returns the server options of cfg: the codec with its
// interceptors, the stream caps and the keepalive policy. Append them to
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
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(c),
		grpc.ChainUnaryInterceptor(c.unaryInterceptor),
		grpc.ChainStreamInterceptor(l.streamInterceptor, c.streamInterceptor),
		grpc.StatsHandler(l),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(ka),
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
