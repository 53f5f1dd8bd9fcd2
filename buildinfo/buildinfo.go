package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set by the linker (-X); see the package comment.
var (
	version  string
	revision string
)

// Unknown is what Info holds for a fact neither stamped nor recorded.
const Unknown = "unknown"

// Info is what the binary knows about its build.
type Info struct {
	// Version is the release (v0.2.0, or `git describe` output for a
	// Makefile build), or the module's pseudo-version.
	Version string
	// Revision is the commit, with "-dirty" for uncommitted changes.
	Revision string
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string
}

// Get returns this binary's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, revision, bi)
}

// resolve prefers the stamped values and falls back on bi (nil when the
// binary has no build information).
func resolve(stampedVersion, stampedRevision string, bi *debug.BuildInfo) Info {
	info := Info{Version: stampedVersion, Revision: stampedRevision, GoVersion: runtime.Version()}
	if bi != nil {
		info.GoVersion = bi.GoVersion
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Revision == "" {
			var rev string
			var dirty bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if rev != "" && dirty {
				rev += "-dirty"
			}
			info.Revision = rev
		}
	}
	if info.Version == "" {
		info.Version = Unknown
	}
	if info.Revision == "" {
		info.Revision = Unknown
	}
	return info
}

// String is the line `clickagg -version` prints.
func (i Info) String() string {
	return fmt.Sprintf("clickagg %s (commit %s, %s)", i.Version, i.Revision, i.GoVersion)
}

// NewCollector returns the clickagg_build_info gauge: always 1, with the
// version, revision and goversion labels, the Prometheus convention for
// joining a version onto any other series (… * on(instance)
// group_left(version) clickagg_build_info).
func NewCollector(i Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "clickagg_build_info",
		Help:        "Always 1; its labels say which clickagg build the process runs.",
		ConstLabels: prometheus.Labels{"version": i.Version, "revision": i.Revision, "goversion": i.GoVersion},
	})
	g.Set(1)
	return g
}
