//go:build !nobench

package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestChaosRunFlags checks what `clickagg chaos run` refuses before it
// starts anything: each error names its flag.
func TestChaosRunFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-kinds=kill,flood"}, `-kinds: unknown fault kind "flood"`},
		{[]string{"-events=10"}, "-events 10: at least 1000"},
		{[]string{"-rate=5"}, "-rate 5: at least 100"},
		{[]string{"-faults=-1"}, "-faults -1: must not be negative"},
		{[]string{"-env=NOEQUALS"}, `"NOEQUALS": want NAME=VALUE`},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		var out bytes.Buffer
		err := runChaosRun(context.Background(), append([]string{"-dir=" + t.TempDir()}, c.args...), &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error containing %q", c.args, err, c.want)
		}
	}
	var out bytes.Buffer
	err := runChaosRun(context.Background(), []string{"-help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v", err)
	}
}
