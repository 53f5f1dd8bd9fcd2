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
	fs := flag.NewFlagSet("clickagg bench", flag.ContinueOnError)
	setUsage(fs, benchSynopsis)
	var cfg ServerConfig
	cfg.RegisterFlags(fs)
	var bc bench.Config
	bc.RegisterFlags(fs)
	routerAddr := fs.String("bench.router", "", "gRPC address of a running cluster's router to measure; empty starts a cluster in this process")
	querydAddr := fs.String("bench.queryd", "", "gRPC address of the running cluster's queryd; default: -bench.router")
	coordAddr := fs.String("bench.coordinator", "", "gRPC address of the running cluster's coordinator (GetClusterStatus, for lag); default: -bench.queryd")
	clusterRedis := fs.String("bench.cluster-redis", "", "the running cluster's Redis, read only for its CPU time (optional)")
	clusterRedisPw := fs.String("bench.cluster-redis-password-file", "", "file holding -bench.cluster-redis's password, if it has one")
	baseRedis := fs.String("bench.redis", "", "Redis for the naive baseline and the snapshot measurement (they delete their keys afterwards); empty starts a redis-server child")
	baseRedisPw := fs.String("bench.redis-password-file", "", "file holding -bench.redis's password, if it has one")
	dataDir := fs.String("bench.data-dir", "", "empty or new directory for the local cluster's etcd and Redis data and the baseline Redis, kept afterwards; empty uses a temporary directory, removed afterwards")
	historyOnly := fs.Bool("bench.history", false, "measure only the archive (bytes and encoding time per event) and queries over a synthetic 30-day history of 2M ads in 64 partitions (counts over 30 days, top 100 over 7), and write their section of -bench.out; no cluster is started")
	historyRuns := fs.Int("bench.history-runs", 3, "with -bench.history: timed runs over the same history, each of 400 counts and 5 tops")
	appendFsync := fs.String("bench.appendfsync", "always", "AOF fsync policy of the redis-server children, the cluster's and the baseline's: always (an acknowledged click is on disk), everysec or no")
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
		return nil, err
	}
	if err := bc.Validate(); err != nil {
		return nil, err
	}
	if *historyOnly {
		return nil, benchHistory(ctx, bc, *historyRuns, *dataDir, commandLine(args), out)
	}
	logger, err := newLogger(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	t := bench.Targets{
		Router:      *routerAddr,
		Queryd:      *querydAddr,
		Coordinator: *coordAddr,
		Redis:       *baseRedis,
		Command:     commandLine(args),
		Tally: tally.Options{
			AllowedLateness: cfg.Aggregator.AllowedLateness,
			DedupHorizon:    cfg.Aggregator.DedupHorizon,
			Retention:       cfg.Aggregator.Retention,
		},
	}
	dir := *dataDir
	if dir != "" {
		// The ground truth is this run's events: a cluster holding an
		// earlier run's would answer differently.
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			return nil, fmt.Errorf("-bench.data-dir %s is not empty: the bench needs a fresh cluster and Redis", dir)
		}
	}
	if dir == "" && (t.Router == "" || t.Redis == "") {
		if dir, err = os.MkdirTemp("", "clickagg-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	steady := bc.Steady > 0
	if bc.Topologies || bc.Security {
		if t.Router != "" {
			return nil, errors.New("-bench.redis-topologies and -bench.security start their own clusters: they cannot measure -bench.router's")
		}
		cmp := redisComparison
		if bc.Security {
			if cfg.TLS.Enabled() || cfg.Auth.Enabled() {
				return nil, errors.New("-bench.security: makes its own certificates, token and policy; drop the -tls.* and -auth.* flags")
			}
			if cmp, err = securityComparison(filepath.Join(dir, "tls")); err != nil {
				return nil, fmt.Errorf("-bench.security: %w", err)
			}
		}
		return nil, benchComparison(ctx, cfg, bc, cmp, dir, *appendFsync, commandLine(args), logger, out)
	}
	if t.Redis == "" && !steady {
		r, err := localserver.StartRedis(ctx, localserver.RedisConfig{Dir: filepath.Join(dir, "baseline-redis"), AppendFsync: *appendFsync})
		if err != nil {
			return nil, fmt.Errorf("baseline redis: %w", err)
		}
		defer r.Stop()
		t.Redis, t.RedisPassword = r.Addr, r.Password
	} else if t.Redis != "" {
		if t.RedisPassword, err = optionalPassword(*baseRedisPw, "-bench.redis-password-file"); err != nil {
			return nil, err
		}
	}

	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if t.Router == "" {
		if cfg.ArchiveBucket == "" {
			// As in production: the logs go to the raw archive and are
			// trimmed once archived, so Redis's memory stays flat.
			cfg.ArchiveBucket = filepath.Join(dir, "archive")
		}
		deps, err := startLocalDeps(ctx, &cfg, localDepsConfig{Dir: dir, EtcdLog: "fatal", AppendFsync: *appendFsync})
		if err != nil {
			return nil, err
		}
		defer deps.Close()
		srv, stopSrv, done, err := startReady(ctx, cfg, logger)
		if err != nil {
			return nil, err
		}
		defer stopSrv()
		// The cluster stops when the bench is done with it, or when the
		// bench ends; if it stops on its own first, the bench is cancelled.
		var once sync.Once
		var stopping sync.Mutex
		stopped := false
		stop := func() {
			once.Do(func() {
				stopping.Lock()
				stopped = true
				stopping.Unlock()
				stopSrv()
				<-done
				deps.Close()
			})
		}
		defer stop()
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
		t.Router, t.Queryd, t.Coordinator = srv.GRPCAddr(), srv.GRPCAddr(), srv.GRPCAddr()
		if deps.redis != nil {
			t.ClusterRedis, t.ClusterRedisPassword = deps.redis.Addr, deps.redis.Password
		} else if cfg.Redis.ClusterAddrs == "" && cfg.Redis.SentinelMaster == "" {
			t.ClusterRedis = cfg.Redis.Addr
			if t.ClusterRedisPassword, err = optionalPassword(cfg.Redis.PasswordFile, "-redis.password-file"); err != nil {
				return nil, err
			}
		}
		t.InProcess = true
		t.StopCluster = stop
		t.Settings = []bench.Setting{
			{Name: "cluster", Value: fmt.Sprintf("every role in the bench's process (-target=all), embedded etcd, one redis-server with AOF appendfsync=%s, auto-aof-rewrite-percentage %d", *appendFsync, localserver.AOFRewritePercentage)},
			{Name: "aggregator", Value: fmt.Sprintf("-aggregator.snapshot-interval=%s -aggregator.read-count=%d -aggregator.allowed-lateness=%s -aggregator.dedup-horizon=%s -aggregator.raw-retention=%s -archive.bucket=<a directory> -archive.interval=%s", cfg.Aggregator.SnapshotInterval, cfg.Aggregator.ReadCount, cfg.Aggregator.AllowedLateness, cfg.Aggregator.DedupHorizon, cfg.Aggregator.RawRetention, cfg.Archive.Interval)},
			{Name: "router", Value: fmt.Sprintf("-router.tick-interval=%s -router.idle-watermark-lag=%s", cfg.Router.TickInterval, cfg.Router.IdleLag)},
			{Name: "coordinator", Value: fmt.Sprintf("-coordinator.status-timeout=%s", cfg.Coordinator.StatusTimeout)},
			{Name: "baseline Redis", Value: fmt.Sprintf("a second redis-server, AOF appendfsync=%s, auto-aof-rewrite-percentage %d", *appendFsync, localserver.AOFRewritePercentage)},
		}
	} else {
		if t.Queryd == "" {
			t.Queryd = t.Router
		}
		if t.Coordinator == "" {
			t.Coordinator = t.Queryd
		}
		t.ClusterRedis = *clusterRedis
		if t.ClusterRedisPassword, err = optionalPassword(*clusterRedisPw, "-bench.cluster-redis-password-file"); err != nil {
			return nil, err
		}
		t.Settings = []bench.Setting{{Name: "cluster", Value: fmt.Sprintf("running cluster: router %s, queryd %s, coordinator %s", t.Router, t.Queryd, t.Coordinator)}}
	}
	if steady {
		if t.ClusterRedis == "" {
			return nil, errors.New("-bench.steady with -bench.router: name the cluster's Redis with -bench.cluster-redis")
		}
		t.Settings = slices.DeleteFunc(t.Settings, func(s bench.Setting) bool { return s.Name == "baseline Redis" })
		res, err := bench.RunSteady(bctx, bc, t, out)
		if cause := context.Cause(bctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
			return nil, cause
		}
		if err != nil {
			return nil, err
		}
		fmt.Fprint(out, res.Markdown())
		if bc.Out != "" {
			return nil, res.WriteSteadySection(bc.Out)
		}
		return nil, nil
	}
	rep, err := bench.Run(bctx, bc, t, out)
	if cause := context.Cause(bctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return rep, cause
	}
	return rep, err
}

// benchHistory runs clickagg bench -bench.history: the history is written
// under dataDir, or a temporary directory removed afterwards.
func benchHistory(ctx context.Context, bc bench.Config, runs int, dataDir, command string, out io.Writer) error {
	if runs < 1 {
		return fmt.Errorf("-bench.history-runs %d: must be at least 1", runs)
	}
	dir := dataDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "clickagg-bench-history-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	res, err := bench.RunHistory(ctx, bc, histbench.Defaults(), runs, filepath.Join(dir, "history"), command, out)
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
