package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/clickagg/clickagg/authz"
	"github.com/clickagg/clickagg/grpcclient"
	"github.com/clickagg/clickagg/grpcserver"
	clickhealth "github.com/clickagg/clickagg/health"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ratelimit"
	"github.com/clickagg/clickagg/tlsconf"
)

// grpcParts are the gRPC server and what is built with it: the metrics it
// counts in, the Redis gate it checks, the security the HTTP server and
// the calls to other members share.
type grpcParts struct {
	reg     *prometheus.Registry
	gm      *grpcprom.ServerMetrics
	gate    *clickhealth.Gate
	gs      *grpc.Server
	hs      *health.Server
	az      *authz.Authorizer // nil without -auth.policy-file
	httpTLS *tls.Config       // nil: the HTTP server is plaintext
	dial    *dialer
	mux     *http.ServeMux
}

// newGRPCServer builds the gRPC server every role registers on: TLS,
// authorization, the Redis gate, the per-caller ingest limit when the
// process runs a router, health and reflection. The metrics interceptors
// come first, so that they count the refusals of the gate's and
// grpcserver's.
func (p *process) newGRPCServer(useRedis, isRouter bool) error {
	cfg := p.cfg
	p.reg = newRegistry()
	p.gm = grpcMetrics(p.reg)
	p.gate = clickhealth.NewGate()
	if !useRedis {
		p.gate.Pass()
	}
	sec, err := p.security()
	if err != nil {
		return err
	}
	srvOpts := append([]grpc.ServerOption{grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize)}, sec.opts...)
	unary := append([]grpc.UnaryServerInterceptor{p.gm.UnaryServerInterceptor()}, sec.unary...)
	stream := append([]grpc.StreamServerInterceptor{p.gm.StreamServerInterceptor()}, sec.stream...)
	// The per-caller ingest limit (-router.caller-rate) is innermost: only
	// requests that decoded and got past the gate are charged. Callers are
	// who authorization says they are, else their IP address.
	var callerLimit []grpc.ServerOption
	if rc := cfg.Router; isRouter && rc.CallerRate > 0 {
		callerLimit = ratelimit.New(rc.CallerRate, rc.CallerBurstOrDefault(), callerKey, time.Now, ratelimit.WithMetrics(p.reg)).ServerOptions()
		p.lg.Info("per-caller ingest limit", "clicks_per_second", rc.CallerRate, "burst", rc.CallerBurstOrDefault())
	}
	if sec.az == nil {
		unary = append(unary, authz.AuditInterceptor(p.lg.With("component", "auth")))
	}
	p.gs = grpc.NewServer(append(append(srvOpts,
		grpc.ChainUnaryInterceptor(append(unary, gateUnary(p.gate))...),
		grpc.ChainStreamInterceptor(append(stream, gateStream(p.gate))...),
	), append(grpcserver.Options(cfg.GRPC), callerLimit...)...)...)
	p.hs = health.NewServer()
	// Not ready until the first round of checks says so; live from the
	// start.
	p.hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	p.hs.SetServingStatus(clickhealth.LivenessService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(p.gs, p.hs)
	if cfg.Reflection {
		reflection.Register(p.gs)
	}
	p.az, p.httpTLS = sec.az, sec.httpTLS
	p.dial = newDialer(sec.creds)
	p.onClose(p.dial.Close)
	p.mux = http.NewServeMux()
	p.mux.Handle("/metrics", allow(metricsHandler(p.reg), http.MethodGet, http.MethodHead))
	return nil
}

// security is what TLS and authorization add to the servers and to the
// calls to other members.
type security struct {
	creds   credentials.TransportCredentials
	opts    []grpc.ServerOption
	unary   []grpc.UnaryServerInterceptor
	stream  []grpc.StreamServerInterceptor
	az      *authz.Authorizer
	httpTLS *tls.Config
}

// security loads -tls.* and -auth.*. With TLS the server and every call
// to another member use the same certificate: members are each other's
// clients.
func (p *process) security() (security, error) {
	cfg := p.cfg
	sec := security{creds: insecure.NewCredentials()}
	if !cfg.TLS.Enabled() {
		return sec, nil
	}
	t, err := tlsconf.Load(cfg.TLS, p.lg.With("component", "tls"))
	if err != nil {
		return sec, err
	}
	if cfg.Auth.Enabled() {
		// Client certificates are verified by the authorizer, which
		// answers a bad one with why (see authz).
		t.DeferClientVerification()
		if sec.az, err = authz.New(cfg.Auth, t, p.lg.With("component", "auth"), p.reg); err != nil {
			return sec, err
		}
		// Authorization before the gate and the codec's checks: a
		// caller who may not call learns nothing else.
		sec.unary = append(sec.unary, sec.az.UnaryInterceptor)
		sec.stream = append(sec.stream, sec.az.StreamInterceptor)
	}
	sec.creds = t.ClientCredentials()
	sec.opts = append(sec.opts, grpc.Creds(t.ServerCredentials()))
	if cfg.TLS.CertFile != "" {
		sec.httpTLS = t.HTTPServerConfig()
	}
	return sec, nil
}

// callerKey names the caller of an ingest call for its rate limit: its
// identity when authorization is on, else its IP address.
func callerKey(ctx context.Context) string {
	if c, ok := authz.CallerFrom(ctx); ok {
		return c.String()
	}
	return ratelimit.PeerIP(ctx)
}

// dialer keeps one client connection per aggregator address.
type dialer struct {
	creds credentials.TransportCredentials
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newDialer(creds credentials.TransportCredentials) *dialer {
	return &dialer{creds: creds, conns: map[string]*grpc.ClientConn{}}
}

func (d *dialer) Aggregator(addr string) (clickaggv1.AggregatorServiceClient, error) {
	c, err := d.Conn(addr)
	if err != nil {
		return nil, err
	}
	return clickaggv1.NewAggregatorServiceClient(c), nil
}

// Conn returns the connection to the gRPC server at addr.
func (d *dialer) Conn(addr string) (grpc.ClientConnInterface, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpcclient.With(grpc.WithTransportCredentials(d.creds))...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	d.conns[addr] = c
	return c, nil
}

func (d *dialer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
}
