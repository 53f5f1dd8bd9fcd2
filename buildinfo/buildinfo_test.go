package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestResolve(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name         string
		version, rev string
		bi           *debug.BuildInfo
		want         Info
	}{
		{"stamped wins", "v0.2.0", "abc123", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-x"}, Settings: vcs("fff", "true")},
			Info{"v0.2.0", "abc123", "go1.26.8"}},
		{"recorded", "", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.1.1-0.20261207-20a8ad2e"}, Settings: vcs("20a8ad2e", "false")},
			Info{"v0.1.1-0.20261207-20a8ad2e", "20a8ad2e", "go1.26.8"}},
		{"dirty checkout", "", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("20a8ad2e", "true")},
			Info{Unknown, "20a8ad2e-dirty", "go1.26.8"}},
		{"stamped version only", "v0.2.0-3-gabc-dirty", "", &debug.BuildInfo{GoVersion: "go1.26.8", Settings: vcs("abcdef", "false")},
			Info{"v0.2.0-3-gabc-dirty", "abcdef", "go1.26.8"}},
		{"nothing recorded", "", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Info{Unknown, Unknown, "go1.26.8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolve(tt.version, tt.rev, tt.bi); got != tt.want {
				t.Fatalf("resolve = %+v, want %+v", got, tt.want)
			}
		})
	}
	if got := resolve("", "", nil); got.Version != Unknown || got.Revision != Unknown || got.GoVersion == "" {
		t.Fatalf("resolve without build info = %+v", got)
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(Info{"v0.2.0", "abc123", "go1.26.8"}))
	want := `# HELP clickagg_build_info Always 1; its labels say which clickagg build the process runs.
# TYPE clickagg_build_info gauge
clickagg_build_info{goversion="go1.26.8",revision="abc123",version="v0.2.0"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "clickagg_build_info"); err != nil {
		t.Fatal(err)
	}
}

func TestString(t *testing.T) {
	if got, want := (Info{"v0.2.0", "abc123", "go1.26.8"}).String(), "clickagg v0.2.0 (commit abc123, go1.26.8)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}
