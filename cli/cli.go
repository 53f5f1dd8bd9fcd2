package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/clickagg/clickagg/buildinfo"
)

const synopsis = `clickagg counts ad clicks exactly.

Usage:
  clickagg [flags]            run the roles named by -target against etcd and Redis
  clickagg dev [flags]        run everything on this machine (embedded etcd, a redis-server, all roles, synthetic clicks)
  clickagg loadgen [flags]    send synthetic clicks to a router
  clickagg ship [flags]       tail click log files and send them to the routers, exactly once
  clickagg bench [flags]      measure a cluster and two baselines, write docs/benchmarks.md
  clickagg chaos <command>    run a whole cluster on this machine under seeded faults (developer tool)
  clickagg recalc [flags]     recount a range of minutes from the raw archive as a new history revision; -apply serves it
  clickagg reconcile [flags]  recount a range from the raw archive and compare it with the history served
  clickagg status [flags]     the cluster at a glance: members, versions, partitions, lag, watermark delay, hot keys, handoffs
  clickagg version            print the version, the commit and the Go version (also: clickagg -version)
  clickagg <command> -help    the flags of a command`

// Main runs the clickagg command with args (without the program name) and
// returns the process exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case len(args) > 0 && isVersion(args[0]):
		// Before any flag is parsed: a version needs no configuration,
		// and no environment variable can turn it on by accident.
		fmt.Println(buildinfo.Get())
	case len(args) > 0 && args[0] == "status":
		err = runStatus(ctx, args[1:], os.Stdout)
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
	case len(args) > 0 && args[0] == "chaos":
		err = runChaos(ctx, args[1:])
	case len(args) > 0 && args[0] == "reconcile":
		err = runReconcile(ctx, args[1:], os.Stdout, time.Now())
	default:
		err = runServer(ctx, args)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "clickagg: %v\n", err)
	}
	return exitCode(err)
}

// isVersion reports whether arg asks for the version.
func isVersion(arg string) bool {
	return arg == "version" || arg == "-version" || arg == "--version"
}

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("clickagg", flag.ContinueOnError)
	setUsage(fs, synopsis)
	var cfg ServerConfig
	cfg.RegisterFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
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
