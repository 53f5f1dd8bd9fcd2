package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/buildinfo"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/durable"
	clickhealth "github.com/clickagg/clickagg/health"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/queryd"
	"github.com/clickagg/clickagg/redisconf"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/router"
)

// Server is a running clickagg process.
type Server struct {
	cfg   ServerConfig
	roles []string
	lg    *slog.Logger
	ready chan struct{}

	mu         sync.Mutex
	grpcAddr   string
	httpAddr   string
	router     *router.Router
	aggregator *aggregator.Aggregator
	queryd     *queryd.Queryd
}

// NewServer returns a server for cfg; it does no I/O.
func NewServer(cfg ServerConfig, lg *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	roles, _ := cfg.Roles()
	return &Server{cfg: cfg, roles: roles, lg: lg, ready: make(chan struct{})}, nil
}

// Ready is closed once every role has started and the servers listen.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// GRPCAddr and HTTPAddr are the bound addresses, valid after Ready.
func (s *Server) GRPCAddr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.grpcAddr }

// HTTPAddr is the bound HTTP address, empty when disabled.
func (s *Server) HTTPAddr() string { s.mu.Lock(); defer s.mu.Unlock(); return s.httpAddr }

func (s *Server) has(role string) bool { return slices.Contains(s.roles, role) }

// usesRedis reports whether a role of the process reads or writes Redis;
// only the coordinator does not.
func (s *Server) usesRedis() bool { return usesRedis(s.roles) }

// checkReplicas refuses to start when -redis.wait-replicas asks more
// replicas than a primary has (durable.Writer.Check): every append and
// snapshot would fail. A single server that does not answer yet is not
// checked (see Run); its writes fail with the same setting named until it
// has them.
func checkReplicas(ctx context.Context, rc redisconf.Config, w *durable.Writer) error {
	if rc.WaitReplicas == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := w.Check(cctx)
	if err == nil || (!errors.Is(err, durable.ErrTooFewReplicas) && rc.ClusterAddrs == "" && rc.SentinelMaster == "") {
		return nil
	}
	return fmt.Errorf("redis: %w", err)
}

// Run runs the roles until ctx ends. A process whose roles use Redis
// connects to it as -redis.* say: a Redis Cluster's seeds and a
// Sentinel's master are checked there, and Run fails at once, naming the
// flag, when they are wrong (see redisconf), as when a primary has fewer
// replicas than -redis.wait-replicas asks (checkReplicas). Every
// append and snapshot write then waits for them (package durable). It
// then checks that it is its
// cluster's Redis (health.VerifyRedis), retrying while Redis cannot be
// reached: until then the aggregator does not register and ingest and
// queries are refused; a wrong Redis ends Run with health.ErrWrongRedis,
// and a Redis that refuses the password with redisconf.ErrCredentials,
// naming -redis.password-file. Readiness (gRPC health, /readyz) is
// checked all along (see readiness). Run shuts down in this order:
//  1. health reports NOT_SERVING, so probes and balancers stop sending;
//  2. the aggregator leaves: the coordinator hands its partitions over live
//     while the gRPC server still answers (bounded by
//     -aggregator.leave-timeout);
//  3. wait -shutdown.drain-delay;
//  4. gRPC GracefulStop bounded by -shutdown.timeout (then Stop), HTTP Shutdown;
//  5. the roles stop: the aggregator writes its final snapshots, then every
//     role releases its etcd lease;
//  6. the Redis and etcd clients close.
func (s *Server) Run(ctx context.Context) error {
	p := &process{cfg: s.cfg, lg: s.lg}
	defer p.close()
	if err := p.connect(ctx, s.usesRedis()); err != nil {
		return err
	}
	if err := p.listen(); err != nil {
		return err
	}
	if err := p.newGRPCServer(s.usesRedis(), s.has(RoleRouter)); err != nil {
		return err
	}
	p.startRoleGroup(ctx)
	if s.usesRedis() {
		p.verifyRedis()
	}
	var follower *hotkey.Follower
	var err error
	if s.has(RoleRouter) || s.has(RoleQueryd) {
		if follower, err = p.startFollower(ctx, s.has(RoleRouter)); err != nil {
			return err
		}
	}
	if s.has(RoleRouter) {
		s.router = p.startRouter(follower)
	}
	if s.has(RoleAggregator) {
		if s.aggregator, err = p.startAggregator(ctx); err != nil {
			return err
		}
	}
	var coord clickaggv1.CoordinatorServiceServer
	if s.has(RoleCoordinator) {
		coord = p.startCoordinator()
	}
	if s.has(RoleQueryd) {
		if s.queryd, err = p.startQueryd(follower); err != nil {
			return err
		}
	}
	if err := p.serveClusterAPI(coord); err != nil {
		return err
	}
	if err := p.serveConsole(s.roles); err != nil {
		return err
	}
	if err := p.registerMembers(ctx, s.roles); err != nil {
		return err
	}
	p.waitForSplits(ctx, follower)
	s.startChecker(p, follower)
	serveErr := p.serve()
	s.started(p)
	return s.shutdown(ctx, p, p.wait(ctx, serveErr))
}

