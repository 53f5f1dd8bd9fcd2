//go:build !nobench

package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clickagg/clickagg/chaos"
)

const chaosRunSynopsis = `clickagg chaos run starts a whole cluster as separate processes on this
machine (package chaos), drives a seeded workload through it while a
seeded fault schedule plays, then checks every answer against the ground
truth the workload kept. It prints the schedule before the run and a
summary after it; the same -seed (with the same other flags) replays the
same workload and schedule. The exit status is 1 when any answer was
wrong or the run could not finish.

Usage:
  clickagg chaos run [flags]`

// envList is a repeatable -env flag.
type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }
func (e *envList) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q: want NAME=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// runChaosRun runs `clickagg chaos run`.
func runChaosRun(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("clickagg chaos run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nFlags:\n", chaosRunSynopsis)
		fs.PrintDefaults()
	}
	var (
		cfg   chaos.Config
		kinds string
		env   envList
		keep  bool
		level slog.Level
	)
	fs.Uint64Var(&cfg.Seed, "seed", 1, "Seed of the workload and the fault schedule; the summary prints the command that replays the run.")
	fs.IntVar(&cfg.Events, "events", chaos.DefaultEvents, "Unique valid clicks of the workload; duplicates, late and invalid events come on top.")
	fs.IntVar(&cfg.Faults, "faults", chaos.DefaultFaults, "Faults in the schedule; every kind of -kinds at least once when there are enough.")
	fs.StringVar(&kinds, "kinds", "all", "Comma-separated fault kinds to draw from: kill, kill-several, pause, redis-restart, redis-failover, etcd-member-kill, etcd-leader-kill, etcd-unreachable, net-latency, net-reset, net-oneway, rebalance, drain, split, unsplit; or all.")
	fs.IntVar(&cfg.Rate, "rate", chaos.DefaultRate, "Clicks per second the workload offers; -events / -rate is how long the faults play.")
	fs.StringVar(&cfg.Cluster.Dir, "dir", "", "Directory for every data dir and log of the cluster; empty: a new temporary directory, removed after a passing run unless -keep.")
	fs.BoolVar(&keep, "keep", false, "Keep -dir's data and logs after a passing run (a failing run always keeps them).")
	fs.StringVar(&cfg.Cluster.Binary, "binary", "", "The clickagg binary the cluster runs; empty: this executable.")
	fs.IntVar(&cfg.Cluster.Partitions, "partitions", 16, "The cluster's -cluster.partitions.")
	fs.IntVar(&cfg.Cluster.Routers, "routers", 2, "Routers in the cluster.")
	fs.IntVar(&cfg.Cluster.Aggregators, "aggregators", 3, "Aggregators in the cluster.")
	fs.IntVar(&cfg.Cluster.Coordinators, "coordinators", 2, "Coordinators in the cluster.")
	fs.IntVar(&cfg.Cluster.Queryds, "queryds", 2, "Queryds in the cluster.")
	fs.IntVar(&cfg.Cluster.EtcdMembers, "etcd-members", 3, "Members of the cluster's etcd.")
	fs.IntVar(&cfg.Cluster.RedisReplicas, "redis-replicas", 1, "Replicas of the Redis primary, under three sentinels.")
	fs.DurationVar(&cfg.Cluster.LeaseTTL, "lease-ttl", 5*time.Second, "The processes' -etcd.lease-ttl; some pauses and etcd outages last longer than it.")
	fs.Var(&env, "env", "NAME=VALUE added to the environment of every clickagg process of the cluster; repeatable.")
	fs.TextVar(&level, "log.level", slog.LevelInfo, "Level of the harness's own log, on stderr.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if cfg.Kinds, err = chaos.ParseKinds(kinds); err != nil {
		return fmt.Errorf("-kinds: %w", err)
	}
	if cfg.Cluster.Binary == "" {
		if cfg.Cluster.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("-binary: %w", err)
		}
	}
	temp := cfg.Cluster.Dir == ""
	if temp {
		if cfg.Cluster.Dir, err = os.MkdirTemp("", "clickagg-chaos-"); err != nil {
			return err
		}
	}
	if cfg.Cluster.Dir, err = filepath.Abs(cfg.Cluster.Dir); err != nil {
		return fmt.Errorf("-dir: %w", err)
	}
	cfg.Cluster.Env = env
	cfg.Cluster.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Out = stdout
	_, err = chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stdout, "data and logs kept in %s\n", cfg.Cluster.Dir)
		return err
	}
	if temp && !keep {
		return os.RemoveAll(cfg.Cluster.Dir)
	}
	fmt.Fprintf(stdout, "data and logs in %s\n", cfg.Cluster.Dir)
	return nil
}
