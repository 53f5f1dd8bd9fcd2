package authz

import (
	"context"
	"crypto/tls"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// checkCall decides a gRPC call from its peer's TLS state and its
// metadata.
func (a *Authorizer) checkCall(ctx context.Context, fullMethod string) decision {
	var state *tls.ConnectionState
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			state = &info.State
		}
	}
	var authorization string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			authorization = v[0]
		}
	}
	return a.check(fullMethod, state, authorization)
}

// UnaryInterceptor authorizes unary calls and audits admin calls.
func (a *Authorizer) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	d := a.checkCall(ctx, info.FullMethod)
	if d.open {
		return handler(ctx, req)
	}
	var resp any
	err := d.err
	if err == nil {
		resp, err = handler(withCaller(ctx, d.caller), req)
	}
	if d.perm == Admin {
		caller := "anonymous"
		if d.caller.Kind != "" {
			caller = d.caller.String()
		}
		audit(ctx, a.audit, caller, info.FullMethod, req, err)
	}
	return resp, err
}

// AuditInterceptor writes the audit line of every admin call on a server
// without authorization, where a caller is only its address: changes to
// the cluster leave a trace either way.
func AuditInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	log = log.With("log", "audit")
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if p, _, _ := Method(info.FullMethod); p == Admin {
			audit(ctx, log, "unauthenticated (authorization off)", info.FullMethod, req, err)
		}
		return resp, err
	}
}

// StreamInterceptor authorizes streaming calls. No streaming method
// needs admin, so none is audited.
func (a *Authorizer) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	d := a.checkCall(ss.Context(), info.FullMethod)
	if d.open {
		return handler(srv, ss)
	}
	if d.err != nil {
		return d.err
	}
	return handler(srv, &callerStream{ServerStream: ss, ctx: withCaller(ss.Context(), d.caller)})
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }

// audit writes one line for an admin call, allowed or not: who, from
// where, what, with which request, and how it ended.
func audit(ctx context.Context, log *slog.Logger, caller, method string, req any, err error) {
	from := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	request := ""
	if m, ok := req.(proto.Message); ok {
		if b, merr := protojson.Marshal(m); merr == nil {
			request = string(b)
		}
	}
	args := []any{"caller", caller, "method", method, "request", request, "code", status.Code(err).String(), "peer", from}
	if err != nil {
		args = append(args, "err", status.Convert(err).Message())
	}
	log.Info("admin call", args...)
}
