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
package grpcserver
