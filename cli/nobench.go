//go:build nobench

package cli

import (
	"context"
	"errors"
)

// runBench stands in for clickagg bench in a binary built with -tags
// nobench, as the release image is: the bench (package bench, its pprof
// reader, its workload and baselines, tlstest's throwaway certificates)
// is a tool for developers, and the server does not carry it.
func runBench(context.Context, []string) error {
	return errors.New("bench: this binary was built with -tags nobench (the release image is); build one with the bench by `make build`")
}

// runChaos stands in for clickagg chaos in a -tags nobench binary: the
// chaos harness (package chaos, toxiproxy) is a developer tool too.
func runChaos(context.Context, []string) error {
	return errors.New("chaos: this binary was built with -tags nobench (the release image is); build one with the chaos harness by `make build`")
}
