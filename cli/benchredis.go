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

	"github.com/clickagg/clickagg/bench"
	"github.com/clickagg/clickagg/localserver"
)

// redisTopology is one Redis setup of clickagg bench -bench.redis-topologies.
type redisTopology struct {
	name string
	// primaries is 0 for one redis-server, else the primaries of a Redis
	// Cluster, each with replicas replicas.
	primaries, replicas int
	// waitReplicas is -redis.wait-replicas.
	waitReplicas int
}

var redisTopologies = []redisTopology{
	{name: "one redis-server"},
	{name: "Redis Cluster, 3 primaries", primaries: 3},
	{name: "Redis Cluster, 3 primaries with a replica each", primaries: 3, replicas: 1},
	{name: "Redis Cluster, 3 primaries with a replica each, -redis.wait-replicas=1", primaries: 3, replicas: 1, waitReplicas: 1},
}

// benchTopologies runs clickagg bench -bench.redis-topologies: a new local
// cluster on each Redis setup in turn, under dir, measured by
// bench.RunTopology.
func benchTopologies(ctx context.Context, cfg ServerConfig, bc bench.Config, dir, appendFsync, command string, lg *slog.Logger, out io.Writer) error {
	rep := &bench.TopologyReport{Started: time.Now(), Command: command, Config: bc,
		Settings: []bench.Setting{
			{Name: "cluster", Value: fmt.Sprintf("every role in the bench's process (-target=all), embedded etcd; every redis-server with AOF appendfsync=%s", appendFsync)},
			{Name: "aggregator", Value: fmt.Sprintf("-aggregator.snapshot-interval=%s -aggregator.read-count=%d -archive.bucket=<a directory> -archive.interval=%s", cfg.Aggregator.SnapshotInterval, cfg.Aggregator.ReadCount, cfg.Archive.Interval)},
		}}
	for i, top := range redisTopologies {
		res, err := benchTopology(ctx, cfg, bc, top, filepath.Join(dir, fmt.Sprintf("topology-%d", i)), appendFsync, lg, out)
		if err != nil {
			return fmt.Errorf("%s: %w", top.name, err)
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

// benchTopology starts etcd, top's Redis and every clickagg role in this
// process under dir, measures them, and stops them.
func benchTopology(ctx context.Context, cfg ServerConfig, bc bench.Config, top redisTopology, dir, appendFsync string, lg *slog.Logger, out io.Writer) (*bench.TopologyResult, error) {
	cfg.ArchiveBucket = filepath.Join(dir, "archive")
	cfg.Redis.Addr = ""
	cfg.Redis.WaitReplicas = top.waitReplicas
	t := bench.Targets{}
	if top.primaries > 0 {
		rc, err := localserver.StartRedisCluster(ctx, localserver.RedisClusterConfig{Dir: filepath.Join(dir, "redis"),
			Primaries: top.primaries, ReplicasPerPrimary: top.replicas, AppendFsync: appendFsync})
		if err != nil {
			return nil, err
		}
		defer rc.Stop()
		cfg.Redis.ClusterAddrs = strings.Join(rc.Addrs(), ",")
		cfg.Redis.PasswordFile = rc.Nodes[0].PasswordFile
		t.RedisNodes, t.ClusterRedisPassword = rc.Addrs(), rc.Password
	}
	deps, err := startLocalDeps(ctx, &cfg, localDepsConfig{Dir: dir, EtcdLog: "fatal", AppendFsync: appendFsync})
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
	res, err := bench.RunTopology(ctx, bc, t, top.name, bc.TopologyRate, out)
	stop()
	if rerr := <-done; err == nil && rerr != nil && !errors.Is(rerr, context.Canceled) {
		err = fmt.Errorf("local cluster: %w", rerr)
	}
	return res, err
}
