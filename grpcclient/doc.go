// Package grpcclient holds what every clickagg gRPC client is built with,
// as package grpcserver holds what every server is.
//
// # Load spreading
//
// grpc's default policy, pick_first, sends every call of a connection to
// the first address its name resolves to. Behind a Kubernetes headless
// Service (dns:///router-headless.clickagg.svc:9090) that is one router
// pod for the client's life, however many pods the Service has. With
// round_robin the client keeps a subchannel to every address the
// resolver returns and rotates calls over those that are ready; a name
// with one address (a plain host:port, a ClusterIP Service) behaves as
// before. A new pod is only seen when the name is resolved again, which
// grpc does when a connection closes: the servers' maximum connection age
// (-grpc.max-connection-age) closes them regularly, so clients spread over
// pods added since they connected, long-lived streams included.
package grpcclient
