//go:build !nobench

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/clickagg/clickagg/bench"
	"github.com/clickagg/clickagg/bench/histbench"
	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/redisconf"
	"github.com/clickagg/clickagg/tally"
)

const benchSynopsis = `clickagg bench measures the cluster and two baselines on the same workload
and writes the report to docs/benchmarks.md with a chart next to it.

By default it starts a cluster in this process (embedded etcd, a redis-server
child, every role, like clickagg dev but in a temporary directory), and a
second redis-server for the baselines. It drives the cluster with synthetic
clicks (2M ads with Zipf popularity, 200 countries, millions of users and
IPs, 1% duplicates, 1% late), whose click times sweep through the last hour
so that hour-long queries find every minute filled. In order:

  1. ingest as fast as the cluster acknowledges (the measured window), then a
     window paced for freshness, with probes measuring ack-to-visible time
     throughout, then more load, CPU-profiled, until the workload has put
     -bench.keys distinct (ad, minute) keys in the cluster;
  2. query latency (GetAggregatedCount, GetPopularAds over 1 and 60 minutes,
     with and without a country filter) and the aggregator's heap;
  3. the in-process limit: the same events decoded from their log encoding
     and counted by package tally in one goroutine, which also gives the
     dedup memory, the ground truth the cluster's answers must equal, and a
     full snapshot write and recovery of the same state;
  4. the naive Redis design on the same events: pipelined HINCRBY per
     (minute, ad) and ZINCRBY per minute, top N by ZUNIONSTORE.

With -bench.history it instead measures the archive (bytes and encoding
time per event on the workload's events) and queries over a synthetic
history of 30 days of 2M ads in 64 partitions, written to a directory
bucket (counts of one ad over 30 days, the top 100 over 7), and writes
only that section of the report.

With -bench.steady=D it instead paces the workload at -bench.steady-rate for
D, with click times at the clock, samples the cluster Redis's memory every
second, and writes only that section of the report: with the raw archive on,
the partition logs must level off rather than grow with the clicks.

With -bench.redis-topologies or -bench.security it instead runs a new
cluster per setup under the same load, one after the other, and writes
only that section: Redis setups (one server, Redis Clusters with and
without replicas and -redis.wait-replicas) or security setups
(plaintext, mutual TLS, TLS with authorization and a bearer token).

The defaults finish in under ten minutes on two cores; -bench.keys,
-bench.duration and the other -bench.* flags change the scale. With -bench.router (and
-bench.queryd, -bench.coordinator) it measures a running cluster instead:
give its aggregators' -aggregator.allowed-lateness, -dedup-horizon and
-retention, run its routers with -router.idle-watermark-lag above -bench.span,
and name a Redis for the baselines with -bench.redis. The -grpc.*, -cluster.*,
-router.*, -aggregator.*, -coordinator.* and -queryd.* flags configure the
local cluster as they do for clickagg itself.

Usage:
  clickagg bench [flags]`

func runBench(ctx context.Context, args []string) error {
	_, err := benchMain(ctx, args, os.Stdout)
	return err
}

// benchMain runs clickagg bench and returns its report.
func benchMain(ctx context.Context, args []string, out io.Writer) (*bench.Report, error) {
	cfg, bc, err := parseBench(args)
	if err != nil {
		return nil, err
	}
	if bc.History {
		return nil, benchHistory(ctx, bc, commandLine(args), out)
	}
	return benchCluster(ctx, cfg, bc, commandLine(args), out)
}