// process is what the roles of one Run share. Run builds it in steps
// (connect, listen, newGRPCServer, startRoleGroup), starts the roles on
// it, and closes it when it returns: its closers run in the reverse order
// of their registration, as deferred calls would, so the memberships are
// revoked before the clients they use close.
type process struct {
	cfg ServerConfig
	lg  *slog.Logger

	// Set by connect.
	rdb        redis.UniversalClient // nil when no role uses Redis
	w          *durable.Writer       // runs the writes that are acknowledged; nil without rdb
	cl         *cluster.Client
	partitions int
	parts      *ring.Partitioner
	plog       *partlog.Log
	splits     *hotkey.Store // the split table of hot ads

	// Set by listen.
	lis       net.Listener
	httpLis   net.Listener // nil without -http.addr
	advertise string       // the address other members dial
	// httpAdvertise is the HTTP address registered for consoles and
	// operators: the advertised gRPC host with the HTTP port; empty
	// without -http.addr.
	httpAdvertise string

	grpcParts // set by newGRPCServer

	// Set by startRoleGroup: the roles run in g until stopRoles, which
	// shutdown calls only once the gRPC server has stopped.
	g         *errgroup.Group
	gctx      context.Context
	stopRoles context.CancelFunc
	services  []string // the roles' gRPC services, for the health checks

	// Set by startChecker and serve.
	checker *clickhealth.Checker
	hsrv    *http.Server // nil without -http.addr

	closers []func()
}

// onClose registers f to run when Run returns.
func (p *process) onClose(f func()) { p.closers = append(p.closers, f) }

func (p *process) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// redisPoolSize is the process's connections per Redis server: the
// router's appends in flight, the aggregator's reads and snapshot writes
// and queryd's publications share them.
const redisPoolSize = 64

