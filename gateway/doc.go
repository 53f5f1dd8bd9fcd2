// Package gateway serves the read RPCs of the CoordinatorService
// (ListMembers, GetAssignment, GetClusterStatus, GetLoad, GetHotKeys,
// GetHandoffs) as JSON under GET /v1/cluster/..., the routes the
// google.api.http options of coordinator.proto name, so that a browser
// (the web console) and curl read the cluster as grpcurl does.
//
// Every process serves these routes on its HTTP port, because the console
// users open is queryd's, which has no coordinator in it:
//
//   - a process with the coordinator role calls its own server in process
//     (NewLocal);
//   - any other process forwards each call over gRPC to a live coordinator
//     it finds in the etcd membership (Forwarder, behind New). Any
//     coordinator answers reads, leader or not, so the forwarder keeps to
//     the one that answered last and tries the next registered one only
//     when that one cannot be reached or does not answer within
//     AttemptTimeout: a stopped coordinator (SIGSTOP) keeps its connection
//     open and stays registered until its lease expires, and a read sent
//     to it would otherwise wait as long as the caller does.
//
// The mutations (MovePartition, DrainMember, ...) have no HTTP binding:
// they stay with grpcurl and the admin permission. Authorization is the
// caller's job (cli wraps the handler in the same authz.HTTP check as
// queryd's /v1/, with the query permission the gRPC methods need).
package gateway
