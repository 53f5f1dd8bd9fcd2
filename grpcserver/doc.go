// Package grpcserver holds what every clickagg gRPC server is built with
// besides its services: a codec whose refusals reach the client as
// INVALID_ARGUMENT, and bounds on connections and streams.
//
// # Malformed requests
//
// grpc turns any error of the codec's Unmarshal into INTERNAL ("grpc:
// failed to unmarshal the received message") and writes that status
// before the handler or any interceptor runs, so a request with invalid
// UTF-8 in a string field looked like a server fault. The codec of this
// package does not fail: it records why the message does not decode,
// keyed by the message, and the interceptors installed with it answer
// INVALID_ARGUMENT naming the field (events[3].ad_id is not valid UTF-8).
// The codec is therefore only ever installed together with its
// interceptors, by Options.
//
// # Streams
//
// HTTP/2's MAX_CONCURRENT_STREAMS makes a client queue, not fail, and every
// idle stream costs two goroutines and their buffers. Options caps the
// streaming RPCs open on one connection and on the whole server; a stream
// beyond either cap fails at once with RESOURCE_EXHAUSTED, and the streams
// already open go on. Keepalive enforcement and an idle-connection limit
// close connections that a client abandoned or that ping too often.
//
// # Call timeout
//
// A unary call inherits its client's deadline, and a client may set none:
// a call whose own call to etcd, Redis or another member then meets a
// peer that hangs (stopped by SIGSTOP, its TCP connection open) would hold
// its goroutine as long as the peer hangs. Options bounds every unary
// call by -grpc.call-timeout (1m, far above the slowest call by design),
// ending its calls and failing it with DEADLINE_EXCEEDED naming the flag.
// Streaming calls are long-lived on purpose and are not bounded.
//
// # Connection age
//
// A client resolves its target when it connects, and a connection that
// never closes keeps it on the servers it found then: routers added by a
// scale-out would get no calls from it, its streams least of all. A
// maximum connection age (-grpc.max-connection-age, 5m) has the server
// send GOAWAY to connections that old: the client opens a new connection,
// resolving the target again (with package grpcclient's round_robin, over
// every address it has), while calls in flight finish on the old one.
// Calls that race the GOAWAY are retried by grpc itself, as they never
// reached the server. A stream still open after the grace
// (-grpc.max-connection-age-grace, 30s) is cut with UNAVAILABLE, which
// clients retry like any unavailable server.
package grpcserver
