package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const synopsis = `clickagg counts ad clicks exactly.

Usage:
  clickagg [flags]            run the roles named by -target against etcd and Redis
  clickagg dev [flags]        run everything on this machine (embedded etcd, a redis-server, all roles, synthetic clicks)
  clickagg loadgen [flags]    send synthetic clicks to a router
  clickagg ship [flags]       tail click log files and send them to the routers, exactly once
  clickagg bench [flags]      measure a cluster and two baselines, write docs/benchmarks.md
  clickagg recalc [flags]     recount a range of minutes from the raw archive as a new history revision; -apply serves it
  clickagg <command> -help    the flags of a command`

// Main runs the clickagg command with args (without the program name) and
// returns the process exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(args) > 0 && args[0] == "dev":
		err = runDev(ctx, args[1:])
	case len(args) > 0 && args[0] == "loadgen":
		err = runLoadgen(ctx, args[1:])
	case len(args) > 0 && args[0] == "ship":
		err = runShip(ctx, args[1:])
	case len(args) > 0 && args[0] == "recalc":
		err = runRecalc(ctx, args[1:])
	case len(args) > 0 && args[0] == "bench":
		err = runBench(ctx, args[1:])
	default:
		err = runServer(ctx, args)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "clickagg: %v\n", err)
		return 1
	}
	return 0
}

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("clickagg", flag.ContinueOnError)
	setUsage(fs, synopsis)
	var cfg ServerConfig
	cfg.RegisterFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "cluster.partitions" {
			cfg.partitionsSet = true
		}
	})
	if _, ok := os.LookupEnv(EnvName("cluster.partitions")); ok {
		cfg.partitionsSet = true
	}
	lg, err := newLogger(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	s, err := NewServer(cfg, lg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