// parseBench parses clickagg bench's flags: the bench's own, and the
// server's, which configure the local cluster.
func parseBench(args []string) (ServerConfig, bench.Config, error) {
	fs := flag.NewFlagSet("clickagg bench", flag.ContinueOnError)
	setUsage(fs, benchSynopsis)
	var cfg ServerConfig
	cfg.RegisterFlags(fs)
	var bc bench.Config
	bc.RegisterFlags(fs)
	// The local cluster: loopback on free ports, no HTTP, errors only in the
	// log (the progress display is the output), and ticks that follow the
	// clicks' event time rather than the wall clock, because the sweep sends
	// clicks up to -bench.span old.
	setDefault(fs, "grpc.addr", "127.0.0.1:0")
	setDefault(fs, "http.addr", "")
	setDefault(fs, "redis.addr", "")
	setDefault(fs, "log.level", "error")
	setDefault(fs, "router.idle-watermark-lag", "2h")
	// Under full load an aggregator's status (a Redis call per partition)
	// can take longer than the 2s default; the bench samples it every
	// second and would lose its lag readings.
	setDefault(fs, "coordinator.status-timeout", "10s")
	if err := parse(fs, args); err != nil {
		return cfg, bc, err
	}
	return cfg, bc, bc.Validate()
}

// benchCluster runs every bench but -bench.history: on the cluster it
// starts, or on -bench.router's.
func benchCluster(ctx context.Context, cfg ServerConfig, bc bench.Config, command string, out io.Writer) (*bench.Report, error) {
	logger, err := newLogger(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	dir, cleanup, err := benchDir(bc)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if bc.Topologies || bc.Security {
		return nil, benchCompare(ctx, cfg, bc, dir, command, logger, out)
	}
	t := bench.Targets{Redis: bc.Redis, Command: command, Tally: tally.Options{
		AllowedLateness: cfg.Aggregator.AllowedLateness,
		DedupHorizon:    cfg.Aggregator.DedupHorizon,
		Retention:       cfg.Aggregator.Retention,
	}}
	stopRedis, err := baselineRedis(ctx, bc, dir, &t)
	if err != nil {
		return nil, err
	}
	defer stopRedis()

	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if bc.Router == "" {
		stop, err := startBenchCluster(ctx, bctx, cancel, cfg, bc, dir, logger, &t)
		if err != nil {
			return nil, err
		}
		defer stop()
	} else if err := runningTargets(bc, &t); err != nil {
		return nil, err
	}
	if bc.Steady > 0 {
		return nil, benchSteady(bctx, bc, t, out)
	}
	rep, err := bench.Run(bctx, bc, t, out)
	return rep, benchErr(bctx, err)
}

// benchDir returns the directory for the bench's data: -bench.data-dir,
// which must be empty, or a temporary one that cleanup removes when
// anything is to be started.
func benchDir(bc bench.Config) (dir string, cleanup func(), err error) {
	dir, cleanup = bc.DataDir, func() {}
	if dir != "" {
		// The ground truth is this run's events: a cluster holding an
		// earlier run's would answer differently.
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			return "", nil, fmt.Errorf("-bench.data-dir %s is not empty: the bench needs a fresh cluster and Redis", dir)
		}
		return dir, cleanup, nil
	}
	if bc.Router != "" && bc.Redis != "" {
		return "", cleanup, nil
	}
	if dir, err = os.MkdirTemp("", "clickagg-bench-"); err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// benchCompare runs -bench.redis-topologies or -bench.security.
func benchCompare(ctx context.Context, cfg ServerConfig, bc bench.Config, dir, command string, lg *slog.Logger, out io.Writer) error {
	if bc.Router != "" {
		return errors.New("-bench.redis-topologies and -bench.security start their own clusters: they cannot measure -bench.router's")
	}
	cmp := redisComparison
	if bc.Security {
		if cfg.TLS.Enabled() || cfg.Auth.Enabled() {
			return errors.New("-bench.security: makes its own certificates, token and policy; drop the -tls.* and -auth.* flags")
		}
		var err error
		if cmp, err = securityComparison(filepath.Join(dir, "tls")); err != nil {
			return fmt.Errorf("-bench.security: %w", err)
		}
	}
	return benchComparison(ctx, cfg, bc, cmp, dir, command, lg, out)
}

// baselineRedis sets t's Redis for the baselines: -bench.redis, or a
// redis-server child that stop stops. The steady run has no baselines.
func baselineRedis(ctx context.Context, bc bench.Config, dir string, t *bench.Targets) (stop func(), err error) {
	if t.Redis != "" {
		t.RedisPassword, err = optionalPassword(bc.RedisPasswordFile, "-bench.redis-password-file")
		return func() {}, err
	}
	if bc.Steady > 0 {
		return func() {}, nil
	}
	r, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: filepath.Join(dir, "baseline-redis"), AppendFsync: bc.AppendFsync})
	if err != nil {
		return nil, fmt.Errorf("baseline redis: %w", err)
	}
	t.Redis, t.RedisPassword = r.Addr, r.Password
	return func() { _ = r.Stop() }, nil
}

