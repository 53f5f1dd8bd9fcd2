package grpcclient

import (
	"slices"

	"google.golang.org/grpc"
)

// ServiceConfig is the default service config of every client: calls
// rotate over every address the target resolves to. A service config the
// resolver supplies (DNS TXT records, disabled by default in grpc) wins.
const ServiceConfig = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// Options are the dial options every client adds to its own.
func Options() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultServiceConfig(ServiceConfig)}
}

// With returns opts followed by Options, without changing opts' array.
func With(opts ...grpc.DialOption) []grpc.DialOption {
	return slices.Concat(opts, Options())
}
