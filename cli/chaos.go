//go:build !nobench

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/clickagg/clickagg/chaos"
)

const chaosSynopsis = `clickagg chaos runs a whole cluster as separate processes on this machine
and throws seeded faults at it (package chaos).

Usage:
  clickagg chaos run [flags]           a seeded run: workload, fault schedule, exact checks, summary
  clickagg chaos etcd-member [flags]   one member of the harness's etcd (the harness starts these)
  clickagg chaos <command> -help       the flags of a command`

// runChaos runs a `clickagg chaos` command.
func runChaos(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Println(chaosSynopsis)
		return errors.New("chaos: a command is required")
	}
	switch args[0] {
	case "etcd-member":
		return runEtcdMember(ctx, args[1:])
	case "run":
		return runChaosRun(ctx, args[1:], os.Stdout)
	case "-help", "--help", "-h", "help":
		fmt.Println(chaosSynopsis)
		return flag.ErrHelp
	}
	return fmt.Errorf("chaos: unknown command %q (want run or etcd-member)", args[0])
}

// runEtcdMember runs `clickagg chaos etcd-member`. Its flags are not
// read from CLICKAGG_* variables, unlike the server's: -name and -dir
// would take the environment's CLICKAGG_NAME or CLICKAGG_DIR, which the
// harness's children inherit.
func runEtcdMember(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("clickagg chaos etcd-member", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nFlags:\n", chaos.EtcdMemberSynopsis)
		fs.PrintDefaults()
	}
	var cfg chaos.EtcdMemberConfig
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return chaos.RunEtcdMember(ctx, cfg)
}