// startBenchCluster starts etcd, Redis and every role in this process
// under dir, and sets t to measure them. The cluster stops when stop is
// called (the bench is done with it) or the bench ends; if it stops on its
// own first, the bench's context, bctx, is cancelled.
func startBenchCluster(ctx, bctx context.Context, cancel context.CancelCauseFunc, cfg ServerConfig, bc bench.Config, dir string, lg *slog.Logger, t *bench.Targets) (stop func(), err error) {
	if cfg.ArchiveBucket == "" {
		// As in production: the logs go to the raw archive and are
		// trimmed once archived, so Redis's memory stays flat.
		cfg.ArchiveBucket = filepath.Join(dir, "archive")
	}
	deps, err := startLocalDeps(ctx, &cfg, localDepsConfig{Dir: dir, EtcdLog: "fatal", AppendFsync: bc.AppendFsync})
	if err != nil {
		return nil, err
	}
	srv, stopSrv, done, err := startReady(ctx, cfg, lg)
	if err != nil {
		deps.Close()
		return nil, err
	}
	stop = watchCluster(bctx, cancel, stopSrv, done, deps.Close)
	t.Router, t.Queryd, t.Coordinator = srv.GRPCAddr(), srv.GRPCAddr(), srv.GRPCAddr()
	if deps.redis != nil {
		t.ClusterRedis, t.ClusterRedisPassword = deps.redis.Addr, deps.redis.Password
	} else if cfg.Redis.ClusterAddrs == "" && cfg.Redis.SentinelMaster == "" {
		t.ClusterRedis = cfg.Redis.Addr
		if t.ClusterRedisPassword, err = optionalPassword(cfg.Redis.PasswordFile, "-redis.password-file"); err != nil {
			stop()
			return nil, err
		}
	}
	t.InProcess = true
	t.StopCluster = stop
	t.Settings = localSettings(cfg, bc.AppendFsync)
	return stop, nil
}

// watchCluster returns the function that stops the local cluster (its
// server, whose Run sends to done, then its dependencies) once; if the
// cluster stops before, it cancels bctx with the reason.
func watchCluster(bctx context.Context, cancel context.CancelCauseFunc, stopSrv func(), done chan error, closeDeps func()) (stop func()) {
	var once sync.Once
	var stopping sync.Mutex
	stopped := false
	stop = func() {
		once.Do(func() {
			stopping.Lock()
			stopped = true
			stopping.Unlock()
			stopSrv()
			<-done
			closeDeps()
		})
	}
	go func() {
		select {
		case err := <-done:
			stopping.Lock()
			unexpected := !stopped
			stopping.Unlock()
			done <- err
			if unexpected {
				cancel(fmt.Errorf("local cluster stopped: %w", err))
			}
		case <-bctx.Done():
		}
	}()
	return stop
}

// localSettings describe the local cluster for the report.
func localSettings(cfg ServerConfig, appendFsync string) []bench.Setting {
	return []bench.Setting{
		{Name: "cluster", Value: fmt.Sprintf("every role in the bench's process (-target=all), embedded etcd, one redis-server with AOF appendfsync=%s, auto-aof-rewrite-percentage %d", appendFsync, localserver.AOFRewritePercentage)},
		{Name: "aggregator", Value: fmt.Sprintf("-aggregator.snapshot-interval=%s -aggregator.read-count=%d -aggregator.allowed-lateness=%s -aggregator.dedup-horizon=%s -aggregator.raw-retention=%s -archive.bucket=<a directory> -archive.interval=%s", cfg.Aggregator.SnapshotInterval, cfg.Aggregator.ReadCount, cfg.Aggregator.AllowedLateness, cfg.Aggregator.DedupHorizon, cfg.Aggregator.RawRetention, cfg.Archive.Interval)},
		{Name: "router", Value: fmt.Sprintf("-router.tick-interval=%s -router.idle-watermark-lag=%s", cfg.Router.TickInterval, cfg.Router.IdleLag)},
		{Name: "coordinator", Value: fmt.Sprintf("-coordinator.status-timeout=%s", cfg.Coordinator.StatusTimeout)},
		{Name: "baseline Redis", Value: fmt.Sprintf("a second redis-server, AOF appendfsync=%s, auto-aof-rewrite-percentage %d", appendFsync, localserver.AOFRewritePercentage)},
	}
}

