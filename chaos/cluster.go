package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/clickagg/clickagg/localserver"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// ClusterConfig describes the cluster StartCluster runs. Zero fields take
// the defaults named on them.
type ClusterConfig struct {
	// Binary is the clickagg binary every process runs (bin/clickagg),
	// built without -tags nobench: the etcd members are its
	// `chaos etcd-member`.
	Binary string
	// Dir holds every data dir and log (<Dir>/<process>.log).
	Dir string
	// Partitions is -cluster.partitions; default 16.
	Partitions int
	// Routers, Aggregators, Coordinators, Queryds count the processes
	// of each role; defaults 2, 3, 2, 2.
	Routers, Aggregators, Coordinators, Queryds int
	// EtcdMembers is the size of the etcd cluster; default 3.
	EtcdMembers int
	// RedisReplicas is how many replicas the Redis primary has, under
	// three sentinels; default 1. clickagg runs with
	// -redis.wait-replicas=1: a click acknowledged is on a replica too,
	// so a failover loses none (package durable).
	RedisReplicas int
	// LeaseTTL is -etcd.lease-ttl; default 5s.
	LeaseTTL time.Duration
	// ExtraFlags are more flags per role ("router", "aggregator",
	// "coordinator", "queryd", "shipper"), after the harness's: a flag
	// given again overrides.
	ExtraFlags map[string][]string
	// Env is more environment for every clickagg process (not the etcd
	// members).
	Env []string
	// Log gets the harness's own progress; nil discards it.
	Log *slog.Logger
}

func (cfg *ClusterConfig) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.Partitions, 16)
	def(&cfg.Routers, 2)
	def(&cfg.Aggregators, 3)
	def(&cfg.Coordinators, 2)
	def(&cfg.Queryds, 2)
	def(&cfg.EtcdMembers, 3)
	def(&cfg.RedisReplicas, 1)
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
}

// Cluster is a running cluster. Its methods may be called concurrently.
type Cluster struct {
	cfg     ClusterConfig
	proxies *proxies
	etcd    []*etcdMember
	redis   *redisSet
	common  []string

	mu    sync.Mutex
	roles []*Process // every clickagg role process and shipper, in start order
}

// StartCluster starts etcd, Redis and every clickagg process, each
// waited for until it serves, and returns once the cluster is healthy
// (WaitHealthy). On an error it stops what it started.
func StartCluster(ctx context.Context, cfg ClusterConfig) (_ *Cluster, err error) {
	cfg.setDefaults()
	if cfg.Binary == "" {
		return nil, errors.New("chaos cluster: no clickagg binary (ClusterConfig.Binary)")
	}
	if cfg.Dir == "" {
		return nil, errors.New("chaos cluster: no directory (ClusterConfig.Dir)")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, proxies: newProxies()}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	start := time.Now()
	if err := c.startEtcd(ctx); err != nil {
		return nil, fmt.Errorf("chaos cluster: etcd: %w", err)
	}
	cfg.Log.Info("etcd up", "members", len(c.etcd), "took", time.Since(start).Round(time.Millisecond))
	if err := c.startRedis(ctx); err != nil {
		return nil, fmt.Errorf("chaos cluster: redis: %w", err)
	}
	cfg.Log.Info("redis up", "replicas", cfg.RedisReplicas, "took", time.Since(start).Round(time.Millisecond))
	var etcdProxies, sentinels []string
	for _, m := range c.etcd {
		etcdProxies = append(etcdProxies, "http://"+m.proxy)
	}
	for _, s := range c.redis.sentinels {
		sentinels = append(sentinels, s.Addr)
	}
	c.common = []string{
		"-etcd.endpoints=" + strings.Join(etcdProxies, ","),
		"-etcd.lease-ttl=" + cfg.LeaseTTL.String(),
		"-redis.sentinel-master=" + masterName,
		"-redis.sentinel-addrs=" + strings.Join(sentinels, ","),
		"-redis.password-file=" + c.redis.passwordFile,
		"-redis.wait-replicas=1",
		"-cluster.partitions=" + strconv.Itoa(cfg.Partitions),
		"-log.level=info",
	}
	// Coordinators first (they assign), then the aggregators (queryd is
	// ready only once every partition has an owner), routers, queryds.
	for _, r := range []struct {
		role string
		n    int
	}{{"coordinator", cfg.Coordinators}, {"aggregator", cfg.Aggregators}, {"router", cfg.Routers}, {"queryd", cfg.Queryds}} {
		for i := range r.n {
			if _, err := c.startRole(ctx, r.role, fmt.Sprintf("%s-%d", r.role, i+1)); err != nil {
				return nil, fmt.Errorf("chaos cluster: %w", err)
			}
		}
	}
	if err := c.WaitHealthy(ctx); err != nil {
		return nil, fmt.Errorf("chaos cluster: %w", err)
	}
	cfg.Log.Info("cluster healthy", "took", time.Since(start).Round(time.Millisecond))
	return c, nil
}

