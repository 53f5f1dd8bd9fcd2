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