// connect connects to Redis when a role uses it, and to etcd, and reads or
// creates the cluster's partition count.
func (p *process) connect(ctx context.Context, useRedis bool) error {
	cfg := p.cfg
	if useRedis {
		rc := cfg.Redis
		var err error
		if p.rdb, err = rc.NewClient(ctx, redisPoolSize); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		p.onClose(func() { _ = p.rdb.Close() })
		p.lg.Info("using redis", "redis", rc.String(), "wait_replicas", rc.WaitReplicas, "redis_prefix", cfg.RedisPrefix)
		p.w = durable.New(p.rdb, rc.Durability())
		if err := checkReplicas(ctx, rc, p.w); err != nil {
			return err
		}
	}
	etcd, err := cluster.Dial(ctx, cfg.Cluster, p.lg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	p.onClose(func() { _ = etcd.Close() })
	p.cl = cluster.NewClient(etcd, cfg.Cluster.Prefix)
	if p.partitions, err = ensurePartitions(ctx, p.cl, cfg.Partitions); err != nil {
		return err
	}
	if p.parts, err = ring.NewPartitioner(p.partitions); err != nil {
		return err
	}
	p.plog = partlog.New(p.rdb, cfg.RedisPrefix, partlog.WithWriter(p.w))
	p.splits = hotkey.NewStore(etcd, cfg.Cluster.Prefix, p.partitions)
	return nil
}

// listen opens the gRPC and HTTP listeners and works out the address
// other members dial.
func (p *process) listen() error {
	cfg := p.cfg
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	p.onClose(func() { _ = lis.Close() })
	p.lis = lis
	if cfg.AdvertiseAddr == "" {
		p.advertise = advertiseAddr(lis.Addr().(*net.TCPAddr))
	} else if p.advertise, err = canonicalAdvertise(cfg.AdvertiseAddr); err != nil {
		return err
	}
	if cfg.HTTPAddr != "" {
		httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("http listen: %w", err)
		}
		p.onClose(func() { _ = httpLis.Close() })
		p.httpLis = httpLis
		p.httpAdvertise = httpAdvertise(p.advertise, httpLis.Addr().(*net.TCPAddr))
	}
	return nil
}

// httpAdvertise is the HTTP address other processes and browsers reach
// this one at: the host of the advertised gRPC address, which is already
// the name others resolve (a pod IP, a hostname, -grpc.advertise-addr),
// with the port HTTP listens on. A separate flag would be one more thing
// to keep in step for the same host.
func httpAdvertise(grpcAdvertise string, httpLis *net.TCPAddr) string {
	host, _, err := net.SplitHostPort(grpcAdvertise)
	if err != nil {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(httpLis.Port))
}

// startRoleGroup starts the group the roles run in. Its context outlives
// ctx: the roles must keep running through the first steps of shutdown.
func (p *process) startRoleGroup(ctx context.Context) {
	roleCtx, stopRoles := context.WithCancel(context.WithoutCancel(ctx))
	p.onClose(stopRoles)
	p.stopRoles = stopRoles
	p.g, p.gctx = errgroup.WithContext(roleCtx)
}

// started publishes the bound addresses and closes s.ready.
func (s *Server) started(p *process) {
	s.mu.Lock()
	s.grpcAddr = p.lis.Addr().String()
	if p.httpLis != nil {
		s.httpAddr = p.httpLis.Addr().String()
	}
	s.mu.Unlock()
	s.lg.Info("clickagg started", "roles", strings.Join(s.roles, ","), "member", s.cfg.ID, "version", buildinfo.Get().Version,
		"grpc", s.grpcAddr, "advertise", p.advertise, "http", s.httpAddr, "partitions", p.partitions)
	close(s.ready)
}

// ensurePartitions reads or creates the cluster's partition count: want,
// which another stored count refuses (cluster.ErrPartitionsMismatch), or
// for 0 the stored count, else DefaultPartitions.
func ensurePartitions(ctx context.Context, cl *cluster.Client, want int) (int, error) {
	if want != 0 {
		n, err := cl.EnsurePartitions(ctx, want)
		if errors.Is(err, cluster.ErrPartitionsMismatch) {
			return n, fmt.Errorf("-cluster.partitions %d: %w; give the cluster's count, or 0", want, err)
		}
		return n, err
	}
	n, err := cl.EnsurePartitions(ctx, 0)
	if !errors.Is(err, cluster.ErrNoPartitions) {
		return n, err
	}
	n, err = cl.EnsurePartitions(ctx, DefaultPartitions)
	if errors.Is(err, cluster.ErrPartitionsMismatch) {
		// Another process created the cluster meanwhile, with its count:
		// that is the count the cluster has.
		return n, nil
	}
	return n, err
}

func advertiseAddr(a *net.TCPAddr) string {
	port := strconv.Itoa(a.Port)
	if a.IP.IsUnspecified() {
		host, err := os.Hostname()
		if err != nil {
			host = "localhost"
		}
		return net.JoinHostPort(host, port)
	}
	return net.JoinHostPort(a.IP.String(), port)
}
