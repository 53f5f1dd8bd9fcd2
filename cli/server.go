package cli

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/authz"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/coordinator"
	"github.com/clickagg/clickagg/durable"
	"github.com/clickagg/clickagg/grpcserver"
	clickhealth "github.com/clickagg/clickagg/health"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/partlog"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/queryd"
	"github.com/clickagg/clickagg/ratelimit"
	"github.com/clickagg/clickagg/redisconf"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/router"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/tlsconf"
	"github.com/clickagg/clickagg/toplist"
)

// Roles a process can run.
const (
	RoleRouter      = "router"
	RoleAggregator  = "aggregator"
	RoleCoordinator = "coordinator"
	RoleQueryd      = "queryd"
)

var allRoles = []string{RoleCoordinator, RoleAggregator, RoleRouter, RoleQueryd}

// ServerConfig is the configuration of a clickagg server process.
type ServerConfig struct {
	Target          string
	ID              string
	GRPCAddr        string
	AdvertiseAddr   string
	HTTPAddr        string
	RedisPrefix     string
	Partitions      int
	MaxRecvMsgSize  int
	LogFormat       string
	LogLevel        string
	DrainDelay      time.Duration
	ShutdownTimeout time.Duration

	// Redis is where the routers, aggregators and queryds find Redis.
	Redis redisconf.Config
	// TLS secures the gRPC server and the members' calls to each other;
	// off without -tls.cert-file or -tls.ca-file.
	TLS tlsconf.Config
	// Auth says who may call what; off without -auth.policy-file.
	Auth       authz.Config
	Reflection bool
	GRPC       grpcserver.Config
	HTTP       HTTPConfig
	Cluster    cluster.Config
	Router     router.Config
	Aggregator aggregator.Config
	// Archive and ArchiveBucket configure the aggregators' raw archive;
	// an empty bucket turns it off.
	Archive       archive.Config
	ArchiveBucket string
	History       history.Config
	Coordinator   coordinator.Config
	Queryd        queryd.Config
	Health        clickhealth.Config
	// HotKey is shared by every role: routers' and queryds' copy of the
	// split table, the coordinator's splits, the aggregators' sketches.
	HotKey hotkey.Config
}

// DefaultPartitions is the partition count of a cluster created without
// -cluster.partitions.
const DefaultPartitions = 64

// RegisterFlags registers the server's flags and those of every component.
func (c *ServerConfig) RegisterFlags(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&c.Target, "target", "all", "roles to run, comma-separated: router, aggregator, coordinator, queryd, or all")
	fs.StringVar(&c.ID, "id", host, "name of this process, unique per role: its member ID in etcd, the router's in every log entry; stable across an aggregator's restarts")
	fs.StringVar(&c.GRPCAddr, "grpc.addr", ":9090", "address the gRPC server listens on (every role's API, health and reflection)")
	fs.StringVar(&c.AdvertiseAddr, "grpc.advertise-addr", "", "host:port other members dial to reach this process (IPv6 with or without brackets); default: the listen address, with the hostname if it listens on all interfaces")
	fs.StringVar(&c.HTTPAddr, "http.addr", ":8080", "address of the HTTP server: /metrics, /healthz (liveness), /readyz (readiness), and queryd's JSON API under /v1/; empty disables it")
	fs.StringVar(&c.RedisPrefix, "redis.prefix", "clickagg", "prefix of every Redis key; clusters sharing a Redis need different prefixes")
	fs.IntVar(&c.Partitions, "cluster.partitions", 0, "number of partitions, fixed when the cluster is created in etcd; 0: what the cluster already has, else 64; another count than the cluster's refuses to start")
	fs.IntVar(&c.MaxRecvMsgSize, "grpc.max-recv-msg-size", 16<<20, "largest gRPC request in bytes; larger ones fail with RESOURCE_EXHAUSTED")
	fs.StringVar(&c.LogFormat, "log.format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log.level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.DrainDelay, "shutdown.drain-delay", 0, "on SIGTERM, time between reporting NOT_SERVING and stopping the gRPC server, so load balancers stop sending first")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown.timeout", 20*time.Second, "longest wait for in-flight RPCs on shutdown before they are cut")
	c.Redis.RegisterFlags(fs)
	c.TLS.RegisterFlags(fs)
	c.Auth.RegisterFlags(fs)
	fs.BoolVar(&c.Reflection, "grpc.reflection", true, "serve gRPC reflection (grpcurl list, describe) to any caller; it reveals the API, not data")
	c.GRPC.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs)
	c.Cluster.RegisterFlags(fs)
	c.Router.RegisterFlags(fs)
	c.Aggregator.RegisterFlags(fs)
	c.Archive.RegisterFlags(fs, &c.ArchiveBucket)
	c.History.RegisterFlags(fs)
	c.Coordinator.RegisterFlags(fs)
	c.Queryd.RegisterFlags(fs)
	c.HotKey.RegisterFlags(fs)
	c.Health.RegisterFlags(fs)
}

