package cli

import (
	"testing"

	"github.com/clickagg/clickagg/buildinfo"
)

// TestRegistryBuildInfo: every process's /metrics (servers, ship) comes
// from newRegistry, which says the build.
func TestRegistryBuildInfo(t *testing.T) {
	mfs, err := newRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	bi := buildinfo.Get()
	for _, mf := range mfs {
		if mf.GetName() != "clickagg_build_info" {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%d clickagg_build_info series, want 1", len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if m.GetGauge().GetValue() != 1 || labels["version"] != bi.Version || labels["revision"] != bi.Revision || labels["goversion"] != bi.GoVersion {
			t.Fatalf("clickagg_build_info %v = %v, want 1 with %+v", labels, m.GetGauge().GetValue(), bi)
		}
		return
	}
	t.Fatal("no clickagg_build_info")
}
