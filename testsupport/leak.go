package testsupport

import (
	"testing"

	"go.uber.org/goleak"
)

// daemons are goroutines that etcd's and grpc's dependencies start once per
// process, from package init or first use, and never stop; they are not
// leaks of the code under test. A package that imports none of them loses
// nothing by ignoring them.
var daemons = []goleak.Option{
	goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	goleak.IgnoreTopFunction("github.com/golang/glog.(*loggingT).flushDaemon"),
	goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
}

// IgnoreDaemons returns the goleak options that ignore the process-wide
// goroutines of etcd's and grpc's dependencies, for tests that call
// goleak.VerifyNone themselves.
func IgnoreDaemons() []goleak.Option {
	return append([]goleak.Option(nil), daemons...)
}

// VerifyTestMain runs the package's tests and fails the run if goroutines
// are left when they end, other than the process-wide daemons and whatever
// extra ignores. Use it as the whole of TestMain:
//
//	func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M, extra ...goleak.Option) {
	goleak.VerifyTestMain(m, append(IgnoreDaemons(), extra...)...)
}