// startRole starts clickagg process name of role behind a proxy of its
// own, which it advertises, and waits until it is ready.
func (c *Cluster) startRole(ctx context.Context, role, name string) (*Process, error) {
	gport, err := localserver.FreePort()
	if err != nil {
		return nil, err
	}
	hport, err := localserver.FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(gport))
	proxy, err := c.proxies.add(name, addr)
	if err != nil {
		return nil, err
	}
	p := &Process{
		Name: name, Role: role, Addr: addr, Advertise: proxy,
		HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(hport)),
		Log:      filepath.Join(c.cfg.Dir, name+".log"),
		bin:      c.cfg.Binary,
		env:      c.cfg.Env,
		ready:    func(ctx context.Context) error { return healthServing(ctx, addr) },
	}
	p.args = append(slices.Clone(c.common), "-target="+role, "-id="+name, "-grpc.addr="+addr,
		"-grpc.advertise-addr="+proxy, "-http.addr="+p.HTTPAddr)
	if role == "aggregator" {
		// Snapshots every second, as test/fencing_test.go: a kill then
		// replays little, and a stale owner's snapshot write races the
		// new owner's often, which is what fencing is for.
		p.args = append(p.args, "-aggregator.snapshot-interval=1s")
	}
	p.args = append(p.args, c.cfg.ExtraFlags[role]...)
	return c.run(ctx, p)
}

// StartShipper starts `clickagg ship` tailing files (CSV lines, the
// format of -ship.format=csv) and sending to the routers directly, and
// returns once it serves. Its checkpoint is under Dir: a restarted
// shipper resumes from it.
func (c *Cluster) StartShipper(ctx context.Context, files []string) (*Process, error) {
	c.mu.Lock()
	n := 1
	for _, p := range c.roles {
		if p.Role == "shipper" {
			n++
		}
	}
	c.mu.Unlock()
	name := fmt.Sprintf("shipper-%d", n)
	gport, err := localserver.FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(gport))
	p := &Process{
		Name: name, Role: "shipper", Addr: addr,
		Log:   filepath.Join(c.cfg.Dir, name+".log"),
		bin:   c.cfg.Binary,
		env:   c.cfg.Env,
		ready: func(ctx context.Context) error { return healthServing(ctx, addr) },
	}
	p.args = append([]string{"ship", "-id=" + name, "-grpc.addr=" + addr,
		"-ship.files=" + strings.Join(files, ","), "-ship.format=csv",
		"-ship.routers=" + strings.Join(c.RouterAddrs(), ","),
		"-ship.checkpoint=" + filepath.Join(c.cfg.Dir, name+".checkpoint.json"),
		"-ship.retry-max=1s", "-log.format=json"}, c.cfg.ExtraFlags["shipper"]...)
	return c.run(ctx, p)
}

// run adds p to the cluster's processes and starts it.
func (c *Cluster) run(ctx context.Context, p *Process) (*Process, error) {
	c.mu.Lock()
	c.roles = append(c.roles, p)
	c.mu.Unlock()
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// grpcDial returns a client connection to addr, without TLS: the chaos
// cluster runs on loopback without certificates.
func grpcDial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// healthServing returns nil when the gRPC health service at addr answers
// SERVING for the whole server (ready, not only live). A connection per
// call: a process restarted on the address must not wait out a
// connection's reconnect backoff.
func healthServing(ctx context.Context, addr string) error {
	conn, err := grpcDial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s: %s", addr, resp.Status)
	}
	return nil
}

// Close kills every process, then Redis, etcd and the proxies.
func (c *Cluster) Close() error {
	var errs []error
	for _, p := range c.Processes() {
		if p.Role == "etcd" {
			continue
		}
		if p.Paused() {
			_ = p.Resume()
		}
		errs = append(errs, p.Kill())
	}
	if c.redis != nil {
		c.redis.stop()
	}
	for _, m := range c.etcd {
		errs = append(errs, m.Kill())
	}
	c.proxies.close()
	return errors.Join(errs...)
}

// addrsOf returns the direct gRPC addresses of role's processes.
func (c *Cluster) addrsOf(role string) []string {
	var out []string
	for _, p := range c.Processes() {
		if p.Role == role {
			out = append(out, p.Addr)
		}
	}
	return out
}

// RouterAddrs are the routers' gRPC addresses, direct (no proxy): where
// clients send clicks.
func (c *Cluster) RouterAddrs() []string { return c.addrsOf("router") }

