package cli

import (
	"context"
	"net/http"
	"strings"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/cluster"
	clickhealth "github.com/clickagg/clickagg/health"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// readiness adds what each role needs to be ready:
//
//	every role:  etcd answers
//	router:      its Redis is the cluster's and accepts writes (appends),
//	             or refuses them only for memory (the router says so to
//	             every client); the split table is confirmed current
//	aggregator:  its Redis is the cluster's and accepts writes
//	             (snapshots); registered, and every partition it is
//	             assigned serves; not giving its partitions back
//	queryd:      its Redis is the cluster's and answers; the split table
//	             is confirmed current; it has the assignment and the
//	             members (a partition without an owner fails only its own
//	             queries)
func (s *Server) readiness(c *clickhealth.Checker, gate *clickhealth.Gate, etcd func(context.Context) error, rdb redis.UniversalClient, follower *hotkey.Follower) {
	c.Add("etcd", etcd)
	if s.usesRedis() {
		c.Add("redis identity", gate.Check)
		switch {
		case s.has(RoleAggregator):
			c.Add("redis", clickhealth.RedisWritable(rdb, clickhealth.ProbeKey(s.cfg.RedisPrefix, RoleAggregator, s.cfg.ID)))
		case s.has(RoleRouter):
			// A full Redis leaves a router ready: it answers clicks with
			// UNAVAILABLE naming Redis memory (RedisWritableOrFull).
			c.Add("redis", clickhealth.RedisWritableOrFull(rdb, clickhealth.ProbeKey(s.cfg.RedisPrefix, RoleRouter, s.cfg.ID)))
		default:
			c.Add("redis", clickhealth.RedisReachable(rdb))
		}
	}
	if follower != nil {
		c.Add("split table", func(context.Context) error {
			_, err := follower.Table()
			return err
		})
	}
	if s.aggregator != nil {
		a := s.aggregator
		c.Add("partitions", func(context.Context) error { return a.Serving() })
	}
	if s.queryd != nil {
		q := s.queryd
		c.Add("owners", func(context.Context) error { return q.Routable() })
	}
}

// etcdCheck returns a check that etcd answers a read of the cluster's
// configuration.
func etcdCheck(cl *cluster.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := cl.EnsurePartitions(ctx, 0)
		return err
	}
}

// errNotVerified is the answer to ingest and queries before the process
// has verified its Redis: an append could go to a Redis nobody reads.
const notVerified = "this process has not yet verified that its Redis is the cluster's; retry"

var errNotVerified = status.Error(codes.Unavailable, notVerified)

// gated reports whether method needs a verified Redis.
func gated(method string) bool {
	return strings.HasPrefix(method, "/"+clickaggv1.IngestService_ServiceDesc.ServiceName+"/") ||
		strings.HasPrefix(method, "/"+clickaggv1.QueryService_ServiceDesc.ServiceName+"/")
}

func gateUnary(g *clickhealth.Gate) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if gated(info.FullMethod) && g.Check(ctx) != nil {
			return nil, errNotVerified
		}
		return handler(ctx, req)
	}
}

func gateStream(g *clickhealth.Gate) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if gated(info.FullMethod) && g.Check(ss.Context()) != nil {
			return errNotVerified
		}
		return handler(srv, ss)
	}
}

func gateHTTP(g *clickhealth.Gate, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.Check(r.Context()); err != nil {
			http.Error(w, notVerified, http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}
