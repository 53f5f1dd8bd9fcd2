package cli

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/authz"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/coordinator"
	"github.com/clickagg/clickagg/grpcserver"
	clickhealth "github.com/clickagg/clickagg/health"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/hotkey"
	"github.com/clickagg/clickagg/queryd"
	"github.com/clickagg/clickagg/redisconf"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/router"
	"github.com/clickagg/clickagg/tlsconf"
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
		// Without a prefix the keys of two clusters sharing a Redis
		// would meet, and the health check's cluster mark could not tell
		// them apart.
		if c.RedisPrefix == "" {
			return errors.New("-redis.prefix: must not be empty")
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
				err = cmp.Or(c.Archive.Validate(), c.History.Validate(), c.historyWindow())
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

func usesRedis(roles []string) bool {
	return slices.Contains(roles, RoleRouter) || slices.Contains(roles, RoleAggregator) || slices.Contains(roles, RoleQueryd)
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

// historyWindow refuses retention so close to the dedup horizon that the
// history writer never sees a period whole: a period of -history.period
// can be written once its last minute is past the dedup horizon and
// until its first minute leaves memory, a span of retention − horizon −
// (period − 1m) of watermark time, which the writer must meet at least
// once between two looks (-history.poll). Below that every period is
// skipped as a hole and only a recount from the raw archive fills it.
func (c *ServerConfig) historyWindow() error {
	a, h := c.Aggregator, c.History
	if span := a.Retention - a.DedupHorizon - (h.Period - time.Minute); span <= h.Poll {
		return fmt.Errorf("-aggregator.retention %v: must be more than -aggregator.dedup-horizon=%v plus -history.period=%v less a minute plus -history.poll=%v, so that the history writer sees each period before its minutes leave memory", a.Retention, a.DedupHorizon, h.Period, h.Poll)
	}
	return nil
}