// QuerydAddrs are the queryds' gRPC addresses, direct.
func (c *Cluster) QuerydAddrs() []string { return c.addrsOf("queryd") }

// CoordinatorAddrs are the coordinators' gRPC addresses, direct.
func (c *Cluster) CoordinatorAddrs() []string { return c.addrsOf("coordinator") }

// QuerydHTTP are the queryds' HTTP base URLs (http://host:port).
func (c *Cluster) QuerydHTTP() []string {
	var out []string
	for _, p := range c.Processes() {
		if p.Role == "queryd" {
			out = append(out, "http://"+p.HTTPAddr)
		}
	}
	return out
}

// EtcdEndpoints are the etcd members' client URLs, direct: a client of
// the harness is not cut off by an etcd fault.
func (c *Cluster) EtcdEndpoints() []string {
	var out []string
	for _, m := range c.etcd {
		out = append(out, m.client)
	}
	return out
}

// RedisClient returns a client of the current Redis primary, found
// through the sentinels, that dials every node directly rather than
// through its proxy: the checks read what the cluster wrote without
// going through the faults. The caller closes it.
func (c *Cluster) RedisClient() redis.UniversalClient {
	var sentinels []string
	for _, s := range c.redis.sentinels {
		sentinels = append(sentinels, s.Addr)
	}
	rs := c.redis
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    masterName,
		SentinelAddrs: sentinels,
		Password:      rs.password,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if n := rs.byProxy(addr); n != nil {
				addr = n.addr
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	})
}

// Processes returns every process the cluster runs: the etcd members,
// then the clickagg roles and shippers in start order.
func (c *Cluster) Processes() []*Process {
	var out []*Process
	for _, m := range c.etcd {
		out = append(out, m.Process)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append(out, c.roles...)
}

// process returns the process called name.
func (c *Cluster) process(name string) (*Process, error) {
	for _, p := range c.Processes() {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no process %q", name)
}

// WaitHealthy returns once the whole cluster is healthy: every process
// runs (none paused) and answers its health check, etcd has a leader
// every member agrees on, every Redis node runs and a majority of the
// sentinels names a primary that has every other node online as its
// replica, and a coordinator
// reports every partition serving and every role process a member. It
// polls until ctx ends and then returns what was still wrong.
//
// A process that exited without being killed (a crash: no fault restarts
// it) fails WaitHealthy at once, with its exit and log.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	var err error
	for {
		if err = c.healthy(ctx); err == nil {
			return nil
		}
		if crash := c.crashed(); crash != nil {
			return crash
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %w (%w)", err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// crashed returns the crashes of the cluster's processes.
func (c *Cluster) crashed() error {
	var errs []error
	for _, p := range c.Processes() {
		errs = append(errs, p.Crashed())
	}
	return errors.Join(errs...)
}

func (c *Cluster) healthy(ctx context.Context) error {
	for _, p := range c.Processes() {
		if !p.Running() || p.Paused() {
			return fmt.Errorf("%s is not running", p.Name)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.ready(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
	}
	if _, err := c.etcdLeader(ctx); err != nil {
		return err
	}
	for _, n := range c.redis.nodes {
		if !n.running() {
			return fmt.Errorf("redis: %s is not running", n.name)
		}
	}
	primary, err := c.redis.primary(ctx)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if err := c.redis.replicasOnline(ctx, primary); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return c.clusterServing(ctx)
}

// clusterServing asks the coordinators, in turn, for the cluster status
// and returns nil when one reports every partition serving and every
// role process a member.
func (c *Cluster) clusterServing(ctx context.Context) error {
	var errs []error
	for _, addr := range c.CoordinatorAddrs() {
		err := c.statusFrom(ctx, addr)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Cluster) statusFrom(ctx context.Context, addr string) error {
	conn, err := grpcDial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := clickaggv1.NewCoordinatorServiceClient(conn).GetClusterStatus(cctx, &clickaggv1.GetClusterStatusRequest{Summary: true})
	if err != nil {
		return fmt.Errorf("cluster status from %s: %w", addr, err)
	}
	if got := st.GetTotals().GetServing(); int(got) != c.cfg.Partitions || len(st.Unavailable) > 0 {
		return fmt.Errorf("%d of %d partitions serving, unavailable %v", got, c.cfg.Partitions, st.Unavailable)
	}
	members := map[string]bool{}
	for _, m := range st.Members {
		members[m.Id] = true
	}
	for _, p := range c.Processes() {
		if p.Role != "etcd" && p.Role != "shipper" && !members[p.Name] {
			return fmt.Errorf("%s is not a member", p.Name)
		}
	}
	return nil
}
