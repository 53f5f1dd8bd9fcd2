package grpcserver

import (
	"flag"
	"fmt"
	"time"
)

// Config bounds what clients may hold open on a gRPC server.
type Config struct {
	// MaxStreamsPerConn caps the streaming RPCs open on one connection.
	MaxStreamsPerConn int
	// MaxStreams caps the streaming RPCs open on the server.
	MaxStreams int
	// MaxConcurrentStreams is HTTP/2's per-connection limit on RPCs in
	// flight, unary ones included; past it a client queues. It must exceed
	// MaxStreamsPerConn, or a stream over that cap would queue instead of
	// failing.
	MaxConcurrentStreams int
	// KeepaliveMinTime is the shortest interval between a client's pings
	// that the server accepts; a client pinging more often is
	// disconnected.
	KeepaliveMinTime time.Duration
	// KeepaliveTime is how long a connection may be silent before the
	// server pings it, and KeepaliveTimeout how long it waits for the
	// answer before closing it: a vanished client's streams are freed.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// MaxConnectionIdle closes a connection that has had no RPC for this
	// long; 0 never does.
	MaxConnectionIdle time.Duration
	// MaxConnectionAge makes the server ask a client to reconnect (HTTP/2
	// GOAWAY) once its connection is this old, give or take grpc's 10%
	// jitter; 0 never does. A client that reconnects resolves its target
	// again and spreads over the servers added since (package grpcclient).
	MaxConnectionAge time.Duration
	// MaxConnectionAgeGrace is how long the RPCs open on such a connection
	// may go on before it is closed under them; 0 waits for them however
	// long they take.
	MaxConnectionAgeGrace time.Duration
	// CallTimeout bounds the server's work on each unary call, whatever
	// deadline its client set, if any; 0 leaves calls unbounded.
	// Streaming calls are long-lived by design and not bounded.
	CallTimeout time.Duration
}

// Defaults of RegisterFlags.
const (
	DefaultMaxStreamsPerConn    = 100
	DefaultMaxStreams           = 1000
	DefaultMaxConcurrentStreams = 1000
	DefaultKeepaliveMinTime     = 10 * time.Second
	DefaultKeepaliveTime        = time.Minute
	DefaultKeepaliveTimeout     = 20 * time.Second
	DefaultMaxConnectionIdle    = 15 * time.Minute
	// Five minutes: a scale-out reaches the clients within minutes, and
	// a reconnect every five costs nothing measurable; 30s lets unary
	// calls finish, and closes streams soon enough that they too move.
	DefaultMaxConnectionAge      = 5 * time.Minute
	DefaultMaxConnectionAgeGrace = 30 * time.Second
	// A minute: the slowest unary call by design, a router's append, is
	// bounded by -router.append-timeout (10s), and queries by
	// -queryd.call-timeout (5s) per aggregator.
	DefaultCallTimeout = time.Minute
)

// RegisterFlags registers the limits under -grpc. with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxStreamsPerConn, "grpc.max-streams-per-conn", DefaultMaxStreamsPerConn, "most streaming RPCs (IngestStream, WatchPopularAds, health Watch) open at once on one client connection; one more fails with RESOURCE_EXHAUSTED")
	fs.IntVar(&c.MaxStreams, "grpc.max-streams", DefaultMaxStreams, "most streaming RPCs open at once on this server over all connections; one more fails with RESOURCE_EXHAUSTED")
	fs.IntVar(&c.MaxConcurrentStreams, "grpc.max-concurrent-streams", DefaultMaxConcurrentStreams, "most RPCs in flight on one connection, unary ones included (HTTP/2 MAX_CONCURRENT_STREAMS); more wait in the client; above -grpc.max-streams-per-conn")
	fs.DurationVar(&c.KeepaliveMinTime, "grpc.keepalive-min-time", DefaultKeepaliveMinTime, "shortest interval between keepalive pings a client may send, with or without RPCs open; a client pinging more often is disconnected (GOAWAY too_many_pings)")
	fs.DurationVar(&c.KeepaliveTime, "grpc.keepalive-time", DefaultKeepaliveTime, "how long a connection may be silent before the server pings it, so that streams of clients that vanished are freed")
	fs.DurationVar(&c.KeepaliveTimeout, "grpc.keepalive-timeout", DefaultKeepaliveTimeout, "how long the server waits for the answer to its keepalive ping before it closes the connection")
	fs.DurationVar(&c.MaxConnectionIdle, "grpc.max-connection-idle", DefaultMaxConnectionIdle, "a connection with no RPC for this long is closed (clients reconnect when they need to); 0 keeps idle connections open")
	fs.DurationVar(&c.MaxConnectionAge, "grpc.max-connection-age", DefaultMaxConnectionAge, "a client connection this old (±10%) is asked to reconnect, so that clients, their long-lived streams included, re-resolve and spread over the servers added since (routers scaled out behind a headless Service); 0 keeps connections for ever")
	fs.DurationVar(&c.CallTimeout, "grpc.call-timeout", DefaultCallTimeout, "longest time the server works on one unary call, whatever deadline the client set, if any: past it the call's own calls (etcd, Redis, other members) are canceled and it fails with DEADLINE_EXCEEDED naming this flag; streaming calls are not bounded; 0 leaves calls unbounded")
	fs.DurationVar(&c.MaxConnectionAgeGrace, "grpc.max-connection-age-grace", DefaultMaxConnectionAgeGrace, "how long RPCs still open on a connection past -grpc.max-connection-age may go on before it is closed under them (a stream then ends with UNAVAILABLE, which clients retry on a new connection); 0 waits for them however long")
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.MaxStreamsPerConn < 1:
		return fmt.Errorf("-grpc.max-streams-per-conn %d: must be at least 1", c.MaxStreamsPerConn)
	case c.MaxStreams < c.MaxStreamsPerConn:
		return fmt.Errorf("-grpc.max-streams %d: must be at least -grpc.max-streams-per-conn=%d", c.MaxStreams, c.MaxStreamsPerConn)
	case c.MaxConcurrentStreams <= c.MaxStreamsPerConn || c.MaxConcurrentStreams > 1<<31-1:
		return fmt.Errorf("-grpc.max-concurrent-streams %d: must exceed -grpc.max-streams-per-conn=%d (and fit in 31 bits), or streams over that cap would wait instead of failing", c.MaxConcurrentStreams, c.MaxStreamsPerConn)
	case c.KeepaliveMinTime <= 0:
		return fmt.Errorf("-grpc.keepalive-min-time %v: must be positive", c.KeepaliveMinTime)
	case c.KeepaliveTime <= 0:
		return fmt.Errorf("-grpc.keepalive-time %v: must be positive", c.KeepaliveTime)
	case c.KeepaliveTimeout <= 0:
		return fmt.Errorf("-grpc.keepalive-timeout %v: must be positive", c.KeepaliveTimeout)
	case c.MaxConnectionIdle < 0:
		return fmt.Errorf("-grpc.max-connection-idle %v: must not be negative", c.MaxConnectionIdle)
	case c.MaxConnectionAge < 0:
		return fmt.Errorf("-grpc.max-connection-age %v: must not be negative; 0 turns it off", c.MaxConnectionAge)
	case c.CallTimeout < 0:
		return fmt.Errorf("-grpc.call-timeout %v: must not be negative; 0 leaves calls unbounded", c.CallTimeout)
	case c.MaxConnectionAgeGrace < 0:
		return fmt.Errorf("-grpc.max-connection-age-grace %v: must not be negative; 0 waits for open RPCs however long", c.MaxConnectionAgeGrace)
	}
	return nil
}
