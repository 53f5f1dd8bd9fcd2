package cli

import (
	"strings"
	"testing"
	"time"
)

// TestHotKeyConfig: the -hotkey.* flags are validated for every role, the
// coordinator's -hotkey.keep against what routers accept and aggregators
// keep, and MaxSkew is the routers' -router.max-clock-skew.
func TestHotKeyConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string // "" = valid
	}{
		{"defaults", nil, ""},
		{"lead time below safety", []string{"-target=router", "-hotkey.lead-time=5s"}, "-hotkey.lead-time 5s: must be above -hotkey.safety=10s"},
		{"unsplit above split rate", []string{"-target=aggregator", "-hotkey.unsplit-rate=2000"}, "-hotkey.unsplit-rate 2000"},
		{"keep below retention", []string{"-target=coordinator", "-hotkey.keep=23h"}, "-hotkey.keep 23h0m0s: must be at least -router.acceptance-horizon=6h0m0s and -aggregator.retention=24h0m0s"},
		{"keep below retention, no coordinator", []string{"-target=router", "-hotkey.keep=23h"}, ""},
		{"history writer never sees a period", []string{"-target=aggregator", "-archive.bucket=/tmp/b", "-aggregator.dedup-horizon=80s", "-aggregator.retention=80s", "-history.period=1m", "-history.poll=1s"}, "-aggregator.retention 1m20s: must be more than -aggregator.dedup-horizon=1m20s plus -history.period=1m0s less a minute plus -history.poll=1s"},
		{"history writer has a second", []string{"-target=aggregator", "-archive.bucket=/tmp/b", "-aggregator.dedup-horizon=80s", "-aggregator.retention=82s", "-history.period=1m", "-history.poll=1s"}, ""},
		{"history period longer than the gap", []string{"-target=aggregator", "-archive.bucket=/tmp/b", "-aggregator.dedup-horizon=1m", "-aggregator.retention=3m", "-history.period=5m"}, "-aggregator.retention 3m0s: must be more than"},
		{"the same without history", []string{"-target=aggregator", "-aggregator.dedup-horizon=1m", "-aggregator.retention=3m"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, cfg := newFlags()
			if err := parse(fs, append([]string{"-router.max-clock-skew=42s"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.err)
			}
			if hk := cfg.hotKey(); hk.MaxSkew != 42*time.Second {
				t.Fatalf("hot-key MaxSkew %v, want -router.max-clock-skew", hk.MaxSkew)
			}
		})
	}
}
