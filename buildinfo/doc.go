// Package buildinfo says which clickagg a process is: its version, the
// commit it was built from and the Go version, for `clickagg -version`,
// the clickagg_build_info metric and the members' registrations in etcd.
//
// Release builds stamp the version and commit with the linker:
//
//	go build -ldflags "-X github.com/clickagg/clickagg/buildinfo.version=v0.2.0 \
//	  -X github.com/clickagg/clickagg/buildinfo.revision=$(git rev-parse HEAD)" ./cmd/clickagg
//
// (the Makefile and the Dockerfile do). An unstamped build falls back on
// what the Go toolchain recorded in the binary (runtime/debug.ReadBuildInfo):
// the module version, which for a build in a git checkout is a
// pseudo-version naming the commit, and the vcs.revision setting, with
// "-dirty" when the checkout had uncommitted changes. A build without
// either (go run, -buildvcs=false) says "unknown" rather than nothing, so
// that the label of the metric and the column of `clickagg status` are
// never empty for a current process; empty means a process older than the
// field.
package buildinfo