// runningTargets sets t to measure -bench.router's cluster.
func runningTargets(bc bench.Config, t *bench.Targets) error {
	t.Router, t.Queryd, t.Coordinator = bc.Router, bc.Queryd, bc.Coordinator
	if t.Queryd == "" {
		t.Queryd = t.Router
	}
	if t.Coordinator == "" {
		t.Coordinator = t.Queryd
	}
	t.ClusterRedis = bc.ClusterRedis
	var err error
	if t.ClusterRedisPassword, err = optionalPassword(bc.ClusterRedisPasswordFile, "-bench.cluster-redis-password-file"); err != nil {
		return err
	}
	t.Settings = []bench.Setting{{Name: "cluster", Value: fmt.Sprintf("running cluster: router %s, queryd %s, coordinator %s", t.Router, t.Queryd, t.Coordinator)}}
	return nil
}

// benchSteady runs -bench.steady and writes its section of the report.
func benchSteady(bctx context.Context, bc bench.Config, t bench.Targets, out io.Writer) error {
	if t.ClusterRedis == "" {
		return errors.New("-bench.steady with -bench.router: name the cluster's Redis with -bench.cluster-redis")
	}
	t.Settings = slices.DeleteFunc(t.Settings, func(s bench.Setting) bool { return s.Name == "baseline Redis" })
	res, err := bench.RunSteady(bctx, bc, t, out)
	if err = benchErr(bctx, err); err != nil {
		return err
	}
	fmt.Fprint(out, res.Markdown())
	if bc.Out != "" {
		return res.WriteSteadySection(bc.Out)
	}
	return nil
}

// benchErr is err, or, when the bench failed because the local cluster
// stopped on its own, why it stopped.
func benchErr(bctx context.Context, err error) error {
	if cause := context.Cause(bctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// benchHistory runs clickagg bench -bench.history: the history is written
// under -bench.data-dir, or a temporary directory removed afterwards.
func benchHistory(ctx context.Context, bc bench.Config, command string, out io.Writer) error {
	dir := bc.DataDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "clickagg-bench-history-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	res, err := bench.RunHistory(ctx, bc, histbench.Defaults(), bc.HistoryRuns, filepath.Join(dir, "history"), command, out)
	if err != nil {
		return err
	}
	if bc.Out == "" {
		return nil
	}
	return res.WriteHistorySection(bc.Out)
}

// commandLine is the command as a shell would take it.
func commandLine(args []string) string {
	parts := []string{"clickagg", "bench"}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// optionalPassword reads the password file named by a flag; none is no
// password.
func optionalPassword(path, flagName string) (string, error) {
	if path == "" {
		return "", nil
	}
	return redisconf.ReadPasswordFile(path, flagName)
}

// startReady runs a Server of cfg until stop is called, and returns once
// it is ready; done receives what its Run returned.
func startReady(ctx context.Context, cfg ServerConfig, lg *slog.Logger) (srv *Server, stop func(), done chan error, err error) {
	if srv, err = NewServer(cfg, lg); err != nil {
		return nil, nil, nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	done = make(chan error, 1)
	go func() { done <- srv.Run(sctx) }()
	select {
	case <-srv.Ready():
		return srv, stop, done, nil
	case err := <-done:
		stop()
		return nil, nil, nil, fmt.Errorf("local cluster: %w", err)
	case <-ctx.Done():
		stop()
		<-done
		return nil, nil, nil, ctx.Err()
	}
}
