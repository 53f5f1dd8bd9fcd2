//go:build !nobench

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/clickagg/clickagg/authz"
	"github.com/clickagg/clickagg/bench"
	"github.com/clickagg/clickagg/localserver"
	"github.com/clickagg/clickagg/tlsconf"
)

// comparison is a bench that runs the same load on a new local cluster
// for each of its setups in turn and writes one section of the report:
// -bench.redis-topologies and -bench.security.
type comparison struct {
	report bench.Comparison
	setups []benchSetup
	// queries measures query latency on each cluster after its load.
	queries bool
}

// benchSetup is one cluster of a comparison.
type benchSetup struct {
	name string
	// about, when set, explains the setup under the report's table.
	about string
	// primaries is 0 for one redis-server, else the primaries of a Redis
	// Cluster, each with replicas replicas.
	primaries, replicas int
	// waitReplicas is -redis.wait-replicas.
	waitReplicas int
	// tls and auth are the cluster's -tls.* and -auth.* flags, client
	// how every connection of the bench dials it; zero is plaintext.
	tls    tlsconf.Config
	auth   authz.Config
	client clientFlags
}

// benchComparison runs cmp: a new local cluster for each setup in turn,
// under dir, measured by bench.RunTopology.
func benchComparison(ctx context.Context, cfg ServerConfig, bc bench.Config, cmp comparison, dir, command string, lg *slog.Logger, out io.Writer) error {
	rep := &bench.TopologyReport{Comparison: cmp.report, Started: time.Now(), Command: command, Config: bc,
		Settings: []bench.Setting{
			{Name: "cluster", Value: fmt.Sprintf("every role in the bench's process (-target=all), embedded etcd; every redis-server with AOF appendfsync=%s", bc.AppendFsync)},
			{Name: "aggregator", Value: fmt.Sprintf("-aggregator.snapshot-interval=%s -aggregator.read-count=%d -archive.bucket=<a directory> -archive.interval=%s", cfg.Aggregator.SnapshotInterval, cfg.Aggregator.ReadCount, cfg.Archive.Interval)},
		}}
	for _, s := range cmp.setups {
		if s.about != "" {
			rep.Settings = append(rep.Settings, bench.Setting{Name: s.name, Value: s.about})
		}
	}
	for i, s := range cmp.setups {
		res, err := benchSetupRun(ctx, cfg, bc, s, cmp.queries, filepath.Join(dir, fmt.Sprintf("setup-%d", i)), lg, out)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		rep.Runs = append(rep.Runs, res)
	}
	rep.Machine = rep.Runs[0].Machine
	fmt.Fprint(out, rep.Markdown())
	if bc.Out == "" {
		return nil
	}
	return rep.WriteSection(bc.Out)
}

// benchSetupRun starts etcd, s's Redis and every clickagg role in this
// process under dir, measures them, and stops them.
func benchSetupRun(ctx context.Context, cfg ServerConfig, bc bench.Config, s benchSetup, queries bool, dir string, lg *slog.Logger, out io.Writer) (*bench.TopologyResult, error) {
	cfg.ArchiveBucket = filepath.Join(dir, "archive")
	cfg.Redis.Addr = ""
	cfg.Redis.WaitReplicas = s.waitReplicas
	cfg.TLS, cfg.Auth = s.tls, s.auth
	t := bench.Targets{}
	var err error
	if t.DialOptions, err = s.client.dialOptions(lg); err != nil {
		return nil, err
	}
	if s.primaries > 0 {
		rc, err := localserver.StartRedisCluster(ctx, localserver.RedisClusterConfig{Dir: filepath.Join(dir, "redis"),
			Primaries: s.primaries, ReplicasPerPrimary: s.replicas, AppendFsync: bc.AppendFsync})
		if err != nil {
			return nil, err
		}
		defer rc.Stop()
		cfg.Redis.ClusterAddrs = strings.Join(rc.Addrs(), ",")
		cfg.Redis.PasswordFile = rc.Nodes[0].PasswordFile
		t.RedisNodes, t.ClusterRedisPassword = rc.Addrs(), rc.Password
	}
	deps, err := startLocalDeps(ctx, &cfg, localDepsConfig{Dir: dir, EtcdLog: "fatal", AppendFsync: bc.AppendFsync})
	if err != nil {
		return nil, err
	}
	defer deps.Close()
	if deps.redis != nil {
		t.RedisNodes, t.ClusterRedisPassword = []string{deps.redis.Addr}, deps.redis.Password
	}
	srv, stop, done, err := startReady(ctx, cfg, lg)
	if err != nil {
		return nil, err
	}
	defer stop()
	t.Router, t.Queryd, t.Coordinator = srv.GRPCAddr(), srv.GRPCAddr(), srv.GRPCAddr()
	res, err := bench.RunTopology(ctx, bc, t, s.name, bc.TopologyRate, out)
	if err == nil && queries {
		err = bench.RunTopologyQueries(ctx, bc, t, res, out)
	}
	stop()
	if rerr := <-done; err == nil && rerr != nil && !errors.Is(rerr, context.Canceled) {
		err = fmt.Errorf("local cluster: %w", rerr)
	}
	return res, err
}