// hotKey returns the hot-key configuration with MaxSkew copied from
// -router.max-clock-skew: the coordinator picks effective minutes by how
// far ahead of their clocks routers accept clicks.
func (c *ServerConfig) hotKey() hotkey.Config {
	hk := c.HotKey
	hk.MaxSkew = c.Router.MaxSkew
	return hk
}

// Roles returns the roles named by Target.
func (c *ServerConfig) Roles() ([]string, error) {
	var roles []string
	for _, r := range strings.Split(c.Target, ",") {
		r = strings.TrimSpace(r)
		switch {
		case r == "all":
			roles = append(roles, allRoles...)
		case slices.Contains(allRoles, r):
			roles = append(roles, r)
		default:
			return nil, fmt.Errorf("-target: unknown role %q (want router, aggregator, coordinator, queryd or all)", r)
		}
	}
	slices.Sort(roles)
	return slices.Compact(roles), nil
}

// Validate checks the configuration of the server and of the roles it runs.
func (c *ServerConfig) Validate() error {
	roles, err := c.Roles()
	if err != nil {
		return err
	}
	if c.ID == "" {
		return errors.New("-id: must not be empty")
	}
	if c.Partitions != 0 {
		if _, err := ring.NewPartitioner(c.Partitions); err != nil {
			return fmt.Errorf("-cluster.partitions: %w", err)
		}
	}
	if c.AdvertiseAddr != "" {
		if _, err := canonicalAdvertise(c.AdvertiseAddr); err != nil {
			return err
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("-log.format %q: want text or json", c.LogFormat)
	}
	if err := c.GRPC.Validate(); err != nil {
		return err
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if err := c.Auth.Validate(); err != nil {
		return err
	}
	if c.Auth.Enabled() && c.TLS.CertFile == "" {
		return errors.New("-auth.policy-file: needs -tls.cert-file: certificates and bearer tokens identify callers only over TLS")
	}
	if err := c.HTTP.Validate(); err != nil {
		return err
	}
	if err := c.Cluster.Validate(); err != nil {
		return err
	}
	if err := c.Health.Validate(); err != nil {
		return err
	}
	if usesRedis(roles) {
		if err := c.Redis.Validate(); err != nil {
			return err
		}
	}
	hk := c.hotKey()
	if err := hk.Validate(); err != nil {
		return err
	}
	if slices.Contains(roles, RoleCoordinator) {
		// The coordinator drops ended splits after -hotkey.keep: routers
		// must no longer accept clicks that old, nor aggregators answer
		// for windows that old.
		if k := c.HotKey.Keep; k < c.Router.Horizon || k < c.Aggregator.Retention {
			return fmt.Errorf("-hotkey.keep %v: must be at least -router.acceptance-horizon=%v and -aggregator.retention=%v", k, c.Router.Horizon, c.Aggregator.Retention)
		}
	}
	for _, r := range roles {
		var err error
		switch r {
		case RoleRouter:
			err = cmp.Or(c.Router.Validate(), router.ValidateID(c.ID))
			// The router gives up on an append after its timeout, so a
			// wait as long never acknowledges anything.
			if w := c.Redis.WaitTimeout; err == nil && c.Redis.WaitReplicas > 0 && w >= c.Router.AppendTimeout {
				err = fmt.Errorf("-redis.wait-timeout %v: must be shorter than -router.append-timeout=%v", w, c.Router.AppendTimeout)
			}
		case RoleAggregator:
			err = c.Aggregator.Validate()
			if err == nil && c.ArchiveBucket != "" {
				err = cmp.Or(c.Archive.Validate(), c.History.Validate())
			}
		case RoleCoordinator:
			err = c.Coordinator.Validate()
		case RoleQueryd:
			err = c.Queryd.Validate()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
	}
	return nil
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

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

func usesRedis(roles []string) bool {
	return slices.Contains(roles, RoleRouter) || slices.Contains(roles, RoleAggregator) || slices.Contains(roles, RoleQueryd)
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
	cfg := s.cfg
	var rdb redis.UniversalClient
	var w *durable.Writer // runs the writes that are acknowledged
	if s.usesRedis() {
		rc := cfg.Redis
		rc.PoolSize = 64
		var err error
		if rdb, err = rc.NewClient(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		defer rdb.Close()
		s.lg.Info("using redis", "redis", rc.String(), "wait_replicas", rc.WaitReplicas)
		w = durable.New(rdb, rc.Durability())
		if err := checkReplicas(ctx, rc, w); err != nil {
			return err
		}
	}
	etcd, err := cluster.Dial(ctx, cfg.Cluster, s.lg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer etcd.Close()
	cl := cluster.NewClient(etcd, cfg.Cluster.Prefix)

	partitions, err := ensurePartitions(ctx, cl, cfg.Partitions)
	if err != nil {
		return err
	}
	parts, err := ring.NewPartitioner(partitions)
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	defer lis.Close()
	var advertise string
	if cfg.AdvertiseAddr == "" {
		advertise = advertiseAddr(lis.Addr().(*net.TCPAddr))
	} else if advertise, err = canonicalAdvertise(cfg.AdvertiseAddr); err != nil {
		return err
	}
	var httpLis net.Listener
	if cfg.HTTPAddr != "" {
		if httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("http listen: %w", err)
		}
		defer httpLis.Close()
	}

	reg := newRegistry()
	gm := grpcMetrics(reg)
	gate := clickhealth.NewGate()
	if !s.usesRedis() {
		gate.Pass()
	}
	// The metrics interceptors come first, so that they count the
	// refusals of the gate's and grpcserver's.
	// With TLS the server and every call to another member use the
	// same certificate: members are each other's clients.
	creds := insecure.NewCredentials()
	srvOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize)}
	unary := []grpc.UnaryServerInterceptor{gm.UnaryServerInterceptor()}
	stream := []grpc.StreamServerInterceptor{gm.StreamServerInterceptor()}
	var az *authz.Authorizer
	var httpTLS *tls.Config // nil: the HTTP server is plaintext
	if cfg.TLS.Enabled() {
		t, err := tlsconf.Load(cfg.TLS, s.lg.With("component", "tls"))
		if err != nil {
			return err
		}
		if cfg.Auth.Enabled() {
			// Client certificates are verified by the authorizer, which
			// answers a bad one with why (see authz).
			t.DeferClientVerification()
			if az, err = authz.New(cfg.Auth, t, s.lg.With("component", "auth"), reg); err != nil {
				return err
			}
			// Authorization before the gate and the codec's checks: a
			// caller who may not call learns nothing else.
			unary = append(unary, az.UnaryInterceptor)
			stream = append(stream, az.StreamInterceptor)
		}
		creds = t.ClientCredentials()
		srvOpts = append(srvOpts, grpc.Creds(t.ServerCredentials()))
		if cfg.TLS.CertFile != "" {
			httpTLS = t.HTTPServerConfig()
		}
	}
	// The per-caller ingest limit (-router.caller-rate) is innermost: only
	// requests that decoded and got past the gate are charged. Callers are
	// who authorization says they are, else their IP address.
	var callerLimit []grpc.ServerOption
	if rc := cfg.Router; s.has(RoleRouter) && rc.CallerRate > 0 {
		callerLimit = ratelimit.New(rc.CallerRate, rc.CallerBurstOrDefault(), callerKey, time.Now, ratelimit.WithMetrics(reg)).ServerOptions()
		s.lg.Info("per-caller ingest limit", "clicks_per_second", rc.CallerRate, "burst", rc.CallerBurstOrDefault())
	}
	if az == nil {
		unary = append(unary, authz.AuditInterceptor(s.lg.With("component", "auth")))
	}
	gs := grpc.NewServer(append(append(srvOpts,
		grpc.ChainUnaryInterceptor(append(unary, gateUnary(gate))...),
		grpc.ChainStreamInterceptor(append(stream, gateStream(gate))...),
	), append(grpcserver.Options(cfg.GRPC), callerLimit...)...)...)
	hs := health.NewServer()
	// Not ready until the first round of checks says so; live from the
	// start.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(clickhealth.LivenessService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	if cfg.Reflection {
		reflection.Register(gs)
	}

	plog := partlog.New(rdb, cfg.RedisPrefix, partlog.WithWriter(w))
	dial := newDialer(creds)
	defer dial.Close()
	mux := http.NewServeMux()
	mux.Handle("/metrics", allow(metricsHandler(reg), http.MethodGet, http.MethodHead))

	var services []string
	roleCtx, stopRoles := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRoles()
	g, gctx := errgroup.WithContext(roleCtx)
	lg := s.lg
	if s.usesRedis() {
		g.Go(func() error {
			return gate.Run(gctx, func(ctx context.Context) error {
				err := clickhealth.VerifyRedis(ctx, cl, rdb, cfg.RedisPrefix, cfg.Redis.String())
				// A wrong password is no Redis still starting: stop,
				// naming the flag.
				if cerr := cfg.Redis.CredentialsError(err); cerr != nil {
					return cerr
				}
				return err
			}, lg)
		})
	}

	// The split table of hot ads. Routers and queryds keep a copy
	// (Follower) and work only while it is confirmed current; a router
	// acknowledges each version on its membership lease, so it registers
	// first, and the coordinator then waits for its acks before any
	// change takes effect.
	hk := cfg.hotKey()
	splits := hotkey.NewStore(etcd, cfg.Cluster.Prefix, partitions)
	var follower *hotkey.Follower
	if s.has(RoleRouter) || s.has(RoleQueryd) {
		var acker *hotkey.Acker
		if s.has(RoleRouter) {
			acker = &hotkey.Acker{ID: cfg.ID}
		}
		follower = hotkey.NewFollower(hk, splits, acker, lg.With("component", "splits"), time.Now)
		if acker != nil {
			// Acknowledgements go on the router's membership lease, which
			// is a new one each time it registers again. Keep sets the
			// first before it returns, and so before Run writes any.
			reg, err := cl.Keep(ctx, cluster.Member{ID: cfg.ID, Role: RoleRouter, Addr: advertise}, cfg.Cluster.LeaseTTL, func(m cluster.Member) {
				follower.SetAckLease(clientv3.LeaseID(m.Incarnation))
			}, lg)
			if err != nil {
				return fmt.Errorf("register %s: %w", RoleRouter, err)
			}
			defer closeMembership(reg)
		}
		g.Go(func() error { return follower.Run(gctx) })
	}

	if s.has(RoleRouter) {
		r := router.New(cfg.Router, cfg.ID, parts, plog, lg.With("role", RoleRouter), time.Now, router.WithSplits(follower), router.WithMetrics(reg), router.WithMemoryBound(plog))
		clickaggv1.RegisterIngestServiceServer(gs, router.NewServer(r))
		services = append(services, clickaggv1.IngestService_ServiceDesc.ServiceName)
		s.router = r
		g.Go(func() error { return r.Run(gctx) })
	}
	if s.has(RoleAggregator) {
		store := snapshot.New(rdb, cfg.RedisPrefix, snapshot.WithWriter(w))
		opts := []aggregator.Option{aggregator.WithMetrics(reg), aggregator.WithSketchCapacity(hk.SketchCapacity),
			aggregator.WithRedisProbe(clickhealth.RedisWritable(rdb, clickhealth.ProbeKey(cfg.RedisPrefix, RoleAggregator, cfg.ID)))}
		var revisionsKnown chan struct{} // closed once the applied history revisions are read
		if cfg.ArchiveBucket != "" {
			bucket, err := archive.OpenBucket(ctx, cfg.ArchiveBucket)
			if err != nil {
				return err
			}
			defer bucket.Close()
			ar, err := archive.New(cfg.Archive, plog, aggregator.ArchiveOffsets{Store: store}, bucket, reg, lg.With("role", RoleAggregator, "component", "archive"))
			if err != nil {
				return err
			}
			hw, err := history.New(cfg.History, aggregator.HistoryMarks{Store: store}, bucket, reg, lg.With("role", RoleAggregator, "component", "history"))
			if err != nil {
				return err
			}
			hr := history.NewReader(bucket, history.WithCache(cfg.History.CacheBytes))
			// Until the applied revisions are known, the history could be
			// read at a revision no longer served: the aggregator asks for
			// partitions only after the first read.
			revisionsKnown = make(chan struct{})
			var once sync.Once
			g.Go(func() error {
				return cl.WatchAppliedRevisions(gctx, func(data []byte) error {
					applied, err := history.DecodeApplied(data)
					if err != nil {
						return err
					}
					hr.SetApplied(applied)
					once.Do(func() { close(revisionsKnown) })
					lg.Info("history revisions applied", "version", applied.Version())
					return nil
				})
			})
			opts = append(opts, aggregator.WithArchiver(ar), aggregator.WithHistory(hw),
				aggregator.WithHistoryReader(hr, aggregator.HistoryMarks{Store: store}))
			lg.Info("archiving partition logs", "bucket", bucket.URL(), "interval", cfg.Archive.Interval)
		}
		self := aggregator.Self{ID: cfg.ID, Addr: advertise, LeaseTTL: cfg.Cluster.LeaseTTL}
		a := aggregator.New(cfg.Aggregator, self, plog, store, cl, lg.With("role", RoleAggregator), time.Now, opts...)
		clickaggv1.RegisterAggregatorServiceServer(gs, aggregator.NewServer(a))
		services = append(services, clickaggv1.AggregatorService_ServiceDesc.ServiceName)
		s.aggregator = a
		g.Go(func() error {
			// Registering is asking for partitions: not before the Redis
			// they live in is known to be the cluster's.
			if err := gate.Wait(gctx); err != nil {
				return nil
			}
			if revisionsKnown != nil {
				select {
				case <-revisionsKnown:
				case <-gctx.Done():
					return nil
				}
			}
			return a.Run(gctx)
		})
	}
	if s.has(RoleCoordinator) {
		c := coordinator.New(cfg.Coordinator, cluster.Candidate{ID: cfg.ID, Addr: advertise}, cl, partitions, dial.Conn, lg.With("role", RoleCoordinator),
			coordinator.WithHotKeys(splits, hk, time.Now), coordinator.WithMaxIDLength(cfg.Router.MaxIDLength), coordinator.WithMetrics(reg))
		clickaggv1.RegisterCoordinatorServiceServer(gs, coordinator.NewServer(c))
		services = append(services, clickaggv1.CoordinatorService_ServiceDesc.ServiceName)
		g.Go(func() error { return c.Run(gctx) })
	}
	if s.has(RoleQueryd) {
		q := queryd.New(cfg.Queryd, parts, cl, toplist.New(rdb, cfg.RedisPrefix), dial.Aggregator, lg.With("role", RoleQueryd), time.Now,
			queryd.WithSplits(follower), queryd.WithMaxIDLength(cfg.Router.MaxIDLength), queryd.WithMetrics(reg))
		qs := queryd.NewServer(q)
		clickaggv1.RegisterQueryServiceServer(gs, qs)
		services = append(services, clickaggv1.QueryService_ServiceDesc.ServiceName)
		s.queryd = q
		h, err := queryd.NewHTTPHandler(gctx, qs)
		if err != nil {
			return fmt.Errorf("queryd http: %w", err)
		}
		h = gateHTTP(gate, h)
		if az != nil {
			h = az.HTTP(authz.Query, h)
		}
		// The gateway answers a wrong method with 501.
		mux.Handle("/v1/", allow(h, http.MethodGet))
		g.Go(func() error { return q.Run(gctx) })
	}
	// Queryds and coordinators register so that operators can list them,
	// and register again if their lease is lost; routers registered above;
	// aggregators register themselves, since their lease is part of
	// partition ownership.
	for _, role := range s.roles {
		if role == RoleAggregator || role == RoleRouter {
			continue
		}
		reg, err := cl.Keep(ctx, cluster.Member{ID: cfg.ID, Role: role, Addr: advertise}, cfg.Cluster.LeaseTTL, nil, lg)
		if err != nil {
			return fmt.Errorf("register %s: %w", role, err)
		}
		defer closeMembership(reg)
	}
	if follower != nil {
		// Serve only with the split table: until then every ingest and
		// query would be refused. Shutdown or a failed role ends the wait
		// and goes on to the shutdown below.
		lg.Info("waiting for the split table from etcd")
		select {
		case <-follower.Ready():
		case <-ctx.Done():
		case <-gctx.Done():
		}
	}

	// Every method's series exist from the start, at zero.
	gm.InitializeMetrics(gs)
	checker := clickhealth.NewChecker(cfg.Health, hs, services, lg.With("component", "health"), time.Now)
	s.readiness(checker, gate, etcdCheck(cl), rdb, follower)
	mux.Handle("/healthz", allow(checker.LiveHandler(), http.MethodGet, http.MethodHead))
	mux.Handle("/readyz", allow(checker.ReadyHandler(), http.MethodGet, http.MethodHead))
	g.Go(func() error { return checker.Run(gctx) })

	serveErr := make(chan error, 2)
	go func() { serveErr <- gs.Serve(lis) }()
	var hsrv *http.Server
	if httpLis != nil {
		hsrv = cfg.HTTP.server(mux, httpTLS)
		go func() {
			if err := runHTTP(hsrv, httpLis); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	s.mu.Lock()
	s.grpcAddr = lis.Addr().String()
	if httpLis != nil {
		s.httpAddr = httpLis.Addr().String()
	}
	s.mu.Unlock()
	lg.Info("clickagg started", "roles", strings.Join(s.roles, ","), "member", cfg.ID, "grpc", s.grpcAddr, "advertise", advertise, "http", s.httpAddr, "partitions", partitions)
	close(s.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	case <-gctx.Done():
		// A role ended on its own: that is an error, the process must exit.
		runErr = errRoleStopped
	}

	lg.Info("shutting down")
	checker.SetStopping()
	hs.Shutdown()
	if s.aggregator != nil && runErr == nil {
		// The Release calls of the handoffs come through gs, so this
		// precedes GracefulStop.
		if err := s.aggregator.Leave(context.WithoutCancel(ctx)); err != nil {
			lg.Warn("aggregator leave", "err", err)
		}
	}
	if cfg.DrainDelay > 0 && runErr == nil {
		time.Sleep(cfg.DrainDelay)
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(cfg.ShutdownTimeout):
		gs.Stop()
	}
	if hsrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		_ = hsrv.Shutdown(sctx)
		cancel()
	}
	stopRoles()
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		if runErr == errRoleStopped {
			// One line that says why, for the exit message.
			runErr = fmt.Errorf("%w: %w", errRoleStopped, err)
		} else {
			runErr = errors.Join(runErr, err)
		}
	}
	return runErr
}

// callerKey names the caller of an ingest call for its rate limit: its
// identity when authorization is on, else its IP address.
func callerKey(ctx context.Context) string {
	if c, ok := authz.CallerFrom(ctx); ok {
		return c.String()
	}
	return ratelimit.PeerIP(ctx)
}

// errRoleStopped is Run's error when a role ended on its own.
var errRoleStopped = errors.New("a role stopped")

// closeMembership stops registering again and revokes the current lease,
// bounded in time.
func closeMembership(reg *cluster.Membership) {
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = reg.Close(cctx)
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

// canonicalAdvertise checks -grpc.advertise-addr and returns it as gRPC
// dials it: host:port, an IPv6 address in brackets. An IPv6 address
// without them is taken too, its port after the last colon, because
// manifests write $(POD_IP):port, which on an IPv6 cluster has none; the
// members that dial it would otherwise fail to parse it, long after this
// process registered it.
func canonicalAdvertise(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		i := strings.LastIndexByte(s, ':')
		ip, perr := netip.ParseAddr(s[:max(i, 0)])
		if i < 0 || perr != nil || !ip.Is6() || ip.Zone() != "" {
			return "", fmt.Errorf("-grpc.advertise-addr %q: want host:port, an IPv6 address in brackets ([fd00::1]:9090)", s)
		}
		host, port = s[:i], s[i+1:]
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("-grpc.advertise-addr %q: port %q is not a number from 1 to 65535", s, port)
	}
	if host == "" {
		return "", fmt.Errorf("-grpc.advertise-addr %q: no host; other members could not dial it", s)
	}
	return net.JoinHostPort(host, port), nil
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
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(d.creds))
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
