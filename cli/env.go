package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// EnvName is the environment variable that overrides flag name.
func EnvName(name string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return "CLICKAGG_" + strings.ToUpper(r.Replace(name))
}

// applyEnv sets every flag not given on the command line from its
// environment variable, so that Kubernetes can configure pods through env.
func applyEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e)
			}
		}
	})
	return err
}

// parse parses args, then the environment, and prints usage that names the
// environment variables too.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return applyEnv(fs)
}

// setUsage makes -help list every flag with its default and its
// environment variable.
func setUsage(fs *flag.FlagSet, synopsis string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s\n\nFlags (each also settable as CLICKAGG_<NAME>, e.g. -redis.addr as CLICKAGG_REDIS_ADDR):\n", synopsis)
		fs.PrintDefaults()
	}
}
