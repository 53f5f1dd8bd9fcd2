//go:build chaosbreak

package breakage

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// EnvVar names the switches to turn on, comma-separated.
const EnvVar = "CLICKAGG_BREAK"

var names = map[string]Switch{
	"dedup-off":        DedupOff,
	"offset-apart":     OffsetApart,
	"fencing-off":      FencingOff,
	"ack-before-redis": AckBeforeRedis,
	"partial-queryd":   PartialQueryd,
}

// on holds a bit per switch, 1 << s. Atomic, so that tests may flip
// switches (Set) while the code they test reads them.
var on atomic.Uint64

// init reads EnvVar before any other package's initialization that
// imports this one, so a bad name stops the process before it starts
// anything.
func init() {
	set, err := Parse(os.Getenv(EnvVar))
	if err != nil {
		fmt.Fprintf(os.Stderr, "clickagg (chaosbreak build): %v\n", err)
		os.Exit(2)
	}
	on.Store(set)
	if set != 0 {
		fmt.Fprintf(os.Stderr, "clickagg (chaosbreak build): %s=%s: this process is broken on purpose\n", EnvVar, os.Getenv(EnvVar))
	}
}

// Parse returns the set (a bit per switch, 1 << s) that v, a
// comma-separated list of switch names, turns on; an unknown name is an
// error listing the valid ones.
func Parse(v string) (uint64, error) {
	var set uint64
	for name := range strings.SplitSeq(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		s, ok := names[name]
		if !ok {
			return 0, fmt.Errorf("%s: unknown switch %q; valid: %s", EnvVar, name, Names())
		}
		set |= 1 << s
	}
	return set, nil
}

// Names lists the valid switch names, comma-separated, in Switch order.
func Names() string {
	list := make([]string, len(names))
	for n, s := range names {
		list[s-1] = n
	}
	return strings.Join(list, ", ")
}

// On reports whether s is on.
func On(s Switch) bool { return on.Load()&(1<<s) != 0 }

// Set turns s on or off for a test, until the test's cleanup calls the
// function it returns.
func Set(s Switch, enabled bool) (restore func()) {
	for {
		old := on.Load()
		next := old &^ (1 << s)
		if enabled {
			next |= 1 << s
		}
		if on.CompareAndSwap(old, next) {
			was := old&(1<<s) != 0
			return func() { Set(s, was) }
		}
	}
}
